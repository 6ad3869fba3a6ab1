"""The two tasks the mmoe family learns on the interaction graph: job click and friend request.

Each split becomes Rows whose inputs are (user, candidate, candidate is a user) index triples and
whose labels are NaN for the task a row does not belong to. Friendships are split at random; only
the training ones may enter the graph, the held-out ones (with random non-friends) are labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from recsys.data.tabular import Rows, split_rows

TASKS = ("job_click", "friend_request")


@dataclass
class NetworkTasks:
    """Rows per split for both tasks. Row inputs are index triples (user, candidate, candidate is a
    user) stored as float32 (exact below 2^24), decoded by GraphMultiTask; labels NaN for the other
    task. `train_social` holds the friendships the graph may use (the held-out ones are labels)."""
    rows: dict[str, Rows]
    train_social: np.ndarray


def network_tasks(interactions: pd.DataFrame, indexed, seed: int = 0,
                  fractions: Sequence[float] = (0.8, 0.1, 0.1), friend_negatives: int = 1) -> NetworkTasks:
    """job click: the (user, job) pairs of each interaction split, label = any click or apply among
    the pair's events (a view alone is 0). friend request: friendships split at random (seed) into
    train/valid/test, each positive (u, v) with `friend_negatives` random non-friends (u, w)."""
    if "event" not in interactions or not interactions["event"].isin(["click", "apply"]).any():
        raise ValueError("the job-click task needs an 'event' column with click (or apply) events, as the "
                         "synthetic network has; this data has none")
    n_items = indexed.n_items
    uidx, iidx = pd.Index(indexed.user_ids), pd.Index(indexed.item_ids)
    u = uidx.get_indexer(interactions["user_id"].astype(str))
    i = iidx.get_indexer(interactions["item_id"].astype(str))
    clicked = np.unique(u[interactions["event"].isin(["click", "apply"]).to_numpy()].astype(np.int64) * n_items
                        + i[interactions["event"].isin(["click", "apply"]).to_numpy()])
    rng = np.random.default_rng(seed)
    social = indexed.social
    # one direction per friendship, so a pair and its mirror land in the same split
    undirected = np.unique(np.sort(social, axis=1), axis=0) if len(social) else np.zeros((0, 2), np.int64)
    parts = split_rows(len(undirected), fractions, seed)
    friends = set(map(tuple, undirected.tolist()))
    rows = {}
    for name, part in zip(("train", "valid", "test"), parts):
        pairs = indexed.split(name)
        click_y = np.isin(pairs[:, 0] * n_items + pairs[:, 1], clicked).astype(np.float32)
        pos = undirected[part]
        neg_u = np.repeat(pos[:, 0], friend_negatives)
        neg_v = rng.integers(indexed.n_users, size=len(neg_u))
        bad = np.array([(min(a, b), max(a, b)) in friends or a == b for a, b in zip(neg_u, neg_v)], dtype=bool)
        neg_u, neg_v = neg_u[~bad], neg_v[~bad]
        users = np.concatenate([pairs[:, 0], pos[:, 0], neg_u])
        cands = np.concatenate([pairs[:, 1], pos[:, 1], neg_v])
        is_user = np.concatenate([np.zeros(len(pairs)), np.ones(len(pos) + len(neg_u))])
        y = np.full((len(users), 2), np.nan, dtype=np.float32)
        y[:len(pairs), 0] = click_y
        y[len(pairs):, 1] = np.concatenate([np.ones(len(pos)), np.zeros(len(neg_u))])
        rows[name] = Rows(np.stack([users, cands, is_user], axis=1).astype(np.float32), y)
    train_social = undirected[parts[0]]
    train_social = np.concatenate([train_social, train_social[:, ::-1]]) if len(train_social) else social[:0]
    return NetworkTasks(rows, train_social)


def prepare_tasks(data, indexed, cfg):
    """The mmoe family's data preparation (its registry entry): both tasks' labelled rows, and the
    indexed data with only the training friendships (the held-out ones are labels, so they stay out
    of the graph)."""
    from dataclasses import replace

    tasks = network_tasks(data.interactions, indexed, cfg.data.split.seed,
                          friend_negatives=cfg.model.mmoe.friend_negatives)
    return replace(indexed, social=tasks.train_social), tasks
