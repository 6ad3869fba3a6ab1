"""Great Expectations suites for the raw tables of a RecData, run on in-memory DataFrames.

Interactions: required columns and types, no null ids, ids present in the id tables, no
duplicate (user, item, timestamp), timestamps in range, and a minimum number of distinct items per
user (checked on a derived per-user activity table). Id tables: the id column exists, is complete
and unique; every feature column is mostly present (at most `max_feature_null_fraction` nulls).
Social edges: both ends are known users.
Held-out rows of a source that brings its own split (e.g. LightGCN's test.txt): ids that never
occur in its training rows are reported (`validation.test_only_ids`: a warning by default, since
published splits such as LastFM's have a few; "fail" refuses the data).
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Optional

import numpy as np
import pandas as pd

from recsys.config import ValidationConfig
from recsys.data.ids import as_categorical, column_codes, distinct
from recsys.data.types import RecData
from validation.report import CheckResult, DataValidationError, ValidationReport

ID_TYPES = ["int64", "int32", "Int64", "Int32", "object", "str", "string", "StringDtype"]
TIME_TYPES = ["int64", "int32", "Int64", "float64", "datetime64[ns]", "datetime64[us]", "datetime64[s]"]


@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def run_suite(table: str, frame: pd.DataFrame, expectations: list, n_examples: int,
              result_format: str = "SUMMARY") -> list[CheckResult]:
    """Validate an in-memory frame against `expectations` (one suite named after `table`)."""
    return [_check(table, r, n_examples) for r in _gx_results(table, frame, expectations, n_examples, result_format)]


def _gx_results(table: str, frame: pd.DataFrame, expectations: list, n_examples: int, result_format: str) -> list:
    import great_expectations as gx
    from great_expectations.validator.v1_validator import Validator

    ctx = _context()
    source_name = f"graphrec-{table}"
    try:
        source = ctx.data_sources.get(source_name)
    except (KeyError, ValueError):
        source = ctx.data_sources.add_pandas(source_name)
    try:
        asset = source.get_asset(table)
    except (LookupError, ValueError):
        asset = source.add_dataframe_asset(table)
    try:
        definition = asset.get_batch_definition("whole")
    except (KeyError, ValueError):
        definition = asset.add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(name=f"graphrec-{table}")
    for exp in expectations:
        suite.add_expectation(exp)
    # GX's own validator on the batch definition: the frame is loaded (and hashed, a pass over
    # every value) once, where Batch.validate loads it a second time.
    validator = Validator(batch_definition=definition, batch_parameters={"dataframe": frame},
                          result_format={"result_format": result_format, "partial_unexpected_count": n_examples})
    return list(validator.validate_expectation_suite(suite).results)


def _check(table: str, r, n_examples: int) -> CheckResult:
    kwargs = r.expectation_config.kwargs
    column = kwargs.get("column") or ",".join(kwargs.get("column_list", []) or []) or None
    res = r.result or {}
    detail = _expected(r.expectation_config.type, kwargs)
    info = r.exception_info or {}
    if isinstance(info, dict) and info.get("raised_exception"):
        detail += f"; could not run: {str(info.get('exception_message'))[:200]}"
    return CheckResult(
        table=table,
        expectation=r.expectation_config.type,
        column=column,
        success=bool(r.success),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        examples=[_plain(v) for v in (res.get("partial_unexpected_list") or [])][:n_examples],
        observed=_plain(res.get("observed_value")),
        detail=detail,
    )


def _expected(kind: str, kwargs: dict) -> str:
    if kind == "expect_column_values_to_be_in_type_list":
        return "expected type in " + "/".join(kwargs["type_list"][:4])
    if kind == "expect_column_values_to_be_between":
        return f"expected between {kwargs.get('min_value')} and {kwargs.get('max_value')}"
    if kind == "expect_column_values_to_be_in_set":
        return f"expected one of {list(kwargs.get('value_set', []))[:5]}"
    if kind == "expect_table_row_count_to_be_between":
        return f"expected at least {kwargs.get('min_value')} rows"
    if kind == "expect_table_row_count_to_equal":
        return f"expected exactly {kwargs.get('value')} rows"
    if kind == "expect_column_to_exist":
        return "column is required"
    return ""


def _plain(value):
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return str(value)
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def compact(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every object column as a categorical of its distinct values (the order of first
    occurrence): the frame GX validates, so that its checks run on integer codes."""
    if not frame.columns.is_unique or not any(frame[c].dtype == object for c in frame.columns):
        return frame
    return pd.DataFrame({c: as_categorical(frame[c]) for c in frame.columns}, index=frame.index)


def _not_in(values: pd.Series, known: pd.Series) -> pd.Series:
    """`values` where absent from `known`, null where present (or null): one lookup per distinct
    value; a categorical whose categories are the absent values only."""
    codes, values_seen = column_codes(values)
    absent = np.flatnonzero(~values_seen.isin(distinct(known)))
    recode = np.full(len(values_seen) + 1, -1, dtype=np.int64)  # the last slot: code -1 (null) stays null
    recode[absent] = np.arange(len(absent))
    dtype = pd.CategoricalDtype(values_seen[absent])
    return pd.Series(pd.Categorical.from_codes(recode[codes], dtype=dtype, validate=False), index=values.index)


def _id_table_checks(frame: pd.DataFrame, id_col: str, max_null_fraction: float) -> list:
    """The id column is complete and unique; each feature column is mostly present."""
    import great_expectations.expectations as gxe

    exps = [gxe.ExpectTableRowCountToBeBetween(min_value=1), gxe.ExpectColumnToExist(column=id_col)]
    if id_col in frame:
        exps += [
            gxe.ExpectColumnValuesToNotBeNull(column=id_col),
            gxe.ExpectColumnValuesToBeUnique(column=id_col),
            gxe.ExpectColumnValuesToBeInTypeList(column=id_col, type_list=ID_TYPES),
        ]
    exps += [gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=1 - max_null_fraction)
             for c in frame.columns if c != id_col]
    return exps


def _suite(table: str, frame: pd.DataFrame, exps: list, n_examples: int) -> list[CheckResult]:
    """run_suite on a compacted frame, except that the type of a categorical column is checked on
    its distinct values (each once) and reported with the number of rows holding a bad one."""
    import great_expectations.expectations as gxe

    by_values: list = []
    rest: list = []
    for exp in exps:
        on_values = (isinstance(exp, gxe.ExpectColumnValuesToBeInTypeList) and exp.column in frame
                     and isinstance(frame[exp.column].dtype, pd.CategoricalDtype))
        (by_values if on_values else rest).append(exp)
    checks = run_suite(table, frame, rest, n_examples)
    for exp in by_values:
        codes, values = column_codes(frame[exp.column])
        distinct = pd.DataFrame({exp.column: pd.Series(values, dtype=values.dtype)})
        [result] = _gx_results(f"{table}-distinct", distinct, [exp], n_examples, "COMPLETE")
        check = _check(table, result, n_examples)
        bad = (result.result or {}).get("unexpected_list")
        if bad:
            rows = int(np.isin(codes, values.get_indexer(pd.Index(bad, dtype=values.dtype))).sum())
            check.unexpected_count = rows
            check.unexpected_percent = 100 * rows / max(int((codes >= 0).sum()), 1)
            check.detail += f" ({len(bad)} distinct values)"
        checks.append(check)
    return checks


def validate_data(data: RecData, cfg: Optional[ValidationConfig] = None,
                  require_timestamp: bool = False) -> ValidationReport:
    """Run every suite; return the report (raise_if_failed turns it into DataValidationError)."""
    import great_expectations.expectations as gxe

    cfg = cfg or ValidationConfig()
    n = cfg.report_examples
    checks: list[CheckResult] = []
    for table, ids, id_col in (("users", data.users, "user_id"), ("items", data.items, "item_id")):
        checks += _suite(table, compact(ids), _id_table_checks(ids, id_col, cfg.max_feature_null_fraction), n)

    inter = compact(data.interactions)
    required = ["user_id", "item_id"] + (["timestamp"] if require_timestamp else [])
    exps: list = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    exps += [gxe.ExpectColumnToExist(column=c) for c in required]
    unknown = {}
    for col, ids in (("user_id", data.users), ("item_id", data.items)):
        if col not in inter:
            continue
        exps += [gxe.ExpectColumnValuesToNotBeNull(column=col),
                 gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=ID_TYPES)]
        if col in ids:
            unknown[col] = ids[col]
    if "timestamp" in inter:
        exps += [gxe.ExpectColumnValuesToNotBeNull(column="timestamp"),
                 gxe.ExpectColumnValuesToBeInTypeList(column="timestamp", type_list=TIME_TYPES)]
        bounded = cfg.timestamp_min is not None or cfg.timestamp_max is not None
        if pd.api.types.is_numeric_dtype(inter["timestamp"]) and bounded:
            exps.append(gxe.ExpectColumnValuesToBeBetween(
                column="timestamp", min_value=cfg.timestamp_min, max_value=cfg.timestamp_max))
    key = []
    if "user_id" in inter and "item_id" in inter:
        key = ["user_id", "item_id"] + [c for c in ("timestamp", "event", "split") if c in inter]
    checks += _known_ids_suite("interactions", inter, unknown, exps, n, unique_key=key,
                               originals=data.interactions)

    if "user_id" in inter and "item_id" in inter and len(inter):
        checks += _activity_checks(inter, cfg, n)

    if "split" in inter and "user_id" in inter and "item_id" in inter:
        checks += _test_only_ids(inter, cfg, n)

    if data.social is not None:
        social = compact(data.social)
        exps = [gxe.ExpectColumnToExist(column=c) for c in ("src", "dst")]
        known = data.users["user_id"] if "user_id" in data.users else pd.Series([], dtype=object)
        cols = [c for c in ("src", "dst") if c in social]
        exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in cols]
        checks += _known_ids_suite("social", social, {c: known for c in cols}, exps, n)
    return ValidationReport(data.name, checks)


def _activity_checks(inter: pd.DataFrame, cfg: ValidationConfig, n: int) -> list[CheckResult]:
    """Each user has at least validation.min_interactions_per_user distinct items; a failure names
    the users, not just their counts."""
    import great_expectations.expectations as gxe

    activity = _distinct_items_per_user(inter)
    checks = run_suite("user_activity", activity[["distinct_items"]], [
        gxe.ExpectColumnValuesToBeBetween(column="distinct_items", min_value=cfg.min_interactions_per_user)], n)
    low = activity[activity["distinct_items"] < cfg.min_interactions_per_user]
    try:
        low = low.sort_values("user_id", kind="stable")
    except TypeError:  # ids of mixed types: keep the table's order
        pass
    low = low.head(n)
    for check in checks:
        if not check.success:
            check.examples = [f"{_plain(u)} ({k} items)" for u, k in zip(low["user_id"], low["distinct_items"])]
    return checks


def _distinct_items_per_user(inter: pd.DataFrame) -> pd.DataFrame:
    """user_id, distinct_items: the number of distinct items of each user with a complete row
    (users in the order of their ids where they sort), counted on integer codes."""
    users, user_ids = column_codes(inter["user_id"])
    items, item_ids = column_codes(inter["item_id"])
    ok = (users >= 0) & (items >= 0)
    n_items = max(len(item_ids), 1)
    pairs = pd.unique(users[ok].astype(np.int64) * n_items + items[ok])
    counts = np.bincount(pairs // n_items, minlength=len(user_ids))
    present = np.flatnonzero(counts)
    return pd.DataFrame({"user_id": user_ids[present], "distinct_items": counts[present]})


UNKNOWN = "__not_in_id_table"
DUPLICATE = "__duplicate_row"


def _known_ids_suite(table: str, frame: pd.DataFrame, known: dict[str, pd.Series], exps: list,
                     n_examples: int, unique_key: Optional[list] = None,
                     originals: Optional[pd.DataFrame] = None) -> list[CheckResult]:
    """`exps` plus "every id of column c is in known[c]", for tables of any size: a derived column
    holds the ids that are not found (null where found) and must be all null, so GX never carries
    a value set of a million ids, and the examples it reports are the unknown ids themselves.
    With `unique_key`, also "no two rows share these columns' values", the same way: a derived
    column holds the row number of every row whose key occurs more than once (GX's compound check
    walks the rows in Python); the examples are the first such rows of `originals`."""
    import great_expectations.expectations as gxe

    derived = {f"{c}{UNKNOWN}": _not_in(frame[c], ids) for c, ids in known.items()}
    duplicated = None
    if unique_key:
        duplicated = _duplicated_rows(frame, unique_key)
        derived[DUPLICATE] = pd.Series(np.where(duplicated, np.arange(len(frame), dtype=np.float64), np.nan),
                                       index=frame.index)
    exps = exps + [gxe.ExpectColumnValuesToBeNull(column=c) for c in derived]
    checks = _suite(table, frame.assign(**derived) if derived else frame, exps, n_examples)
    for check in checks:
        if check.column and check.column.endswith(UNKNOWN):
            check.column = check.column[: -len(UNKNOWN)]
            check.expectation = "expect_column_values_to_be_in_id_table"
            check.detail = "expected an id present in the id table"
        elif check.column == DUPLICATE and unique_key and duplicated is not None:
            check.column = ",".join(unique_key)
            check.expectation = "expect_compound_columns_to_be_unique"
            check.detail = f"expected each ({', '.join(unique_key)}) at most once"
            rows = (frame if originals is None else originals)[unique_key].iloc[np.flatnonzero(duplicated)[:n_examples]]
            check.examples = [{k: _plain(v) for k, v in row.items()} for row in rows.to_dict("records")]
    return checks


def _duplicated_rows(frame: pd.DataFrame, key: list) -> np.ndarray:
    """Rows whose `key` values occur in another row too (as DataFrame.duplicated(keep=False)): a
    64-bit hash of each row's key (numbers by value, categoricals by code) finds the candidates in
    one pass, and pandas' exact comparison runs on those candidates only."""
    combined = np.zeros(len(frame), dtype=np.uint64)
    for col in key:
        values = frame[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            part = values.cat.codes.to_numpy().astype(np.int64)
        elif isinstance(values.dtype, np.dtype) and values.dtype.kind in "iufb":
            part = values.to_numpy()
        else:
            part = column_codes(values)[0].astype(np.int64)
        combined = combined * np.uint64(1_000_003) ^ pd.util.hash_array(part)
    candidates = pd.Series(combined).duplicated(keep=False).to_numpy()
    if candidates.any():
        candidates[candidates] = frame.loc[candidates, key].duplicated(keep=False).to_numpy()
    return candidates


def _test_only_ids(inter: pd.DataFrame, cfg: ValidationConfig, n_examples: int) -> list[CheckResult]:
    """Ids of held-out rows (split other than train) that no training row names: a transductive
    model has nothing to learn them from, and they would silently become users or items."""
    held = (inter["split"] != "train").to_numpy()
    if not held.any():
        return []
    train = inter.loc[~held, ["user_id", "item_id"]]
    frame = inter.loc[held, ["user_id", "item_id"]].reset_index(drop=True)
    checks = _known_ids_suite("held_out", frame, {"user_id": train["user_id"], "item_id": train["item_id"]}, [],
                              n_examples)
    for check in checks:
        check.table = "interactions"
        check.expectation = "expect_held_out_ids_to_occur_in_training_rows"
        check.severity = "warning" if cfg.test_only_ids == "warn" else "error"
        if check.success:
            check.detail = "every id of a held-out row also occurs in a training row"
            continue
        col = check.column
        ids = list(distinct(_not_in(frame[col], train[col])))
        try:
            ids = sorted(ids)
        except TypeError:  # mixed types: order by text
            ids = sorted(ids, key=str)
        check.examples = [_plain(v) for v in ids[:n_examples]]
        kind = "users" if col == "user_id" else "items"
        check.detail = (f"{len(ids)} {kind} occur only in held-out (test/valid) rows, never in training: they are "
                        f"kept as {kind} without training data"
                        + ("" if cfg.test_only_ids == "warn" else "; validation.test_only_ids=fail refuses them"))
    return checks


def raise_if_failed(report: ValidationReport) -> ValidationReport:
    if not report.success:
        raise DataValidationError(report)
    return report
