"""Timestamps of an interactions file as Unix seconds, whatever form the file gives them in."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.errors import DataLoadError

# Numbers below MILLISECONDS_FROM are Unix seconds; from it up to MAX_MILLISECONDS, Unix
# milliseconds (10^11 s is the year 5138, 10^11 ms is March 1973, 10^14 ms the year 5138 again).
MILLISECONDS_FROM = 10 ** 11
MAX_MILLISECONDS = 10 ** 14
TIMESTAMP_FORMS = ("Unix seconds, Unix milliseconds (numbers from 10^11 up are read as milliseconds) or "
                   "ISO-8601 text such as 2024-05-01T12:30:00Z (no zone: UTC)")


def normalise_timestamps(values: pd.Series, path: Path, column: str = "timestamp") -> pd.Series:
    """Timestamps as Unix seconds (int64, or float64 where a fraction of a second remains or a
    value is missing). Numbers below 10^11 are seconds, 10^11 to 10^14 milliseconds (one unit
    for the whole column); datetimes and ISO-8601 strings are converted (no zone: UTC). Anything
    else is refused naming the column, a bad value and the accepted forms."""
    label = f"column {column!r}" + (" (data.columns -> timestamp)" if column != "timestamp" else "")
    text_file = path.suffix in (".csv", ".tsv", ".txt")

    def refuse(row, why: str) -> DataLoadError:
        where = f"row {row}" + (f", line {row + 2}" if text_file and isinstance(row, (int, np.integer)) else "")
        return DataLoadError(f"the interactions file {path}, {label}: {values[row]!r} ({where}) {why}; "
                             f"timestamps must be {TIMESTAMP_FORMS}")

    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values.dt.tz_convert("UTC") if values.dt.tz is not None else values.dt.tz_localize("UTC")
        return _seconds(stamps)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype(np.float64)  # exact below 2^53, far beyond 10^14
        magnitude = numbers.abs()
        too_big = magnitude >= MAX_MILLISECONDS
        if too_big.any():
            raise refuse(values.index[too_big.to_numpy()][0], "is too large for seconds or milliseconds "
                                                              "(micro- or nanoseconds?)")
        millis = (magnitude >= MILLISECONDS_FROM).to_numpy()
        seconds = (magnitude < MILLISECONDS_FROM).to_numpy()
        if millis.any() and seconds.any():
            small, large = values.index[seconds][0], values.index[millis][0]
            raise refuse(large, f"reads as milliseconds but {values[small]!r} (row {small}) as seconds: "
                                "use one unit for the whole column")
        out = numbers / 1000 if millis.any() else numbers
        if out.notna().all() and (out % 1 == 0).all():
            return out.astype(np.int64)
        return out
    if pd.api.types.is_bool_dtype(values):
        raise refuse(values.index[0], "is not a timestamp")
    text = values.astype("string").str.strip()
    numbers = pd.to_numeric(text, errors="coerce").astype(np.float64)
    parsed = pd.to_datetime(text.where(numbers.isna()), errors="coerce", utc=True, format="ISO8601")
    present = text.notna().to_numpy()
    is_number, is_date = numbers.notna().to_numpy(), parsed.notna().to_numpy()
    bad = present & ~is_number & ~is_date
    if bad.any():
        raise refuse(values.index[bad][0], "is not a timestamp")
    if is_number.any() and is_date.any():
        number, date = values.index[is_number][0], values.index[is_date][0]
        raise refuse(date, f"is a date but {values[number]!r} (row {number}) a number: use one form for the column")
    if is_number.any():
        return normalise_timestamps(numbers, path, column)
    return _seconds(parsed)


def _seconds(stamps: pd.Series) -> pd.Series:
    """UTC datetimes -> Unix seconds (int64 when whole seconds and complete)."""
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    if seconds.notna().all() and (seconds % 1 == 0).all():
        return seconds.astype(np.int64)
    return seconds
