"""Generic tables (CSV, TSV, Parquet) as RecData: the interactions with optional id tables and
a social table, columns renamed with `data.columns`, text ids as categoricals and stripped of the
spaces around them, timestamps as Unix seconds. Each refusal is a DataLoadError naming the file."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from recsys.data.errors import DataLoadError
from recsys.data.ids import as_categorical, stripped
from recsys.data.timestamps import normalise_timestamps
from recsys.data.types import RecData

log = logging.getLogger("graphrec.data")


SEPARATORS = (",", ";", "\t", "|")


def _separator(path: Path) -> str:
    """.tsv: tab. Otherwise the one of `, ; tab |` that occurs most often in the header line
    (comma on a tie or when none occurs)."""
    if path.suffix == ".tsv":
        return "\t"
    with open(path, "rb") as fh:
        header = fh.readline(1 << 16).decode("utf-8", errors="replace")
    counts = [header.count(sep) for sep in SEPARATORS]
    return SEPARATORS[counts.index(max(counts))] if max(counts) else ","


def _first_non_utf8(path: Path) -> Optional[str]:
    """'line L: byte 0xNN at offset O' for the first byte of `path` that is not UTF-8, else None."""
    offset = 0
    with open(path, "rb") as fh:
        for line, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {line}: byte 0x{raw[exc.start]:02x} at offset {offset + exc.start}"
            offset += len(raw)
    return None


TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".txt")


def _read_table(path: Path, what: str, categorical: tuple = ()) -> pd.DataFrame:
    """A whole table; its text columns named in `categorical` as pandas categoricals (from Parquet,
    straight from the file's dictionary pages: no Python string per row)."""
    path = existing(path)
    if path.stat().st_size == 0:
        raise DataLoadError(f"the {what} file {path} is empty")
    if path.suffix not in TABLE_SUFFIXES:
        raise DataLoadError(f"the {what} file {path} must be .csv, .tsv, .txt or .parquet "
                            f"(got {path.suffix or 'no suffix'})")
    try:
        if path.suffix in (".parquet", ".pq"):
            return _read_parquet(path, categorical)
        frame = pd.read_csv(path, sep=_separator(path), encoding="utf-8")
        return frame.assign(**{c: as_categorical(frame[c]) for c in categorical if c in frame})
    except UnicodeDecodeError:
        where = _first_non_utf8(path) or "a byte"
        raise DataLoadError(f"the {what} file {path}, {where} is not UTF-8 text; save the file as UTF-8") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataLoadError(f"the {what} file {path} cannot be read: {first}") from None


def _read_parquet(path: Path, categorical: tuple) -> pd.DataFrame:
    """pandas' reading of a Parquet file, except that the text columns named in `categorical` come
    as categoricals, built from the file's per-row-group dictionaries: each row group's distinct
    values are matched to the file's once (pyarrow's own unify_dictionaries takes several times
    longer), and no Python string is made per row."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    text = [c for c in categorical if c in schema.names and str(schema.field(c).type) in ("string", "large_string")]
    table = pq.read_table(path, read_dictionary=text)
    frame = table.drop_columns(text).to_pandas()
    for name in text:
        frame[name] = _categorical(table.column(name))
    return frame[[c for c in table.column_names]]


def _categorical(column) -> pd.Categorical:
    """A pyarrow ChunkedArray of dictionary chunks as one pandas categorical. The chunks of a row
    group share its dictionary: each distinct dictionary is matched to the file's distinct values
    once, in Arrow (no Python string but one per distinct value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks = [c for c in column.chunks if len(c)]
    if not chunks:
        return pd.Categorical([], categories=pd.Index([], dtype=object))
    start, dictionaries, offsets = 0, [], {}
    for c in chunks:
        d = c.dictionary
        key = (d.buffers()[1].address, d.offset, len(d))  # the same offsets buffer: the same dictionary
        if key not in offsets:
            offsets[key] = start
            dictionaries.append(d)
            start += len(d)
    encoded = pc.dictionary_encode(pa.concat_arrays(dictionaries))
    to_global = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    codes = []
    for c in chunks:
        d = c.dictionary
        at = offsets[(d.buffers()[1].address, d.offset, len(d))]
        local = pc.fill_null(c.indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        codes.append(np.where(c.is_null().to_numpy(zero_copy_only=False), -1, to_global[at + local]))
    dtype = pd.CategoricalDtype(pd.Index(np.asarray(encoded.dictionary.to_pandas(), dtype=object), dtype=object))
    return pd.Categorical.from_codes(np.concatenate(codes).astype(np.int32), dtype=dtype, validate=False)


STANDARD_COLUMNS = ("user_id", "item_id", "timestamp", "event", "split", "src", "dst")


def _require_columns(frame: pd.DataFrame, required: list[str], path: Path, what: str, rename: dict) -> None:
    """Refuse a table without its id columns, naming the columns found and a `data.columns`
    mapping that would supply the missing ones."""
    missing = [c for c in required if c not in frame.columns]
    if not missing:
        return
    found = [str(c) for c in frame.columns]
    unused = [c for c in rename if c not in found and rename[c] in missing]
    candidates = [c for c in found if c not in STANDARD_COLUMNS and c not in rename]
    example = ", ".join(f"{f}: {m}" for f, m in zip(candidates, missing)) or "member: user_id, job: item_id"
    hint = (f" (data.columns maps {', '.join(repr(c) for c in unused)}, which the file does not have)"
            if unused else "")
    raise DataLoadError(
        f"the {what} file {path} has no {' / '.join(missing)} column; columns found: {', '.join(found)}{hint}. "
        f"Map your names with data.columns, e.g. --set 'data.columns={{{example}}}'")


def load_files(
    interactions: str | Path,
    users: Optional[str | Path] = None,
    items: Optional[str | Path] = None,
    social: Optional[str | Path] = None,
    columns: Optional[dict[str, str]] = None,
    name: str = "files",
) -> RecData:
    """Generic CSV/Parquet: `columns` renames your names to user_id / item_id / timestamp / event.
    A CSV's separator (`, ; tab |`) is recognised from its header line; timestamps become Unix
    seconds (`normalise_timestamps`). A table without its id columns is refused, naming the
    columns it has. Text ids (and events) of the interactions and of the social table are read
    as pandas categoricals (integer codes per row); numeric ids stay numbers.

    Without id tables, the ids seen in the interactions are the catalogue.
    """
    rename = columns or {}
    path = Path(interactions)
    inter = _read_table(path, "interactions", _sources(INTERACTION_IDS, rename)).rename(columns=rename)
    _require_columns(inter, ["user_id", "item_id"], path, "interactions", rename)
    if "timestamp" in inter:
        source = next((k for k, v in rename.items() if v == "timestamp"), "timestamp")
        inter["timestamp"] = normalise_timestamps(inter["timestamp"], path, source)
    users_df = items_df = social_df = None
    if users:
        users_df = _read_table(Path(users), "users").rename(columns=rename)
        _require_columns(users_df, ["user_id"], Path(users), "users", rename)
    if items:
        items_df = _read_table(Path(items), "items").rename(columns=rename)
        _require_columns(items_df, ["item_id"], Path(items), "items", rename)
    if social:
        social_df = _read_table(Path(social), "social", ("src", "dst"))
        _require_columns(social_df, ["src", "dst"], Path(social), "social", {})
    for frame, file, what, id_columns in ((inter, path, "interactions", ("user_id", "item_id")),
                                          (users_df, users, "users", ("user_id",)),
                                          (items_df, items, "items", ("item_id",)), (social_df, social, "social",
                                                                                     ("src", "dst"))):
        if frame is not None and file is not None:
            _strip_ids(frame, Path(file), what, id_columns)
    if users_df is None:
        users_df = pd.DataFrame({"user_id": np.asarray(pd.unique(inter["user_id"].dropna()))})
    if items_df is None:
        items_df = pd.DataFrame({"item_id": np.asarray(pd.unique(inter["item_id"].dropna()))})
    return RecData(name, users_df, items_df, inter, social_df)


def _strip_ids(frame: pd.DataFrame, path: Path, what: str, id_columns: tuple) -> None:
    """Text ids with spaces or tabs around them, stripped in place (" u1" would otherwise be a
    second member beside "u1"), with a warning naming the first such row."""
    for column in id_columns:
        if column not in frame:
            continue
        frame[column], changed, first = stripped(frame[column])
        if changed:
            where = f"row {first}" + (f", line {first + 2}" if path.suffix in (".csv", ".tsv", ".txt") else "")
            log.warning("the %s file %s: %d %s value(s) had spaces or tabs around the id (first: %s); they were "
                        "stripped, so such ids are the same as without them", what, path, changed, column, where)


# Columns of the interactions read as categoricals when they hold text: one code per row into the
# distinct values (a million members' ten million rows hold a million distinct user ids).
INTERACTION_IDS = ("user_id", "item_id", "event")


def _sources(names: tuple, rename: dict) -> tuple:
    """The file's own names of the standard columns `names` (data.columns maps file -> standard)."""
    source = {v: k for k, v in rename.items()}
    return tuple(source.get(n, n) for n in names)


def save_files(data: RecData, folder: str | Path) -> dict[str, Path]:
    """Write a RecData as Parquet files that `load_files` reads back."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in (("interactions", data.interactions), ("users", data.users), ("items", data.items),
                        ("social", data.social)):
        if frame is not None:
            paths[name] = folder / f"{name}.parquet"
            frame.to_parquet(paths[name], index=False)
    return paths


def existing(path: Path) -> Path:
    if path.is_dir():
        raise DataLoadError(f"{path} is a folder; give the data file itself (e.g. {path}/interactions.csv)")
    if not path.exists():
        raise DataLoadError(f"{path} does not exist")
    if not path.is_file():
        raise DataLoadError(f"{path} is not a regular file (a pipe, such as /dev/stdin, or a device): a retrain reads "
                            "its data more than once and records its fingerprint, so save it to a .csv or .parquet "
                            "file and give that path")
    return path
