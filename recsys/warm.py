"""Warm starts: tonight's model begins where the champion's stopped (train.start).

A registered version keeps the state of the model chosen on validation (before any refit, so it
has never trained on a validation pair), the ids its rows belong to, its family and model section.
A warm start copies that state into today's freshly built model:

* every parameter or buffer the family shares with it, of the same shape, takes the champion's value;
* rows of the ID tables (`RecModel.id_tables`: the user and item embeddings) move with their ids, so
  a user keeps their row when the id order changes;
* rows of ids the champion never saw follow `train.warm.new_rows`: `neighbours` (the mean of the carried
  rows of their training neighbours: a new user's items, a new item's users; the usual
  initialisation where none is carried) or `init` (the usual initialisation);
* then, with `train.warm.shrink` below 1 or `train.warm.perturb` above 0, every floating-point value
  becomes shrink x carried + perturb x freshly initialised ("shrink and perturb", Ash & Adams 2020:
  a model warm-started at yesterday's optimum can sit where further training only overfits, and
  shrinking it towards the initialisation gives training room again);
* the first `train.warm.lr_epochs` epochs train at `train.warm.lr` x the learning rate (`lr_boost`,
  applied by recsys/train.py): the shrunk values grow back in fewer steps;
* early stopping waits `train.warm.patience` evaluations without improvement (`patience`): a warm
  run starts near its best.

Nothing is copied unless everything fits: a champion of another family, another shape or no
shared id raises WarmStartError with the reason, and the model stays as built (a scratch start).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import torch

from recsys.config import TrainConfig
from recsys.data.types import IndexedData

NEW_ROWS = ("neighbours", "init")


class WarmStartError(Exception):
    """The champion's state cannot seed today's model; the message says why."""


@dataclass
class WarmState:
    """What a registered version keeps for the next warm start."""
    family: str                      # the family whose model was built (for a family on a bottom, the bottom)
    model_cfg: dict
    state: dict[str, torch.Tensor]
    user_ids: np.ndarray
    item_ids: np.ndarray
    version: str = ""                # the registered version it belongs to
    chain: int = 0                   # warm starts in a row behind it (0: it trained from scratch)
    stages: dict[str, dict] = field(default_factory=dict)  # later stages' modules (MMoE heads, LLM prefix)


@dataclass
class Start:
    """How a training started: `scratch` or `champion`, why, and (warm) what was carried."""
    mode: str
    reason: str
    version: str = ""
    chain: int = 0
    carried: dict = field(default_factory=dict)

    def params(self) -> dict[str, str]:
        out = {"start": self.mode, "start_reason": self.reason[:500]}
        if self.mode == "champion":
            out.update(start_version=self.version, **{f"start_{k}": str(v) for k, v in self.carried.items()})
        return out


def choose(train: TrainConfig, state: Optional[WarmState], why_none: str,
           drift: str = "") -> tuple[Optional[WarmState], str]:
    """(the state to start from or None, why): train.start, the champion's chain against
    train.scratch_every, and the drift check (`drift`: its failures, empty when within bounds)."""
    if train.start == "scratch":
        return None, "train.start=scratch"
    if state is None:
        return None, why_none or "no champion to start from"
    if train.start == "auto":
        if train.scratch_every and state.chain + 1 >= train.scratch_every:
            return None, (f"champion v{state.version} ends {state.chain} warm starts in a row; "
                          f"train.scratch_every={train.scratch_every} starts this one from scratch")
        if drift:
            return None, f"the data drifted beyond the check's bounds ({drift[:200]}): a scratch start"
    return state, f"from champion v{state.version}"


def carry(model: torch.nn.Module, warm: WarmState, family: str, data: IndexedData,
          new_rows: str = "neighbours", shrink: float = 1.0, perturb: float = 0.0) -> dict:
    """Copy `warm` into `model` (built for `data`) as the module says; returns what was carried.
    Raises WarmStartError, leaving the model untouched, when it does not fit."""
    if warm.family != family:
        raise WarmStartError(f"the champion v{warm.version} is a {warm.family} model, today's is {family}")
    own = model.state_dict()
    tables = model.id_tables()
    missing = sorted(set(own) - set(warm.state))
    if missing:
        raise WarmStartError(f"the champion v{warm.version} has no {missing[0]!r} (another shape of {family})")
    users = _positions(warm.user_ids, data.user_ids)
    items = _positions(warm.item_ids, data.item_ids)
    if not (users >= 0).any() and not (items >= 0).any():
        raise WarmStartError(f"no user or item of today's data is known to the champion v{warm.version}")
    out = {}
    for name, value in own.items():
        old = warm.state[name]
        side = tables.get(name)
        if side is None and old.shape != value.shape:
            raise WarmStartError(f"{name} is {tuple(old.shape)} in the champion v{warm.version}, "
                                 f"{tuple(value.shape)} today: another shape of {family}")
        if side is not None and old.shape[1:] != value.shape[1:]:
            raise WarmStartError(f"{name} rows are {tuple(old.shape[1:])} in the champion v{warm.version}, "
                                 f"{tuple(value.shape[1:])} today (model.dim changed?)")
        out[name] = old.to(value.dtype) if side is None else _rows(value, old, users if side == "user" else items)
    if new_rows == "neighbours":
        _neighbour_rows(out, tables, data, users, items)
    if shrink != 1.0 or perturb:
        out = {k: shrink * v + perturb * own[k] if v.is_floating_point() else v for k, v in out.items()}
    model.load_state_dict(out)
    return {"users_carried": int((users >= 0).sum()), "users_new": int((users < 0).sum()),
            "items_carried": int((items >= 0).sum()), "items_new": int((items < 0).sum()), "new_rows": new_rows,
            "shrink": shrink, "perturb": perturb}


def lr_boost(model, cfg: TrainConfig) -> tuple[float, int]:
    """(lr factor, epochs) of a warm start's first epochs (train.warm.lr, warm.lr_epochs); (1, 0) for
    a scratch start. `cfg` is resolved."""
    if getattr(model, "warm_from", None) is None or not int(cfg.warm.lr_epochs):
        return 1.0, 0
    return float(cfg.warm.lr), int(cfg.warm.lr_epochs)


def own_or_train(model, cfg: TrainConfig, name: str) -> int:
    """A loop setting that a warm start has its own of (`patience`: validations without improvement
    before stopping; `eval_every`: epochs between validations): train.warm.<name> for a warm start
    where set, else train.<name>. `cfg` is resolved."""
    own = getattr(cfg.warm, name)
    return int(getattr(cfg, name) if getattr(model, "warm_from", None) is None or own is None else own)


def load_stage(module: torch.nn.Module, stages: Optional[dict], name: str) -> bool:
    """Start a later training stage's `module` (an MMoE head, the LLM prefix) from the champion's,
    when the champion has one of the same names and shapes; whether it did (also kept on the
    module as `warm_loaded`, which `stages_carried` reads after training)."""
    state = (stages or {}).get(name)
    own = module.state_dict()
    if state is None or set(state) != set(own) or any(state[k].shape != v.shape for k, v in own.items()):
        return False
    module.load_state_dict(state)
    module.warm_loaded = True  # type: ignore[assignment]  # a plain flag (nn.Module types attributes as tensors)
    return True


def stages_carried(stages: dict[str, torch.nn.Module]) -> str:
    """The later stages (by name) that started from the champion's (load_stage), or `none`."""
    return ",".join(sorted(k for k, m in stages.items() if getattr(m, "warm_loaded", False))) or "none"


def _positions(known: np.ndarray, today: np.ndarray) -> np.ndarray:
    """Each of today's ids' row in the champion's tables, -1 where it has none."""
    return pd.Index(np.asarray(known).astype(str)).get_indexer(np.asarray(today).astype(str))


def _rows(fresh: torch.Tensor, old: torch.Tensor, at: np.ndarray) -> torch.Tensor:
    rows = fresh.detach().clone()
    known = torch.as_tensor(np.flatnonzero(at >= 0))
    rows[known] = old[torch.as_tensor(at[at >= 0])].to(rows.dtype)
    return rows


def _neighbour_rows(state: dict, tables: dict, data: IndexedData, users: np.ndarray, items: np.ndarray) -> None:
    """New users' rows: the mean of their training items' carried rows; new items' likewise from their
    users. Only where the family has both tables (the rows live in one space)."""
    by_side = {side: name for name, side in tables.items()}
    if set(by_side) != {"user", "item"} or not len(data.train):
        return
    pairs = torch.as_tensor(np.asarray(data.train, dtype=np.int64))
    for side, other, at, other_at, col in (("user", "item", users, items, 0), ("item", "user", items, users, 1)):
        new = torch.as_tensor(at < 0)
        source_known = torch.as_tensor(other_at >= 0)
        keep = new[pairs[:, col]] & source_known[pairs[:, 1 - col]]
        if not keep.any():
            continue
        rows, sources = pairs[keep, col], pairs[keep, 1 - col]
        table, source = state[by_side[side]], state[by_side[other]]
        total = torch.zeros_like(table).index_add_(0, rows, source[sources])
        count = torch.zeros(len(table), dtype=table.dtype).index_add_(0, rows, torch.ones(len(rows), dtype=table.dtype))
        filled = count > 0
        table[filled] = total[filled] / count[filled, None]
