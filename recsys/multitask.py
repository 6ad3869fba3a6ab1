"""Training and evaluating multi-task heads (recsys/models/mmoe.py) on Rows (recsys/data/tabular.py).

Rows are an input matrix x (n, d) and a label matrix y (n, tasks) in {0, 1}, NaN where a row is not
labelled for a task (the graph tasks: a job-click row says nothing about friend requests). The loss
is the weighted sum over tasks of the mean binary cross-entropy on the labelled rows. Training
stops on the mean validation AUC over tasks (patience in epochs); the best state is kept.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.network_tasks import TASKS, NetworkTasks
from recsys.data.tabular import Rows
from recsys.device import placed, resolve_device
from recsys.dist import active
from recsys.metrics import auc
from recsys.models.graph_multitask import GraphMultiTask
from recsys.train import Callback, TrainResult, drive_epochs
from recsys.train_state import EarlyStopping
from recsys.trained import NetworkHeadResult


def task_losses(logits: torch.Tensor, y: torch.Tensor, labelled_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(tasks,) mean BCE per task over the rows labelled for it (0 for a task with none); the sum is
    divided by `labelled_rows` per task when given (a worker's share of a batch: the whole batch's)."""
    labelled = ~torch.isnan(y)
    bce = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(y), reduction="none") * labelled
    return bce.sum(0) / (labelled.sum(0) if labelled_rows is None else labelled_rows).clamp(min=1)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Probabilities per task, the rows scored where the model is."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.sigmoid(model(torch.from_numpy(x[s:s + batch_size]).to(device))).cpu().numpy()
           for s in range(0, len(x), batch_size)]
    model.train()
    return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)


def task_aucs(pred: np.ndarray, y: np.ndarray) -> list[float]:
    """AUC per task over the rows labelled for it."""
    return [auc(y[~np.isnan(y[:, t]), t], pred[~np.isnan(y[:, t]), t]) for t in range(y.shape[1])]


def fit_head(model: nn.Module, train: Rows, valid: Rows, weights: Optional[Sequence[float]] = None,
             epochs: int = 30, batch_size: int = 1024, lr: float = 1e-3, weight_decay: float = 0.0,
             patience: int = 5, seed: int = 0, callbacks: Sequence[Callback] = (),
             device: Optional[torch.device] = None) -> TrainResult:
    """Adam on the weighted task losses; early stopping on mean validation AUC (evaluated every
    epoch; `patience` epochs without improvement), the best state kept. Trains on `device` (the
    rows copied there once); the model comes back to the CPU."""
    model.to(device or "cpu")
    try:
        return _fit_head(model, train, valid, weights, epochs, batch_size, lr, weight_decay, patience, seed,
                         callbacks, torch.device(device or "cpu"))
    finally:
        model.to("cpu")


def _fit_head(model, train, valid, weights, epochs, batch_size, lr, weight_decay, patience, seed, callbacks,
              device) -> TrainResult:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_tasks = train.y.shape[1]
    w = torch.tensor(weights if weights is not None else [1.0] * n_tasks, dtype=torch.float32, device=device)
    if len(w) != n_tasks:
        raise ValueError(f"{len(w)} task weights for {n_tasks} tasks")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    x_all, y_all = torch.from_numpy(train.x).to(device), torch.from_numpy(train.y).to(device)
    best, steps = EarlyStopping(patience), [0]
    worker = active()  # one of several training workers (recsys/dist.py): each takes its share of every batch
    net = model if worker is None else worker.averaged(model)

    def one_epoch(epoch: int) -> dict:
        t0, total = time.perf_counter(), 0.0
        order = torch.from_numpy(rng.permutation(len(train))).to(device)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            if worker is None:
                loss = (task_losses(model(x_all[idx]), y_all[idx]) * w).sum()
            else:  # its share's BCE over the whole batch's labelled rows, x W: DDP's mean is the batch's gradient
                labelled, (mine,) = (~torch.isnan(y_all[idx])).sum(0), worker.share(idx)[1]
                loss = (task_losses(net(x_all[mine]), y_all[mine], labelled) * w).sum() * worker.world
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps[0] += 1
            value = float(loss.detach() if worker is None else worker.sum(loss.detach().clone()) / worker.world)
            total += value * len(idx)
            for cb in callbacks:
                cb.on_step(steps[0], {"loss": value})
        return {"loss": total / len(train), "epoch_seconds": time.perf_counter() - t0,
                **(worker.take_figures() if worker is not None else {})}

    def validate(epoch: int, logs: dict) -> bool:
        stop = False
        if worker is None or worker.leads:  # rank 0 validates, keeps the best state and says when to stop
            aucs = task_aucs(predict(model, valid.x), valid.y)
            score = float(np.nanmean(aucs))
            logs.update({"valid_mean_auc": score, **{f"valid_auc_{t}": a for t, a in enumerate(aucs)}})
            stop = best.update(model, score, epoch)
        return stop if worker is None else worker.agree(stop)

    started = time.perf_counter()
    model.train()
    result = drive_epochs(epochs, one_epoch, callbacks, TrainResult(), validate, best)
    best.restore(model)
    if worker is not None:
        worker.share_best(model, result)
    result.seconds = time.perf_counter() - started
    return result


def gate_utilisation(model: nn.Module, x: np.ndarray, batch_size: int = 8192) -> Optional[np.ndarray]:
    """(tasks, experts) mean gate weight of an MMoE head over rows x; None for other heads."""
    if not hasattr(getattr(model, "head", model), "gate_weights"):
        return None
    with torch.no_grad():
        parts = [model.gate_weights(torch.from_numpy(x[s:s + batch_size])).sum(0)
                 for s in range(0, len(x), batch_size)]
    return (torch.stack(parts).sum(0) / len(x)).numpy()


def friend_ranking(model: GraphMultiTask, tasks: NetworkTasks, split: str = "test", ks: Sequence[int] = (20,),
                   chunk_size: int = 16, max_users: Optional[int] = None, sample_seed: int = 0) -> dict[str, float]:
    """The friend-request head as a recommender: for each member with held-out friendships in
    `split`, every other member is scored and ranked (training friendships and the member
    themself masked); Recall/NDCG@K of the held-out friends. Each ranked member scores all n
    members through the head, so `max_users` (a sample drawn with `sample_seed`) keeps the cost
    linear in n; None ranks them all (n x n)."""
    from recsys.metrics import evaluate_scores

    n, device = model.user_x.shape[0], model.user_x.device
    rows = tasks.rows[split]
    held = rows.x[rows.y[:, 1] == 1][:, :2].astype(np.int64)
    targets = np.concatenate([held, held[:, ::-1]])
    seen = np.concatenate([tasks.train_social, np.stack([np.arange(n)] * 2, axis=1)])
    friend = TASKS.index("friend_request")
    column = friend if model.head_tasks > 1 else 0

    def score(users: np.ndarray) -> torch.Tensor:
        u = np.repeat(users, n)
        c = np.tile(np.arange(n), len(users))
        x = torch.from_numpy(np.stack([u, c, np.ones(len(u))], axis=1).astype(np.float32)).to(device)
        return model(x)[:, column].reshape(len(users), n)

    model.eval()
    out = evaluate_scores(score, n, n, targets, seen, list(ks), chunk_size, max_users=max_users,
                          sample_seed=sample_seed)
    model.train()
    return {k: v for k, v in out.items() if k.startswith(("recall", "ndcg"))}


def fit_network_heads(tasks: NetworkTasks, bottom: nn.Module, graph, opts, seed: int = 0,
                      callbacks: Sequence[Callback] = (), ranked_members: Optional[int] = None,
                      ranking_seed: int = 0, device: Optional[torch.device] = None,
                      warm: Optional[dict] = None) -> NetworkHeadResult:
    """Train the configured head (recsys.families.MMoEOptions) on both tasks over a trained bottom.
    Single-task heads: one model per task (each sees only its task's rows; `callbacks` observe the
    first). The friend ranking ranks `ranked_members` members (seeded; all when None). Heads train
    and the friend ranking scores on `device`. `warm`: a champion's stages, whose heads (`head0`,
    `head1`) start these where their shapes match (recsys.warm.load_stage)."""
    from recsys.models.mmoe import build_head
    from recsys.warm import load_stage

    n_tasks = len(TASKS)
    per_task = opts.head == "single_task"
    models = []
    for t in range(n_tasks if per_task else 1):
        torch.manual_seed(seed + t)
        width = 1 if per_task else n_tasks

        def head(d: int, w: int = width) -> nn.Module:
            return build_head("shared_bottom" if per_task else opts.head, d, w, opts.experts, opts.expert_dim,
                              opts.expert_hidden, opts.tower_hidden, opts.dropout)[0]
        models.append(GraphMultiTask(bottom, graph, head, frozen=opts.freeze_bottom))
        load_stage(models[-1].head, warm, f"head{t}")
    aucs: dict[str, dict[str, float]] = {}
    history, best_epoch = [], 0
    for t, model in enumerate(models):
        cols = [t] if per_task else list(range(n_tasks))
        weights = [opts.task_weights[c] for c in cols]
        split_rows_ = {k: Rows(r.x, r.y[:, cols]) for k, r in tasks.rows.items()}
        if per_task:  # a task's own rows only
            split_rows_ = {k: r.take(np.flatnonzero(~np.isnan(r.y[:, 0]))) for k, r in split_rows_.items()}
        res = fit_head(model, split_rows_["train"], split_rows_["valid"], weights, opts.epochs, opts.batch_size,
                       opts.lr, patience=opts.patience, seed=seed, callbacks=callbacks if t == 0 else (), device=device)
        history += res.history
        best_epoch = max(best_epoch, res.best_epoch)
        for split, r in split_rows_.items():
            if len(r):
                for c, a in zip(cols, task_aucs(predict(model, r.x), r.y)):
                    aucs.setdefault(split, {})[TASKS[c]] = a
    gates = gate_utilisation(models[0], tasks.rows["test"].x)
    # single-task heads: the last model is the friend task's
    with placed(models[-1], device or torch.device("cpu")):
        ranking = friend_ranking(models[-1], tasks, max_users=ranked_members, sample_seed=ranking_seed)
    return NetworkHeadResult(models[0], aucs, ranking, gates, history, best_epoch,
                             {f"head{t}": m.head for t, m in enumerate(models)})


def train_family(prepared, cfg, bottom, callbacks, log=None, stages=None):
    """The mmoe family's whole training (its registry entry): the bottom by the ranking loop, then
    the heads on both tasks (stage "head_"); a search maximises their mean validation AUC. `stages`:
    a warm start's, whose heads start these."""
    from recsys.fit import train_ranking

    trained = train_ranking(prepared, cfg, bottom, callbacks, log)
    heads = fit_network_heads(prepared.tasks, bottom, prepared.graph, cfg.model.mmoe, cfg.train.seed,
                              callbacks("head_"), ranked_members=cfg.model.mmoe.ranked_members,
                              ranking_seed=cfg.eval.seed, device=resolve_device(cfg.compute.device), warm=stages)
    trained.heads, trained.best_epoch, trained.stages = heads, heads.best_epoch, dict(heads.modules)
    trained.score = float(np.mean(list(heads.aucs["valid"].values())))
    return trained
