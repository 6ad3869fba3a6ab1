"""Id columns without a Python object per row: codes into the distinct values.

A column of ids is worked on as (code per row, distinct values): a pandas categorical already is
that pair; any other column is factorised once. Lookups, hashes and string conversions then
touch each distinct id once, and the rows only as integer codes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def column_codes(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(code per row, -1 where null; the distinct values, in the order of first occurrence unless
    the column is a categorical, whose categories are kept as they are)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy(), col.cat.categories
    codes, uniques = pd.factorize(col, sort=False)
    return codes, pd.Index(uniques)


def as_categorical(col: pd.Series) -> pd.Series:
    """A column of text (object dtype) as a categorical of its distinct values, in the order of
    first occurrence; other columns (numbers, categoricals, unhashable values) as they are."""
    if col.dtype != object:
        return col
    try:
        codes, uniques = pd.factorize(col.to_numpy(), sort=False)
    except TypeError:  # lists, dicts: nothing to share
        return col
    dtype = pd.CategoricalDtype(pd.Index(uniques, dtype=object))
    return pd.Series(pd.Categorical.from_codes(codes, dtype=dtype, validate=False), index=col.index, name=col.name)


def text_codes(col: pd.Series) -> np.ndarray:
    """One int64 code per row, equal where the rows' text forms are (1 and "1" are one value), -1
    where null; each distinct value becomes text once."""
    codes, values = column_codes(col)
    if len(values) == 0:
        return codes.astype(np.int64)
    merged, _ = pd.factorize(pd.Series(np.asarray(values), dtype=object).astype(str).to_numpy(dtype=object))
    return np.where(codes >= 0, merged[np.maximum(codes, 0)], -1).astype(np.int64)


def distinct(col: pd.Series) -> pd.Index:
    """The distinct non-null values of a column (for a categorical, the categories in use)."""
    codes, values = column_codes(col)
    return values[np.bincount(codes[codes >= 0], minlength=len(values)) > 0]


def positions(col: pd.Series, ids: pd.Index) -> np.ndarray:
    """Row r -> position of str(col[r]) in `ids` (an index of unique strings), -1 where absent or null."""
    codes, values = column_codes(col)
    text = pd.Series(np.asarray(values), dtype=object).astype(str).to_numpy(dtype=object)
    found = ids.get_indexer(text) if len(values) else np.zeros(0, dtype=np.intp)
    return np.append(found, -1)[codes]  # code -1 (null) picks the appended -1


def text_hashes(col: pd.Series) -> np.ndarray:
    """pandas' uint64 hash of each row's text form (`col.astype(str)`), one string per distinct value
    (a null hashes as 'nan')."""
    from pandas.util import hash_array

    codes, values = column_codes(col)
    text = pd.Series(np.asarray(values), dtype=object).astype(str).to_numpy(dtype=object)
    return hash_array(np.append(text, "nan"), categorize=False)[codes]  # distinct already: no second factorize


def stripped(col: pd.Series) -> tuple[pd.Series, int, int]:
    """Text ids without the spaces and tabs around them (" u1" and "u1" are one member): (the
    column, rows changed, position of the first). Each distinct value is stripped once; numbers
    and columns without padded text come back as they are."""
    codes, values = column_codes(col)
    if len(values) == 0 or values.dtype != object:
        return col, 0, -1
    text = pd.Series(np.asarray(values), dtype=object)
    is_text = text.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    clean = text.copy()
    clean[is_text] = text[is_text].str.strip(" \t\r\n")
    changed = (clean != text).to_numpy(dtype=bool)
    if not changed.any():
        return col, 0, -1
    merged, uniques = pd.factorize(clean.to_numpy(dtype=object), sort=False)
    new_codes = np.where(codes >= 0, merged[np.maximum(codes, 0)], -1)
    touched = np.append(changed, False)[codes]  # code -1 (null) picks the appended False
    if isinstance(col.dtype, pd.CategoricalDtype):
        dtype = pd.CategoricalDtype(pd.Index(uniques, dtype=object))
        out = pd.Series(pd.Categorical.from_codes(new_codes.astype(np.int32), dtype=dtype, validate=False),
                        index=col.index, name=col.name)
    else:
        values = np.append(np.asarray(uniques, dtype=object), np.array([None], dtype=object))  # code -1: missing
        out = pd.Series(values[new_codes], index=col.index, name=col.name)
    return out, int(touched.sum()), int(np.flatnonzero(touched)[0])
