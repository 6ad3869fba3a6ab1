"""What a family's training returns, for the flow to evaluate, register and serve."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from torch import nn

from recsys.data.types import IndexedData
from recsys.graph.build import RecGraph
from recsys.train import TrainResult
from recsys.warm import Start


@dataclass
class NetworkHeadResult:
    """The multi-task heads of a family that has them (recsys/multitask.py)."""
    model: nn.Module                       # GraphMultiTask (the first one for single-task heads)
    aucs: dict[str, dict[str, float]]      # split -> {task: AUC}
    friend_ranking: dict[str, float]       # test Recall/NDCG@20 of the friend-request head
    gates: Optional[np.ndarray]            # (tasks, experts) mean gate weight on the test rows
    history: list[dict]
    best_epoch: int
    modules: dict[str, nn.Module] = field(default_factory=dict)  # each head by name (a warm start's stages)


@dataclass
class Trained:
    """The model that serves (it embeds users and items: a RecModel, or the LLM family's fixed
    vectors), the graph it embeds, the ranking training's result, the figure a search maximises
    (`score`, at `best_epoch`) and, for a family with task heads, their result."""
    model: nn.Module
    graph: RecGraph
    result: TrainResult
    score: float = float("-inf")
    best_epoch: int = 0
    heads: Optional[NetworkHeadResult] = None
    selection: Optional["Trained"] = None  # refit: the model chosen on validation, which the gates judge
    indexed: Optional[IndexedData] = None  # refit: the pairs the serving model trained on (validation included)
    built: Optional[nn.Module] = None      # the model the family built, when it is not `model` (llm: the bottom)
    stages: dict[str, nn.Module] = field(default_factory=dict)  # later stages' modules a warm start carries
    start: Optional[Start] = None          # how training started (recsys/warm.py)

    def warm_model(self) -> nn.Module:
        """The model a next warm start copies: the one chosen on validation, as the family built it."""
        chosen = self.selection or self
        return chosen.built if chosen.built is not None else chosen.model
