"""Loaders: all return `RecData`. Files are read as they are; checking them is validation's job,
so a loader only refuses what it cannot parse at all (a missing or empty file)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from recsys.config import DataConfig
from recsys.data.split import assign_split, hold_out_cold
from recsys.data.types import RecData


class DataLoadError(ValueError):
    """A data source that cannot be read at all (missing, empty, unknown format)."""


def load_gowalla(folder: str | Path) -> RecData:
    """LightGCN text format: each line `user item item ...`; train.txt and test.txt give the split."""
    folder = Path(folder)
    frames = []
    for name, split in (("train.txt", "train"), ("test.txt", "test")):
        path = _existing(folder / name)
        users, items = [], []
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 1:
                    users.append(np.full(len(parts) - 1, int(parts[0]), dtype=np.int64))
                    items.append(np.asarray(parts[1:], dtype=np.int64))
        if not users:
            raise DataLoadError(f"{path} holds no interactions")
        frames.append(pd.DataFrame({"user_id": np.concatenate(users), "item_id": np.concatenate(items), "split": split}))
    inter = pd.concat(frames, ignore_index=True)
    n_users = int(inter["user_id"].max()) + 1
    n_items = int(inter["item_id"].max()) + 1
    return RecData(
        "gowalla",
        pd.DataFrame({"user_id": np.arange(n_users)}),
        pd.DataFrame({"item_id": np.arange(n_items)}),
        inter,
    )


def load_lastfm(folder: str | Path) -> RecData:
    """LightGCN-PyTorch's LastFM: data1.txt / test1.txt (user, artist, weight; 1-based) as the
    train/test split, and trustnetwork.txt as real user-user friendships."""
    folder = Path(folder)
    frames = []
    for name, split in (("data1.txt", "train"), ("test1.txt", "test")):
        part = pd.read_csv(_existing(folder / name), sep="\t", header=None, names=["user_id", "item_id", "weight"])
        frames.append(part.assign(split=split))
    inter = pd.concat(frames, ignore_index=True)
    trust = pd.read_csv(_existing(folder / "trustnetwork.txt"), sep="\t", header=None, names=["src", "dst"])
    pairs = np.unique(np.sort(trust[["src", "dst"]].to_numpy(), axis=1), axis=0)  # one row per friendship
    n_users = int(max(inter["user_id"].max(), pairs.max()))
    n_items = int(inter["item_id"].max())
    return RecData(
        "lastfm",
        pd.DataFrame({"user_id": np.arange(1, n_users + 1)}),
        pd.DataFrame({"item_id": np.arange(1, n_items + 1)}),
        inter,
        pd.DataFrame({"src": pairs[:, 0], "dst": pairs[:, 1]}),
    )


ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                 "Thriller", "War", "Western"]


def load_ml100k(folder: str | Path) -> RecData:
    """MovieLens 100K: every rating is an interaction; user and movie attributes as features."""
    folder = Path(folder)
    inter = pd.read_csv(_existing(folder / "u.data"), sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    users = pd.read_csv(_existing(folder / "u.user"), sep="|", names=["user_id", "age", "gender", "occupation", "zip"])
    items = pd.read_csv(
        _existing(folder / "u.item"), sep="|", encoding="latin-1", header=None,
        names=["item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES],
    )
    flags = items[ML100K_GENRES].to_numpy().astype(bool)
    items["genres"] = ["|".join(g for g, on in zip(ML100K_GENRES, row) if on) for row in flags]
    items = items[["item_id", "title", "release_date", "genres"]]
    return RecData("ml-100k", users, items, inter)


def _read_table(path: Path, what: str) -> pd.DataFrame:
    path = _existing(path)
    if path.stat().st_size == 0:
        raise DataLoadError(f"the {what} file {path} is empty")
    try:
        if path.suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as exc:
        raise DataLoadError(f"the {what} file {path} cannot be read: {exc}") from None
    raise DataLoadError(f"the {what} file {path} must be .csv, .tsv or .parquet")


def load_files(
    interactions: str | Path,
    users: Optional[str | Path] = None,
    items: Optional[str | Path] = None,
    social: Optional[str | Path] = None,
    columns: Optional[dict[str, str]] = None,
    name: str = "files",
) -> RecData:
    """Generic CSV/Parquet: `columns` renames your names to user_id / item_id / timestamp / event.

    Without id tables, the ids seen in the interactions are the catalogue.
    """
    rename = columns or {}
    inter = _read_table(Path(interactions), "interactions").rename(columns=rename)
    users_df = _read_table(Path(users), "users").rename(columns=rename) if users else None
    items_df = _read_table(Path(items), "items").rename(columns=rename) if items else None
    if users_df is None:
        users_df = pd.DataFrame({"user_id": pd.unique(inter["user_id"].dropna())} if "user_id" in inter else {"user_id": []})
    if items_df is None:
        items_df = pd.DataFrame({"item_id": pd.unique(inter["item_id"].dropna())} if "item_id" in inter else {"item_id": []})
    social_df = _read_table(Path(social), "social") if social else None
    return RecData(name, users_df, items_df, inter, social_df)


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
    """Add the configured split unless the source brings its own (a `split` column); then hold
    out cold users and items if the config asks for a cold-start split."""
    s = cfg.split
    inter = data.interactions
    if "split" not in inter:
        inter = assign_split(inter, s.kind, s.valid_fraction, s.test_fraction, s.seed)
    meta = dict(data.meta)
    if s.cold_user_fraction > 0 or s.cold_item_fraction > 0:
        inter, users, items = hold_out_cold(inter, s.cold_user_fraction, s.cold_item_fraction, s.seed)
        meta.update(held_out_users=len(users), held_out_items=len(items))
    return RecData(data.name, data.users, data.items, inter, data.social, meta)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise DataLoadError(f"{path} does not exist")
    return path
