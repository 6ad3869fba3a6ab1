"""Training and evaluating multi-task heads (recsys/models/mmoe.py) on tabular rows.

Rows are an input matrix x (n, d) and a label matrix y (n, tasks) in {0, 1}, NaN where a row is not
labelled for a task (the graph tasks: a job-click row says nothing about friend requests). The loss
is the weighted sum over tasks of the mean binary cross-entropy on the labelled rows. Training
stops on the mean validation AUC over tasks (patience in epochs); the best state is kept.

Also the Census-Income loader for the MMoE paper's check (income > 50K, never married).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from recsys.metrics import auc


@dataclass
class Rows:
    x: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n, tasks) float32, NaN = not labelled

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> "Rows":
        return Rows(self.x[index], self.y[index])


@dataclass
class HeadResult:
    best_epoch: int = 0
    best_score: float = float("-inf")
    history: list[dict] = field(default_factory=list)


def task_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(tasks,) mean BCE per task over the rows labelled for it (0 for a task with none)."""
    labelled = ~torch.isnan(y)
    bce = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(y), reduction="none") * labelled
    return bce.sum(0) / labelled.sum(0).clamp(min=1)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(torch.from_numpy(x[s:s + batch_size]))).numpy()
           for s in range(0, len(x), batch_size)]
    model.train()
    return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)


def task_aucs(pred: np.ndarray, y: np.ndarray) -> list[float]:
    """AUC per task over the rows labelled for it."""
    return [auc(y[~np.isnan(y[:, t]), t], pred[~np.isnan(y[:, t]), t]) for t in range(y.shape[1])]


def fit_head(model: nn.Module, train: Rows, valid: Rows, weights: Optional[Sequence[float]] = None,
             epochs: int = 30, batch_size: int = 1024, lr: float = 1e-3, weight_decay: float = 0.0,
             patience: int = 5, seed: int = 0,
             on_epoch: Optional[Callable[[int, dict], None]] = None) -> HeadResult:
    """Adam on the weighted task losses; early stopping on mean validation AUC."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_tasks = train.y.shape[1]
    w = torch.tensor(weights if weights is not None else [1.0] * n_tasks, dtype=torch.float32)
    if len(w) != n_tasks:
        raise ValueError(f"{len(w)} task weights for {n_tasks} tasks")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y)
    result, best_state, bad = HeadResult(), None, 0
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.from_numpy(rng.permutation(len(train)))
        total = 0.0
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            loss = (task_losses(model(x_all[idx]), y_all[idx]) * w).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        aucs = task_aucs(predict(model, valid.x), valid.y)
        score = float(np.nanmean(aucs))
        logs = {"loss": total / len(train), "valid_mean_auc": score,
                **{f"valid_auc_{t}": a for t, a in enumerate(aucs)}}
        result.history.append({"epoch": epoch, **logs})
        if on_epoch:
            on_epoch(epoch, logs)
        if score > result.best_score:
            result.best_score, result.best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def gate_utilisation(model: nn.Module, x: np.ndarray, batch_size: int = 8192) -> Optional[np.ndarray]:
    """(tasks, experts) mean gate weight of an MMoE head over rows x; None for other heads."""
    if not hasattr(getattr(model, "head", model), "gate_weights"):
        return None
    with torch.no_grad():
        parts = [model.gate_weights(torch.from_numpy(x[s:s + batch_size])).sum(0)
                 for s in range(0, len(x), batch_size)]
    return (torch.stack(parts).sum(0) / len(x)).numpy()


# ---------------------------------------------------------------- tabular inputs

CENSUS_COLUMNS = [
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour", "hs_college",
    "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin", "sex", "union_member",
    "unemp_reason", "full_or_part_emp", "capital_gains", "capital_losses", "stock_dividends", "tax_filer_stat",
    "region_prev_res", "state_prev_res", "det_hh_fam_stat", "det_hh_summ", "instance_weight", "mig_chg_msa",
    "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt", "num_emp", "fam_under_18", "country_father",
    "country_mother", "country_self", "citizenship", "own_or_self", "vet_question", "vet_benefits",
    "weeks_worked", "year", "income_50k",
]
CENSUS_NUMERIC = ["age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends", "num_emp",
                  "weeks_worked"]
CENSUS_TASKS = ["income_50k", "never_married"]


def load_census(path: Path) -> pd.DataFrame:
    """The UCI Census-Income (KDD) file as a frame with the MMoE paper's two labels as 0/1 columns:
    income over 50K, and marital status 'Never married'. The marital column is dropped from the
    inputs (it is a label) and so is the sampling weight."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point to census-income.test (see ../shared/data/README.md)")
    frame = pd.read_csv(path, header=None, names=CENSUS_COLUMNS, sep=",", skipinitialspace=True,
                        na_values="?", keep_default_na=False)
    if frame.shape[1] != len(CENSUS_COLUMNS) or frame["income_50k"].isna().any():
        raise ValueError(f"{path}: expected {len(CENSUS_COLUMNS)} comma-separated columns with an income label")
    frame["income_50k"] = frame["income_50k"].str.startswith("50000+").astype(np.float32)
    frame["never_married"] = (frame["marital_stat"] == "Never married").astype(np.float32)
    return frame.drop(columns=["marital_stat", "instance_weight"])


class TabularEncoder:
    """One-hot for categorical columns (values seen in training; others map to no column),
    log1p + standardisation for numeric ones, both fitted on the training rows only."""

    def __init__(self, numeric: Sequence[str], categorical: Sequence[str]):
        self.numeric, self.categorical = list(numeric), list(categorical)

    def fit(self, frame: pd.DataFrame) -> "TabularEncoder":
        num = self._numeric(frame)
        self.mean, self.std = num.mean(0), num.std(0) + 1e-6
        self.levels = {c: sorted(frame[c].astype(str).unique()) for c in self.categorical}
        return self

    def _numeric(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.numeric].to_numpy(dtype=np.float64) if self.numeric else np.zeros((len(frame), 0))
        return np.sign(values) * np.log1p(np.abs(np.nan_to_num(values)))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        parts = [(self._numeric(frame) - self.mean) / self.std]
        for c in self.categorical:
            codes = pd.Categorical(frame[c].astype(str), categories=self.levels[c]).codes
            onehot = np.zeros((len(frame), len(self.levels[c])), dtype=np.float32)
            known = codes >= 0
            onehot[np.flatnonzero(known), codes[known]] = 1.0
            parts.append(onehot)
        return np.concatenate(parts, axis=1).astype(np.float32)


def tabular_rows(frames: Sequence[pd.DataFrame], labels: Sequence[str],
                 numeric: Optional[Sequence[str]] = None) -> list[Rows]:
    """Encode frames (the first is the training split) into Rows. Columns not named as labels are
    inputs: `numeric` ones (default: float columns) are scaled, every other one is one-hot."""
    first = frames[0]
    missing = [c for c in labels if c not in first.columns]
    if missing:
        raise ValueError(f"label column(s) {missing} not in the data; columns are {list(first.columns)}")
    inputs = [c for c in first.columns if c not in labels]
    if numeric is None:
        numeric = [c for c in inputs if pd.api.types.is_float_dtype(first[c])]
    encoder = TabularEncoder(numeric, [c for c in inputs if c not in numeric]).fit(first)
    return [Rows(encoder.transform(f), f[list(labels)].to_numpy(dtype=np.float32)) for f in frames]


def split_rows(n: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> list[np.ndarray]:
    """A seeded random partition of range(n) by fractions (train, valid, test)."""
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions)[:-1] * n).astype(int)
    return np.split(order, cuts)


# ---------------------------------------------------------------- tasks on the interaction graph

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


class GraphMultiTask(nn.Module):
    """A multi-task head on a shared GNN bottom. Input rows are (user, candidate, candidate is a
    user) index triples; the head sees [u, c, u * c, user features, candidate features] where u, c
    are the bottom's embeddings (a candidate user's from the user table, a job's from the item
    table) and the candidate's feature block is that of its kind (zeros for the other kind). For a
    candidate member, the product of the two members' feature vectors is added: with one-hot
    attributes it is "same university", "same company", the signal friendships form on.

    frozen: the bottom's embeddings are computed once and only the head trains; otherwise every
    forward pass re-embeds the graph and gradients reach the bottom (end to end)."""

    def __init__(self, bottom: nn.Module, graph, head_factory: Callable[[int], nn.Module], frozen: bool = True):
        super().__init__()
        self.bottom, self.graph, self.frozen = bottom, graph, frozen
        self.user_x = graph.user_features if graph.user_features is not None else torch.zeros(graph.n_users, 0)
        self.item_x = graph.item_features if graph.item_features is not None else torch.zeros(graph.n_items, 0)
        if frozen:
            for p in bottom.parameters():
                p.requires_grad_(False)
            self._cached = self._embed()
        dim = self._embed()[0].shape[1] if not frozen else self._cached[0].shape[1]
        self.d_in = 3 * dim + 3 * self.user_x.shape[1] + self.item_x.shape[1]
        self.head = head_factory(self.d_in)
        self.head_tasks = self.head(torch.zeros(1, self.d_in)).shape[1]

    def _embed(self):
        if self.frozen and getattr(self, "_cached", None) is not None:
            return self._cached
        with torch.set_grad_enabled(not self.frozen and self.training):
            return self.bottom.embed(self.graph)

    def inputs(self, rows: torch.Tensor) -> torch.Tensor:
        users_emb, items_emb = self._embed()
        u, c, is_user = rows[:, 0].long(), rows[:, 1].long(), rows[:, 2] > 0.5
        # Both lookups run for every row and one of them is discarded, so a job index must also be
        # a valid row of the user tables and vice versa: clamp, the discarded value does not matter.
        as_user, as_item = c.clamp(max=len(users_emb) - 1), c.clamp(max=len(items_emb) - 1)
        ue = users_emb[u]
        ce = torch.where(is_user[:, None], users_emb[as_user], items_emb[as_item])
        cand_user_x = self.user_x[as_user] * is_user[:, None]
        cand_item_x = self.item_x[as_item] * ~is_user[:, None]
        ux = self.user_x[u]
        return torch.cat([ue, ce, ue * ce, ux, cand_user_x, ux * cand_user_x, cand_item_x], dim=1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.head(self.inputs(rows))

    def gate_weights(self, rows: torch.Tensor) -> torch.Tensor:
        return self.head.gate_weights(self.inputs(rows))


@dataclass
class NetworkHeadResult:
    model: nn.Module                       # GraphMultiTask (the first one for single-task heads)
    aucs: dict[str, dict[str, float]]      # split -> {task: AUC}
    friend_ranking: dict[str, float]       # test Recall/NDCG@20 of the friend-request head
    gates: Optional[np.ndarray]            # (tasks, experts) mean gate weight on the test rows
    history: list[dict]
    best_epoch: int


def friend_ranking(model: "GraphMultiTask", tasks: NetworkTasks, split: str = "test", ks: Sequence[int] = (20,),
                   chunk_size: int = 16) -> dict[str, float]:
    """The friend-request head as a recommender: for each member with held-out friendships in
    `split`, every other member is scored and ranked (training friendships and the member
    themself masked); Recall/NDCG@K of the held-out friends."""
    from recsys.metrics import evaluate_scores

    n = model.user_x.shape[0]
    rows = tasks.rows[split]
    held = rows.x[rows.y[:, 1] == 1][:, :2].astype(np.int64)
    targets = np.concatenate([held, held[:, ::-1]])
    seen = np.concatenate([tasks.train_social, np.stack([np.arange(n)] * 2, axis=1)])
    friend = TASKS.index("friend_request")
    column = friend if model.head_tasks > 1 else 0

    def score(users: np.ndarray) -> torch.Tensor:
        u = np.repeat(users, n)
        c = np.tile(np.arange(n), len(users))
        x = torch.from_numpy(np.stack([u, c, np.ones(len(u))], axis=1).astype(np.float32))
        return model(x)[:, column].reshape(len(users), n)

    model.eval()
    out = evaluate_scores(score, n, n, targets, seen, list(ks), chunk_size)
    model.train()
    return {k: v for k, v in out.items() if k.startswith(("recall", "ndcg"))}


def fit_network_heads(tasks: NetworkTasks, bottom: nn.Module, graph, opts, seed: int = 0,
                      on_epoch: Optional[Callable[[int, dict], None]] = None) -> NetworkHeadResult:
    """Train the configured head (recsys.config.MMoEOptions) on both tasks over a trained bottom.
    Single-task heads: one model per task (each sees only its task's rows)."""
    from recsys.models.mmoe import build_head

    n_tasks = len(TASKS)
    per_task = opts.head == "single_task"
    models = []
    for t in range(n_tasks if per_task else 1):
        torch.manual_seed(seed + t)
        width = 1 if per_task else n_tasks
        models.append(GraphMultiTask(bottom, graph, lambda d, w=width: build_head(
            "shared_bottom" if per_task else opts.head, d, w, opts.experts, opts.expert_dim, opts.expert_hidden,
            opts.tower_hidden, opts.dropout)[0], frozen=opts.freeze_bottom))
    aucs: dict[str, dict[str, float]] = {}
    history, best_epoch = [], 0
    for t, model in enumerate(models):
        cols = [t] if per_task else list(range(n_tasks))
        weights = [opts.task_weights[c] for c in cols]
        split_rows_ = {k: Rows(r.x, r.y[:, cols]) for k, r in tasks.rows.items()}
        if per_task:  # a task's own rows only
            split_rows_ = {k: r.take(np.flatnonzero(~np.isnan(r.y[:, 0]))) for k, r in split_rows_.items()}
        res = fit_head(model, split_rows_["train"], split_rows_["valid"], weights, opts.epochs, opts.batch_size,
                       opts.lr, patience=opts.patience, seed=seed, on_epoch=on_epoch if t == 0 else None)
        history += res.history
        best_epoch = max(best_epoch, res.best_epoch)
        for split, r in split_rows_.items():
            if len(r):
                for c, a in zip(cols, task_aucs(predict(model, r.x), r.y)):
                    aucs.setdefault(split, {})[TASKS[c]] = a
    gates = gate_utilisation(models[0], tasks.rows["test"].x)
    ranking = friend_ranking(models[-1], tasks)  # single-task: the last model is the friend task's
    return NetworkHeadResult(models[0], aucs, ranking, gates, history, best_epoch)
