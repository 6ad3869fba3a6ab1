"""Great Expectations suite for a model's vectors before they may serve: one row per vector with
its L2 norm and whether every component is finite; expectations on the row count (the catalogue),
finiteness and the norm's range. A NaN or inf anywhere in a vector makes its norm non-finite, so
both the finiteness and the range expectation name it."""
from __future__ import annotations

import numpy as np
import pandas as pd

from validation.data import run_suite
from validation.report import ValidationReport


def vector_table(ids: np.ndarray, vectors: np.ndarray) -> pd.DataFrame:
    vectors = np.asarray(vectors, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        norm = np.sqrt((vectors ** 2).sum(axis=1)) if vectors.size else np.zeros(len(vectors))
    return pd.DataFrame({"id": np.asarray(ids).astype(str), "norm": norm,
                         "finite": np.isfinite(vectors).all(axis=1) if vectors.size else np.ones(len(vectors), bool)})


def validate_vectors(
    name: str,
    tables: dict[str, tuple[np.ndarray, np.ndarray, int]],
    min_norm: float,
    max_norm: float,
    n_examples: int = 5,
) -> ValidationReport:
    """`tables`: kind ("users", "items") -> (ids, vectors, expected count)."""
    import great_expectations.expectations as gxe

    checks = []
    for kind, (ids, vectors, expected) in tables.items():
        frame = vector_table(ids, vectors)
        # GX reads a NaN/inf norm as null / out of range; keep it visible as a string in examples
        exps = [
            gxe.ExpectTableRowCountToEqual(value=int(expected)),
            gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
            gxe.ExpectColumnValuesToNotBeNull(column="norm"),
            gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=min_norm, max_value=max_norm),
        ]
        found = run_suite(f"{kind}_vectors", frame.replace([np.inf, -np.inf], np.nan), exps, n_examples)
        bad = frame[~frame["finite"] | ~frame["norm"].between(min_norm, max_norm)]
        for check in found:  # name the vectors, not just the count
            if not check.success and check.expectation != "expect_table_row_count_to_equal":
                shown = zip(bad["id"][:n_examples], bad["norm"][:n_examples])
                check.examples = [f"{i} (norm {n:.3g})" for i, n in shown]
        checks += found
    return ValidationReport(name, checks)
