"""Loaders: all return `RecData`. Files are read as they are; checking them is validation's job,
so a loader only refuses what it cannot parse at all: a missing or empty file, a byte that is not
UTF-8, a token that is not an id, a table without its id columns, timestamps in no accepted form.
Each refusal is a DataLoadError naming the file (and line, for text files) and the fix."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from recsys.data.errors import DataLoadError
from recsys.data.files import existing as _existing
from recsys.data.files import load_files, save_files  # noqa: F401  (the loaders' public names)
from recsys.data.settings import DataConfig
from recsys.data.split import assign_split, carve_validation, hold_out_cold
from recsys.data.types import RecData

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


def load_data(cfg: DataConfig) -> RecData:
    """The configured source, read as is (validation comes next, then `with_split`)."""
    if cfg.source == "synthetic":
        from recsys.data.next_day import generate_day

        return generate_day(**cfg.synthetic.model_dump())
    folder_loaders = {"gowalla": load_gowalla, "ml-100k": load_ml100k, "lastfm": load_lastfm}
    if cfg.source in folder_loaders:
        if cfg.path is None:
            raise DataLoadError(f"data.source={cfg.source} needs data.path, the folder holding its files")
        if Path(cfg.path).is_file():
            raise DataLoadError(f"data.path={cfg.path} is a file; data.source={cfg.source} reads a folder (the one "
                                "holding that file)")
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
