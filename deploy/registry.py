"""Aliases, promotion decisions and rollback in the MLflow registry.

A new version becomes `challenger`; it takes `champion` only if every gate passes (or a person
forces it, with a reason that is recorded). The decision is recorded *before* any alias moves: a
few tags on the version that read at a glance (`promotion.decision`, `promotion.reason`, one
`gate.<gate>` verdict per gate) and every gate's figures as one JSON artifact of the version's run
(`promotion.gates` names it). `champion` moves last, in one call: if the tracking store fails
part-way, the champion is the old one or the new one, never a version without its record. The
version that loses `champion` is remembered on the new champion (`promotion.previous_champion`),
which is what `rollback` follows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from deploy.errors import RegistryError
from deploy.gates import Gate

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "promotion.previous_champion"
GATES = "promotion.gates"  # runs:/<run>/promotion/gates-v<version>-<time>.json, or the JSON itself


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(value):
    """JSON for a gate's figure that json cannot write itself (a numpy number, say)."""
    return value.item() if hasattr(value, "item") else str(value)


@dataclass
class PromotionDecision:
    promoted: bool
    version: str
    previous_champion: Optional[str]
    reason: str
    gates: list[Gate] = field(default_factory=list)
    forced: Optional[str] = None  # the reason given with --force
    decided_at: str = field(default_factory=_now)

    def gate(self, name: str) -> Optional[Gate]:
        return next((g for g in self.gates if g.name == name), None)

    def as_dict(self) -> dict:
        return {"promoted": self.promoted, "version": self.version, "previous_champion": self.previous_champion,
                "reason": self.reason, "forced": self.forced, "decided_at": self.decided_at,
                "gates": [g.as_dict() for g in self.gates]}

    def tags(self) -> dict[str, str]:
        """What the registry's version page shows: the decision, its reason, and one short verdict
        per gate (`pass`, or `FAIL: ` and the detail's first line). The figures go to JSON."""
        tags = {"promotion.decision": "promoted" if self.promoted else "rejected",
                "promotion.reason": self.reason[:4000],
                "promotion.decided_at": self.decided_at}
        if self.forced:
            tags["promotion.forced"] = self.forced[:4000]
        for g in self.gates:
            first = g.detail.strip().splitlines()[0] if g.detail.strip() else "failed"
            tags[f"gate.{g.name}"] = "pass" if g.passed else f"FAIL: {first}"[:250]
        return tags

    def figures_file(self) -> str:
        """The record's artifact path; one per decision, so a forced promotion keeps the rejection
        it overrode."""
        stamp = self.decided_at.replace("-", "").replace(":", "").replace("+0000", "Z")
        return f"promotion/gates-v{self.version}-{stamp}.json"

    def to_markdown(self) -> str:
        verdict = "**promoted to champion**" if self.promoted else "**rejected** (champion unchanged)"
        lines = [f"# Promotion of version {self.version}", "", f"{verdict}: {self.reason}", ""]
        if self.forced:
            lines += [f"Forced by hand: {self.forced}", ""]
        lines += ["| gate | passed | detail |", "|---|---|---|"]
        for g in self.gates:
            figures = ", ".join(f"{k}={v}" for k, v in g.figures.items())
            lines.append(f"| {g.name} | {'yes' if g.passed else 'NO'} | {g.detail.replace('|', '/')[:300]}"
                         f"<br>{figures} |")
        return "\n".join(lines)


_ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # no such model / version / alias


def alias_version(name: str, alias: str) -> Optional[str]:
    """The version behind an alias; None only if the store says it has none (a store that cannot
    be reached raises: "no champion" must never be concluded from a failed request)."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in _ABSENT:
            return None
        raise


def require_version(name: str, version: str):
    """The registered version, or a RegistryError that lists the versions there are."""
    client = MlflowClient()
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in _ABSENT:
            raise
        known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        listing = ", ".join(map(str, known)) if known else "none"
        raise RegistryError(f"registered model {name!r} has no version {version!r} (versions: {listing}); "
                            "`graphrec models` lists them") from None


def decide(version: str, gates: list[Gate], champion: Optional[str], force: Optional[str] = None) -> PromotionDecision:
    failed = [g.name for g in gates if not g.passed]
    if champion == version:
        return PromotionDecision(True, version, None, "already champion", gates, force)
    if not failed:
        reason = "all gates passed: " + "; ".join(g.detail.splitlines()[0] for g in gates)
        return PromotionDecision(True, version, champion, reason, gates)
    reason = "failed gates: " + "; ".join(f"{g.name} ({g.detail.splitlines()[0]})" for g in gates if not g.passed)
    if force:
        return PromotionDecision(True, version, champion, "forced despite " + reason, gates, force)
    return PromotionDecision(False, version, champion, reason, gates)


def apply(name: str, decision: PromotionDecision, crown: bool = True) -> PromotionDecision:
    """Record the decision on the version (the figures first, then its tags), then move the
    aliases (champion last). `crown=False` leaves `champion` where it is: a promoted version then
    takes it through `crown_version`, once its snapshot is in place (deploy/handover.py)."""
    client = MlflowClient()
    version, tags = decision.version, decision.tags()
    record = json.loads(json.dumps(decision.as_dict(), default=_plain))
    run_id = client.get_model_version(name, version).run_id
    if run_id:
        client.log_dict(run_id, record, decision.figures_file())
        tags[GATES] = f"runs:/{run_id}/{decision.figures_file()}"
    else:  # a version registered without a run: the record itself, as the tag's value
        tags[GATES] = json.dumps(record)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=f"{tags['promotion.decision']}: {decision.reason}"[:5000])
    if alias_version(name, CHAMPION) != version:
        client.set_registered_model_alias(name, CHALLENGER, version)
    if crown:
        crown_version(name, decision)
    return decision


def crown_version(name: str, decision: PromotionDecision) -> None:
    """`champion` to a promoted version, remembering the one it replaces (what rollback follows)."""
    if not decision.promoted:
        return
    client = MlflowClient()
    version = decision.version
    if decision.previous_champion and decision.previous_champion != version:
        client.set_model_version_tag(name, version, PREVIOUS, decision.previous_champion)
    client.set_registered_model_alias(name, CHAMPION, version)


def rollback_target(name: str) -> tuple[str, str]:
    """(the champion, the version it replaced), or a RegistryError saying why there is nothing to
    roll back to. Nothing is changed."""
    client = MlflowClient()
    current = alias_version(name, CHAMPION)
    if current is None:
        raise RegistryError(f"registered model {name!r} has no champion: nothing to roll back")
    previous = client.get_model_version(name, current).tags.get(PREVIOUS)
    if not previous:
        raise RegistryError(f"champion v{current} of {name!r} replaced no earlier champion: nothing to roll back to")
    require_version(name, previous)
    return current, previous


def rollback(name: str, current: str, previous: str, reason: str = "") -> None:
    """Move `champion` from `current` back to `previous` (rollback_target), recording why."""
    client = MlflowClient()
    client.set_model_version_tag(name, current, "promotion.rolled_back_at", _now())
    if reason:
        client.set_model_version_tag(name, current, "promotion.rollback_reason", reason[:4000])
    client.set_registered_model_alias(name, CHAMPION, previous)


def gate_record(tags: dict[str, str]) -> Optional[dict]:
    """The decision with every gate's figures, as `apply` recorded it for a version with these
    tags; None when there is none (never gated) or it cannot be read."""
    ref = tags.get(GATES)
    if not ref:
        return None
    try:
        if ref.startswith("runs:/"):
            return _quietly_load(ref)
        return json.loads(ref)
    except (MlflowException, OSError, ValueError):
        return None


def _quietly_load(uri: str) -> dict:
    """The JSON artifact at `uri`, without MLflow's download progress bar (one per version would
    fill a listing)."""
    import os

    import mlflow

    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(key)
    os.environ[key] = "false"
    try:
        return mlflow.artifacts.load_dict(uri)
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved
