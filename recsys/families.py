"""The model families: one entry each, and the only place that knows what a family is.

An entry says how the family's model is built (its class's `from_config(cfg, graph, seed)`, reading
the `model` section and the family's own options `model.<name>`), how it trains (the whole of it:
MMoE's heads after its bottom, the LLM prefix after its GNN), whether it can embed nodes added
after training, what it reads besides the interactions (node features, text), any data it needs
prepared (MMoE's two tasks), what a search maximises and its Optuna search space. The CLI's
choices, the configuration's check of `model.family` and `search.family`, data preparation
(recsys/prepare.py), the flow's `train` task and the search objective all read this registry.

Adding a family: its model file in recsys/models/ and one `Family(...)` entry below.

Only pydantic is imported here (the configuration is assembled from this module); models and
training code are named as "module:attribute" and imported when used.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from pydantic import Field, field_validator

from recsys.config_base import ConfigError, Section

RANKING_LOOP = "recsys.fit:train_ranking"
# train.max_steps_per_epoch=auto: a family's steps per epoch, past which its batches grow with the
# log. 64 where every step costs the whole graph or whole tables (propagation, dense Adam), so fixed
# batches would make an epoch grow with the square of the log, and where measured to keep quality
# (GraphSAGE); PinSage has its own bound (recsys/models/pinsage.py says why).
AUTO_STEPS = 64
# LightGCN's training recipe for the `auto` settings, chosen on validation splits of three data sets
# (bench/results/transfer.md): the hardest of auto_candidates uniform candidates for 8 negatives per
# positive, a 0.998 parameter average, early stopping within 100 epochs. A warm start shrinks the carried
# values to 0.1 (the generic perturbation, recsys.config.GENERIC), takes 3 x the learning rate for its
# first 3 epochs and stops after 2 validations without improvement, chosen on day 2's validation splits
# in bench/results/warm_start.md; like every family's warm start, it validates after every epoch (GENERIC).
LIGHTGCN_RECIPE = {"epochs": 100, "lr": 0.002, "l2": 1e-3, "average": 0.998, "negatives.kind": "model",
                   "negatives.per_positive": 8, "warm.shrink": 0.1, "warm.lr": 3.0, "warm.lr_epochs": 3,
                   "warm.patience": 2}


def never(model_cfg) -> bool:
    return False


def always(model_cfg) -> bool:
    return True


def _monitor(cfg) -> str:
    return cfg.train.monitor


@dataclass(frozen=True)
class Proven:
    """A point of a family's space that a search on one data set chose over the recipe (by more
    than search.min_gain_se on validation). A search on other data tries it right after the recipe
    (search.proven_first): what won on one graph is a better first guess than a random draw."""
    found_on: str   # the data set, as bench.transfer names it (search.proven_skip)
    evidence: str   # the results file and entry that hold the search's figures
    settings: dict  # the space's parameters


@dataclass(frozen=True)
class Family:
    name: str
    summary: str
    model: str                                  # "module:Class", a RecModel with from_config(cfg, graph, seed)
    options: Optional[type[Section]] = None     # the family's own section, model.<name>
    space: Optional[Callable[[Any], dict]] = None  # Optuna space: trial -> {dotted key: value}; None: not searched
    train: str = RANKING_LOOP                    # (prepared, cfg, model, callbacks, log) -> recsys.trained.Trained
    inductive: str = "no"  # embeds nodes added after training: no | yes | with features | from items
    reads_features: Callable[[Any], bool] = never  # model section -> whether node features are computed
    reads_text: bool = False                    # reads the users' and items' text itself (not through features)
    bottom: Optional[Callable[[Any], str]] = None  # trains on top of another family's model: which one
    prepare: Optional[str] = None               # "module:function" (data, indexed, cfg) -> (indexed, tasks)
    objective: Callable[[Any], str] = _monitor  # run config -> the validation figure a search maximises
    proven: tuple[Proven, ...] = ()             # settings that beat the recipe in a search on some data set
    recipe: Optional[dict] = None               # values of the train settings left `auto` (recsys/recipe.py)
    auto_steps: Optional[int] = AUTO_STEPS      # train.max_steps_per_epoch=auto (None: batch_size always)

    def trained_model(self, cfg) -> "Family":
        """The family whose model is built and trained first (for a family on a bottom, the bottom)."""
        return FAMILIES[self.bottom(cfg)] if self.bottom else self

    def draw(self, trial) -> dict:
        """The family's search space as `trial` draws it ({dotted key: value})."""
        if self.space is None:
            raise ConfigError(f"model family {self.name!r} is not searched; searchable: {', '.join(searchable())}")
        return self.space(trial)

    def build(self, cfg, graph, seed: int = 0):
        """The family's model (for a family on a bottom, the bottom's model) for this graph. The
        seed fixes the initial weights, so a rerun on the same data trains the same model."""
        import torch

        built = self.trained_model(cfg)
        torch.manual_seed(seed)
        model = load(built.model).from_config(cfg, graph, seed)
        model.cosine = cfg.score == "cosine"
        return model


def load(name: str):
    """The attribute a "module:attribute" string names."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


# ---------------------------------------------------------------- each family's options and space

class LightGCNOptions(Section):
    use_features: bool = Field(False, description="the W + ReLU variant over ID embeddings and features")
    transform: bool = Field(False, description="W + ReLU per layer even without features (implied by use_features)")


LIGHTGCN_PROVEN = (
    Proven("lastfm", "bench/results/proven.json: lightgcn, lastfm",
           {"model.layers": 3, "model.dim": 64, "train.lr": 0.00302, "train.lr_schedule": "milestones",
            "train.l2": 0.00219, "train.l2_form": "row", "train.average": 0.998, "train.batch_size": 2048,
            "train.negatives.per_positive": 8, "train.negatives.kind": "model", "train.negatives.candidates": "auto",
            "train.negatives.temperature": 0.1}),
    Proven("ml-100k", "bench/results/proven.json: lightgcn, ml-100k",
           {"model.layers": 2, "model.dim": 64, "train.lr": 0.00758, "train.lr_schedule": "milestones",
            "train.l2": 0.00588, "train.l2_form": "occurrence", "train.average": 0.998, "train.batch_size": 2048,
            "train.negatives.per_positive": 8, "train.negatives.kind": "model", "train.negatives.candidates": 8,
            "train.negatives.temperature": None}),
)


def lightgcn_space(trial) -> dict[str, Any]:
    """LightGCN and GCN: depth, then what MF is searched over."""
    return {"model.layers": trial.suggest_int("model.layers", 1, 4), **embedding_space(trial)}


def embedding_space(trial) -> dict[str, Any]:
    """The recipe every ID-embedding family trains with: width, learning rate and its schedule, L2
    and its form, parameter averaging, batch size, negatives per positive, the sampler and its
    hardness (model: how many candidates the hardest is chosen from, or a softmax over them). The
    LightGCN recipe is a point of it."""
    space = {"model.dim": trial.suggest_categorical("model.dim", [32, 64, 128]),
             "train.lr": trial.suggest_float("train.lr", 5e-4, 2e-2, log=True),
             "train.lr_schedule": trial.suggest_categorical("train.lr_schedule", ["milestones", "cosine"]),
             "train.l2": trial.suggest_float("train.l2", 1e-6, 1e-2, log=True),
             "train.l2_form": trial.suggest_categorical("train.l2_form", ["occurrence", "row"]),
             "train.average": trial.suggest_categorical("train.average", [None, 0.99, 0.998]),
             "train.batch_size": trial.suggest_categorical("train.batch_size", [1024, 2048, 4096, 8192]),
             "train.negatives.per_positive": trial.suggest_categorical("train.negatives.per_positive", [1, 2, 4, 8]),
             "train.negatives.kind": trial.suggest_categorical("train.negatives.kind",
                                                               ["uniform", "popularity", "model", "ppr"])}
    kind = space["train.negatives.kind"]
    if kind == "popularity":
        space["train.negatives.popularity_exponent"] = trial.suggest_float("train.negatives.popularity_exponent", 0, 1)
    elif kind == "model":
        space["train.negatives.candidates"] = trial.suggest_categorical("train.negatives.candidates",
                                                                        ["auto", 2, 4, 8, 16, 32, 64])
        space["train.negatives.temperature"] = trial.suggest_categorical("train.negatives.temperature",
                                                                         [None, 0.1, 0.5, 2.0])
    elif kind == "ppr":
        low = trial.suggest_float("train.negatives.band_low", 0.01, 0.2, log=True)
        space["train.negatives.band"] = [low, min(1.0, 2.5 * low)]
    return space


class SageOptions(Section):
    aggregator: Literal["mean", "sum", "max", "pool"] = "mean"
    fanouts: list[int] = Field(default_factory=lambda: [20, 10], description="one per layer; sets the depth")
    chunk_size: int = Field(4096, ge=1, description="nodes per step of layer-wise inference")


def sage_space(trial) -> dict[str, Any]:
    """GraphSAGE: aggregator and neighbour fan-outs, width and learning rate."""
    fanouts = trial.suggest_categorical("model.sage.fanouts", ["10,5", "20,10", "25,15", "15,10,5"])
    return {"model.sage.aggregator": trial.suggest_categorical("model.sage.aggregator", ["mean", "sum", "max", "pool"]),
            "model.sage.fanouts": [int(f) for f in fanouts.split(",")],
            "model.dim": trial.suggest_categorical("model.dim", [32, 64, 128]),
            "train.lr": trial.suggest_float("train.lr", 1e-3, 2e-2, log=True)}


class PinSageOptions(Section):
    num_neighbors: int = Field(10, ge=1, description="T: most-visited items kept as neighbours")
    num_walks: int = Field(50, ge=1)
    restart_prob: float = Field(0.5, gt=0, le=1)
    num_traversals: int = Field(3, ge=1)
    margin: float = Field(0.5, ge=0)
    pooling: Literal["importance", "mean", "uniform"] = Field(
        "importance", description="importance: random-walk neighbours weighted by visit counts; mean: the "
                                  "same neighbours, equal weights; uniform: T items drawn uniformly from the "
                                  "2-hop item-user-item neighbourhood, equal weights")
    user_items: int = Field(32, ge=1, description="training: a user's vector in a batch is the mean of at most this "
                                                  "many of their other training items, drawn without replacement "
                                                  "(all of them when fewer); inference uses all")
    pairwise_loss: Literal["hinge", "bpr"] = Field(
        "hinge", description="train.loss bpr's pairwise loss: hinge (PinSage's max-margin, `margin`) or bpr")
    user_embedding: bool = Field(
        False, description="add a learned vector per user to the mean of their items (users become transductive: "
                           "a member added after training has the mean alone)")
    unit_items: bool = Field(
        True, description="item vectors of unit length (the paper's); false: the final layers' output as it is, so "
                          "an item's norm can carry its popularity")


def pinsage_space(trial) -> dict[str, Any]:
    """PinSage: T neighbours, walks, restart probability, the user sample, depth, width."""
    return {"model.pinsage.num_neighbors": trial.suggest_int("model.pinsage.num_neighbors", 3, 20),
            "model.pinsage.user_items": trial.suggest_categorical("model.pinsage.user_items", [8, 16, 32]),
            "model.pinsage.num_walks": trial.suggest_categorical("model.pinsage.num_walks", [20, 50, 100]),
            "model.pinsage.restart_prob": trial.suggest_float("model.pinsage.restart_prob", 0.2, 0.8),
            "model.layers": trial.suggest_int("model.layers", 1, 3),
            "model.dim": trial.suggest_categorical("model.dim", [32, 64, 128]),
            "train.lr": trial.suggest_float("train.lr", 1e-3, 2e-2, log=True)}


class FilterOptions(Section):
    """The graph filter (recsys/models/graph_filter.py says what each does). The defaults are ChebyCF's
    published Gowalla settings (its authors' choice); bench/results/filter.md chooses on validation."""
    kind: Literal["cheby", "linear"] = Field("cheby", description="cheby: a Chebyshev low-pass polynomial; "
                                                                  "linear: the normalised item-item graph itself")
    order: int = Field(8, ge=1, le=64, description="cheby: the polynomial's degree")
    flatness: float = Field(1.5, gt=0, description="cheby: how long the response stays near a half mid-spectrum")
    ideal_rank: int = Field(512, ge=0, description="eigenvectors in the ideal low-pass part (0: none; at most "
                                                   "`rank`, the served ones: a larger value takes them all)")
    ideal_weight: float = Field(0.2, ge=0, description="the ideal low-pass part's weight")
    degree_power: float = Field(0.4, ge=0, le=1, description="items' degree ^ -this before the filter, ^ +this "
                                                            "after")
    norm_power: float = Field(0.5, ge=0, le=1, description="the graph's normalisation: users' and items' degree ^ "
                                                          "-this on each interaction")
    rank: int = Field(1024, ge=1, description="width of the served vectors: the filter's best rank-k form")
    oversample: int = Field(32, ge=0, description="randomized SVD: extra columns beyond rank")
    iterations: int = Field(4, ge=0, description="randomized SVD: power iterations")


# The ideal low-pass part's sizes a search chooses among (tens suit a data set of a thousand or so
# items, hundreds larger ones); bench/filter.py's grid takes the same.
FILTER_IDEAL_RANKS = [0, 32, 64, 128, 256, 512]


def filter_space(trial) -> dict[str, Any]:
    """The filter's kind and shape; its served rank stays as configured (it sets the cost)."""
    kind = trial.suggest_categorical("model.filter.kind", ["cheby", "linear"])
    space = {"model.filter.kind": kind,
             "model.filter.ideal_rank": trial.suggest_categorical("model.filter.ideal_rank", FILTER_IDEAL_RANKS),
             "model.filter.ideal_weight": trial.suggest_float("model.filter.ideal_weight", 0.0, 1.0),
             "model.filter.degree_power": trial.suggest_float("model.filter.degree_power", 0.0, 0.6),
             "model.filter.norm_power": trial.suggest_float("model.filter.norm_power", 0.2, 0.6)}
    if kind == "cheby":
        space["model.filter.order"] = trial.suggest_int("model.filter.order", 2, 16)
        space["model.filter.flatness"] = trial.suggest_float("model.filter.flatness", 0.3, 10.0, log=True)
    return space


class MMoEOptions(Section):
    """The multi-task family: a GNN bottom (trained for retrieval as its own family would be) and a
    head on (user, candidate) pairs for two tasks, job click and friend request."""
    bottom: Literal["lightgcn", "sage"] = "lightgcn"
    head: Literal["mmoe", "shared_bottom", "single_task"] = "mmoe"
    experts: int = Field(4, ge=1)
    expert_dim: int = Field(16, ge=1)
    expert_hidden: list[int] = Field(default_factory=lambda: [32])
    tower_hidden: list[int] = Field(default_factory=lambda: [8])
    dropout: float = Field(0.0, ge=0, lt=1)
    task_weights: list[float] = Field(default_factory=lambda: [1.0, 1.0], description="job_click, friend_request")
    freeze_bottom: bool = Field(True, description="false: the task losses also train the bottom (end to end)")
    epochs: int = Field(30, ge=1)
    lr: float = Field(0.003, gt=0)
    batch_size: int = Field(256, ge=1)
    patience: int = Field(5, ge=1)
    ranked_members: Optional[int] = Field(
        200, ge=1, description="friend ranking: members (a seeded sample, eval.seed) whose held-out friends are "
                               "ranked; each scores every member through the head, so the cost is this x members; "
                               "null: all of them")
    friend_negatives: int = Field(1, ge=1, description="random non-friends per friendship")

    @field_validator("task_weights")
    @classmethod
    def _two_weights(cls, w: list[float]) -> list[float]:
        if len(w) != 2 or min(w) < 0:
            raise ValueError("task_weights needs two non-negative numbers: job_click, friend_request")
        return w


def mmoe_space(trial) -> dict[str, Any]:
    """MMoE: experts, expert width, the friend task's weight, the bottom family."""
    return {"model.mmoe.experts": trial.suggest_int("model.mmoe.experts", 2, 8),
            "model.mmoe.expert_dim": trial.suggest_categorical("model.mmoe.expert_dim", [8, 16, 32]),
            "model.mmoe.task_weights": [1.0, trial.suggest_float("model.mmoe.friend_weight", 0.25, 4.0, log=True)],
            "model.mmoe.bottom": trial.suggest_categorical("model.mmoe.bottom", ["lightgcn", "sage"]),
            "model.mmoe.lr": trial.suggest_float("model.mmoe.lr", 1e-3, 1e-2, log=True)}


class LLMOptions(Section):
    """The language-model family: graph as text (no training) or GNN embeddings as a soft prompt
    for the frozen MiniLM (only the projection trains)."""
    mode: Literal["text", "prefix"] = "prefix"
    bottom: Literal["lightgcn", "sage"] = Field("sage", description="prefix: the GNN whose embeddings it reads")
    prefix_tokens: int = Field(4, ge=1)
    max_tokens: int = Field(64, ge=8, description="profile tokens read after the prefix")
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=2, description="prefix mode: members per step, each with all their training jobs")
    members_per_epoch: Optional[int] = Field(
        20_000, ge=1, description="prefix mode: members an epoch reads through the transformer (a fresh seeded "
                                  "draw each epoch), so an epoch costs the same on any network; null: every member")
    temperature: float = Field(0.05, gt=0)
    negatives: int = Field(256, ge=1, description="random jobs added to each batch's softmax")
    max_friends: int = Field(5, ge=0, description="text: friends written into a member's text")
    max_items: int = Field(8, ge=0, description="text: jobs written into a member's text")
    max_chars: int = Field(600, ge=50)


# ---------------------------------------------------------------- the registry

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("lightgcn", "LightGCN: the mean of K propagation steps over ID embeddings (optionally with features)",
           "recsys.models.lightgcn:LightGCN", LightGCNOptions, lightgcn_space,
           reads_features=lambda m: m.lightgcn.use_features, proven=LIGHTGCN_PROVEN, recipe=LIGHTGCN_RECIPE),
    Family("gcn", "GCN: a weight matrix and LeakyReLU per layer over ID embeddings", "recsys.models.gcn:GCN",
           space=lightgcn_space),
    Family("sage", "GraphSAGE: sampled neighbourhoods aggregated from node features",
           "recsys.models.sage:GraphSAGE", SageOptions, sage_space, inductive="with features",
           reads_features=always),
    Family("pinsage", "PinSage: items convolved over random-walk neighbourhoods, users from their items",
           "recsys.models.pinsage:PinSage", PinSageOptions, pinsage_space, inductive="with features",
           reads_features=always, auto_steps=1024),
    Family("mf", "matrix factorisation: a learned vector per user and item, no propagation", "recsys.models.mf:MF",
           space=embedding_space),
    Family("filter", "a low-pass graph filter on the normalised item-item graph, fitted by one truncated SVD",
           "recsys.models.graph_filter:GraphFilter", FilterOptions, filter_space,
           train="recsys.filter_fit:train_filter", inductive="from items", auto_steps=None),
    Family("mmoe", "a GNN bottom for retrieval, then MMoE heads for job click and friend request",
           "", MMoEOptions, mmoe_space, train="recsys.multitask:train_family", inductive="as its bottom",
           reads_features=always, bottom=lambda m: m.mmoe.bottom,
           prepare="recsys.data.network_tasks:prepare_tasks", objective=lambda cfg: "mean_auc"),
    Family("llm", "a frozen MiniLM reading the graph as text, or GNN embeddings as its soft prompt",
           "", LLMOptions, train="recsys.llm_fit:train_family", reads_features=always, reads_text=True,
           bottom=lambda m: m.llm.bottom),
)}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown model family {name!r}; available: {', '.join(FAMILIES)}") from None


def of_model(model) -> Optional[Family]:
    """The family whose registered class built `model` (None for a model no entry names)."""
    path = f"{type(model).__module__}:{type(model).__name__}"
    return next((f for f in FAMILIES.values() if f.model == path), None)


def names() -> list[str]:
    return list(FAMILIES)


def searchable() -> list[str]:
    """The families a study can search (those with a space)."""
    return [name for name, f in FAMILIES.items() if f.space is not None]
