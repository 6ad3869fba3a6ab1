"""Loaders: all return `RecData`. Files are read as they are; checking them is validation's job,
so a loader only refuses what it cannot parse at all: a missing or empty file, a byte that is not
UTF-8, a token that is not an id, a table without its id columns, timestamps in no accepted form.
Each refusal is a DataLoadError naming the file (and line, for text files) and the fix."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from recsys.config import DataConfig
from recsys.data.ids import as_categorical
from recsys.data.split import assign_split, carve_validation, hold_out_cold
from recsys.data.types import RecData


class DataLoadError(ValueError):
    """A data source that cannot be read at all (missing, empty, unparsable, unknown format). The
    message names the file (and the line, for text formats) and what to do."""


LIGHTGCN_FORMAT = "the LightGCN format is one line per user: `user item item ...`, integer ids separated by spaces"


def _where(path: Path, line: int) -> str:
    return f"{path}, line {line}"


def _token_problem(path: Path, line: int, offset: int, raw: bytes, tokens: list[bytes], kinds: str) -> Optional[str]:
    """What is wrong with the first bad token of a line of a whitespace-separated table: a byte
    that is not UTF-8, or text that is not a number. `kinds` has one letter per token
    ('i' integer id, 'f' number; the last letter repeats); None when every token parses."""
    start = 0
    for n, token in enumerate(tokens):
        at = raw.index(token, start)
        start = at + len(token)
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (f"{_where(path, line)}: byte 0x{token[exc.start]:02x} at offset {offset + at + exc.start} "
                    f"is not UTF-8 text")
        kind = kinds[min(n, len(kinds) - 1)]
        try:
            value = int(text) if kind == "i" else float(text)
        except ValueError:
            what = "an integer id" if kind == "i" else "a number"
            return f"{_where(path, line)}: {text!r} (field {n + 1}) is not {what}"
        if kind == "i" and not -2 ** 63 <= value < 2 ** 63:
            return f"{_where(path, line)}: {text!r} (field {n + 1}) is too large for a 64-bit id"
    return None


def _read_lightgcn_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, item ids) of one LightGCN-format file, one pair per interaction, the file's own
    ids (any 64-bit integers: they are mapped to rows later, never used as sizes)."""
    users, items = [], []
    offset = 0
    with open(path, "rb") as fh:
        for line, raw in enumerate(fh, 1):
            tokens = raw.split()
            if tokens:
                try:
                    ids = np.array(tokens, dtype=np.int64)
                except (ValueError, OverflowError):
                    problem = _token_problem(path, line, offset, raw, tokens, "i")
                    raise DataLoadError(f"{problem or _where(path, line) + ' cannot be read'}; {LIGHTGCN_FORMAT}. "
                                        "Fix or remove that line") from None
                if len(ids) > 1:
                    users.append(np.full(len(ids) - 1, ids[0], dtype=np.int64))
                    items.append(ids[1:])
            offset += len(raw)
    if not users:
        raise DataLoadError(f"{path} holds no interactions; {LIGHTGCN_FORMAT}")
    return np.concatenate(users), np.concatenate(items)


def load_gowalla(folder: str | Path) -> RecData:
    """LightGCN text format: each line `user item item ...`; train.txt and test.txt give the split.

    The id tables hold every id the two files name, in increasing order (for Gowalla, whose ids
    are 0..n-1, row r is id r). An id that occurs only in test.txt has no training interaction:
    validation reports such ids (`validation.test_only_ids`)."""
    folder = Path(folder)
    frames = []
    for name, split in (("train.txt", "train"), ("test.txt", "test")):
        users, items = _read_lightgcn_file(_existing(folder / name))
        frames.append(pd.DataFrame({"user_id": users, "item_id": items, "split": split}))
    inter = pd.concat(frames, ignore_index=True)
    return RecData(
        "gowalla",
        pd.DataFrame({"user_id": np.unique(inter["user_id"].to_numpy())}),
        pd.DataFrame({"item_id": np.unique(inter["item_id"].to_numpy())}),
        inter,
    )


def _read_int_table(path: Path, names: list[str], kinds: str, what: str) -> pd.DataFrame:
    """A tab-separated table without header whose first columns are integer ids (`kinds`: one
    letter per column, 'i' integer, 'f' number). A line that does not parse is named, with its
    number and the bad field."""
    dtypes = {n: "int64" for n, k in zip(names, kinds) if k == "i"}
    try:
        return pd.read_csv(path, sep="\t", header=None, names=names, dtype=dtypes, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataLoadError(f"{path} is empty; {what}") from None
    except (ValueError, OverflowError, pd.errors.ParserError) as exc:
        problem = None
        offset = 0
        with open(path, "rb") as fh:
            for line, raw in enumerate(fh, 1):
                tokens = raw.split()
                if tokens and not kinds.count("i") <= len(tokens) <= len(names):
                    problem = f"{_where(path, line)}: {len(tokens)} field(s), expected {len(names)}"
                elif tokens:
                    problem = _token_problem(path, line, offset, raw, tokens, kinds)
                if problem:
                    break
                offset += len(raw)
        problem = problem or f"{path} cannot be read ({str(exc).splitlines()[0]})"
        raise DataLoadError(f"{problem}; {what}. Fix or remove that line") from None


LASTFM_FORMAT = "each line is `user<TAB>artist<TAB>weight` with integer ids"


def load_lastfm(folder: str | Path) -> RecData:
    """LightGCN-PyTorch's LastFM: data1.txt / test1.txt (user, artist, weight; 1-based) as the
    train/test split, and trustnetwork.txt as real user-user friendships. The id tables hold every
    id the files name, in increasing order (ids are mapped to rows, never used as sizes)."""
    folder = Path(folder)
    frames = []
    for name, split in (("data1.txt", "train"), ("test1.txt", "test")):
        part = _read_int_table(_existing(folder / name), ["user_id", "item_id", "weight"], "iif", LASTFM_FORMAT)
        if split == "train" and not len(part):
            raise DataLoadError(f"{folder / name} holds no interactions; {LASTFM_FORMAT}")
        frames.append(part.assign(split=split))
    inter = pd.concat(frames, ignore_index=True)
    trust = _read_int_table(_existing(folder / "trustnetwork.txt"), ["src", "dst"], "ii",
                            "each line is `user<TAB>friend` with integer ids")
    pairs = np.unique(np.sort(trust[["src", "dst"]].to_numpy(), axis=1), axis=0)  # one row per friendship
    return RecData(
        "lastfm",
        pd.DataFrame({"user_id": np.unique(np.concatenate([inter["user_id"].to_numpy(), pairs.reshape(-1)]))}),
        pd.DataFrame({"item_id": np.unique(inter["item_id"].to_numpy())}),
        inter,
        pd.DataFrame({"src": pairs[:, 0], "dst": pairs[:, 1]}),
    )


ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                 "Thriller", "War", "Western"]


def load_ml100k(folder: str | Path) -> RecData:
    """MovieLens 100K: every rating is an interaction; user and movie attributes as features."""
    folder = Path(folder)
    inter = _read_int_table(_existing(folder / "u.data"), ["user_id", "item_id", "rating", "timestamp"], "iiii",
                            "each line is `user<TAB>item<TAB>rating<TAB>timestamp` with integers")
    users = pd.read_csv(_existing(folder / "u.user"), sep="|", names=["user_id", "age", "gender", "occupation", "zip"])
    items = pd.read_csv(
        _existing(folder / "u.item"), sep="|", encoding="latin-1", header=None,
        names=["item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES],
    )
    flags = items[ML100K_GENRES].to_numpy().astype(bool)
    items["genres"] = ["|".join(g for g, on in zip(ML100K_GENRES, row) if on) for row in flags]
    items = items[["item_id", "title", "release_date", "genres"]]
    return RecData("ml-100k", users, items, inter)


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
    path = _existing(path)
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
    if users_df is None:
        users_df = pd.DataFrame({"user_id": np.asarray(pd.unique(inter["user_id"].dropna()))})
    if items_df is None:
        items_df = pd.DataFrame({"item_id": np.asarray(pd.unique(inter["item_id"].dropna()))})
    return RecData(name, users_df, items_df, inter, social_df)


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


def load_data(cfg: DataConfig) -> RecData:
    """The configured source, read as is (validation comes next, then `with_split`)."""
    if cfg.source == "synthetic":
        from recsys.data.synthetic import generate

        return generate(**cfg.synthetic.model_dump())
    folder_loaders = {"gowalla": load_gowalla, "ml-100k": load_ml100k, "lastfm": load_lastfm}
    if cfg.source in folder_loaders:
        if cfg.path is None:
            raise DataLoadError(f"data.source={cfg.source} needs data.path, the folder holding its files")
        return folder_loaders[cfg.source](cfg.path)
    if cfg.interactions is None:
        raise DataLoadError("data.source=files needs data.interactions (a .csv or .parquet file)")
    return load_files(cfg.interactions, cfg.users, cfg.items, cfg.social, cfg.columns)


def with_split(data: RecData, cfg: DataConfig) -> RecData:
    """Add the configured split unless the source brings its own (a `split` column); a source's own
    split without validation rows gets them from its training rows (carve_validation, recorded in
    the meta as `validation_split`); then hold out cold users and items if the config asks for a
    cold-start split."""
    s = cfg.split
    inter = data.interactions
    meta = dict(data.meta)
    if "split" not in inter:
        inter = assign_split(inter, s.kind, s.valid_fraction, s.test_fraction, s.seed)
    elif s.valid_fraction > 0 and not (inter["split"] == "valid").any():
        inter = carve_validation(inter, s.valid_fraction, s.seed)
        meta["validation_split"] = (f"{s.valid_fraction:g} of each user's training pairs at random "
                                    f"(split.seed {s.seed}); the source's test rows untouched")
    if s.cold_user_fraction > 0 or s.cold_item_fraction > 0:
        inter, users, items = hold_out_cold(inter, s.cold_user_fraction, s.cold_item_fraction, s.seed)
        meta.update(held_out_users=len(users), held_out_items=len(items))
    return RecData(data.name, data.users, data.items, inter, data.social, meta)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise DataLoadError(f"{path} does not exist")
    return path
