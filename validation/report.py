"""A validation result people can read: which expectation failed, on how many rows, examples."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol


@dataclass
class CheckResult:
    table: str
    expectation: str
    column: Optional[str]
    success: bool
    unexpected_count: Optional[int] = None
    unexpected_percent: Optional[float] = None
    examples: list[Any] = field(default_factory=list)
    observed: Any = None
    detail: str = ""
    severity: str = "error"  # "warning": reported, but the data passes

    @property
    def failed(self) -> bool:
        return not self.success and self.severity == "error"

    @property
    def warned(self) -> bool:
        return not self.success and self.severity == "warning"

    def line(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        parts = [f"{where}: {self.expectation}"]
        if self.detail:
            parts.append(self.detail)
        if self.unexpected_count:
            pct = f" ({self.unexpected_percent:.2f}%)" if self.unexpected_percent is not None else ""
            parts.append(f"{self.unexpected_count} rows{pct}")
        if self.examples:
            parts.append("e.g. " + ", ".join(repr(e) for e in self.examples))
        if self.observed is not None and not self.unexpected_count:
            parts.append(f"observed {self.observed!r}")
        return " - ".join(parts)


@dataclass
class ValidationReport:
    dataset: str
    checks: list[CheckResult]

    @property
    def success(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.warned]

    def summary(self) -> str:
        if self.success:
            lines = [f"data '{self.dataset}' passed all {len(self.checks)} checks"
                     + (f", with {len(self.warnings)} warning(s):" if self.warnings else "")]
        else:
            lines = [f"data '{self.dataset}' failed {len(self.failures)} of {len(self.checks)} checks:"]
            lines += [f"  - {c.line()}" for c in self.failures]
            if self.warnings:
                lines.append("and warns:")
        lines += [f"  - warning: {c.line()}" for c in self.warnings]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        status = "passed" if self.success else f"**failed {len(self.failures)} of {len(self.checks)} checks**"
        out = [f"# Data validation: {self.dataset}", "", f"Result: {status}", "",
               "| table | column | expectation | ok | bad rows | % | examples |",
               "|---|---|---|---|---:|---:|---|"]
        for c in sorted(self.checks, key=lambda c: (not c.failed, not c.warned)):
            examples = ", ".join(repr(e) for e in c.examples)[:120] or (c.detail or "")
            pct = "" if c.unexpected_percent is None else f"{c.unexpected_percent:.2f}"
            count = "" if c.unexpected_count is None else str(c.unexpected_count)
            ok = "yes" if c.success else ("warn" if c.warned else "NO")
            out.append(f"| {c.table} | {c.column or ''} | {c.expectation} | {ok} "
                       f"| {count} | {pct} | {examples.replace('|', '/')} |")
        if not self.success:
            out += ["", "Nothing was trained or registered on this data. Fix the rows above and run again."]
        return "\n".join(out)


class Summarised(Protocol):
    def summary(self) -> str: ...


class DataValidationError(ValueError):
    """Raised when data fails its suite; carries the report (a ValidationReport, or the drift
    check's DriftReport)."""

    def __init__(self, report: Summarised):
        self.report = report
        super().__init__(report.summary())
