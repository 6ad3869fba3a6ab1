"""The one configuration of a graphrec run: a pydantic model loaded from YAML, overridable by
`key=value` strings. Defaults give the embedded setup (synthetic data, everything under
`.graphrec/`). Unknown keys and bad values are refused with the key's name and what is allowed.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(_Section):
    n_users: int = Field(2000, ge=10)
    n_items: int = Field(800, ge=10)
    n_universities: int = Field(12, ge=1)
    n_companies: int = Field(40, ge=1)
    mean_interactions: float = Field(18.0, gt=2)
    friends_per_user: float = Field(8.0, ge=0)
    cold_user_fraction: float = Field(0.05, ge=0, lt=1)
    cold_item_fraction: float = Field(0.05, ge=0, lt=1)
    seed: int = 0
    candidates: Optional[int] = Field(None, ge=10, description="views drawn from this many random jobs per block "
                                                                "of members (large catalogues)")


class SplitConfig(_Section):
    kind: Literal["temporal", "random"] = "temporal"
    valid_fraction: float = Field(0.1, ge=0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0, lt=0.5)
    cold_user_fraction: float = Field(0.0, ge=0, lt=0.5, description="users held out of training entirely")
    cold_item_fraction: float = Field(0.0, ge=0, lt=0.5, description="items held out of training entirely")
    seed: int = 0


class DataConfig(_Section):
    source: Literal["synthetic", "gowalla", "ml-100k", "lastfm", "files"] = "synthetic"
    path: Optional[Path] = Field(None, description="folder of a gowalla / ml-100k / lastfm data set")
    interactions: Optional[Path] = Field(None, description="files: CSV or Parquet of interactions")
    users: Optional[Path] = None
    items: Optional[Path] = None
    social: Optional[Path] = None
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="files: rename map from your column names to user_id/item_id/timestamp/event; timestamps "
                    "may be Unix seconds, Unix milliseconds (numbers from 10^11 up) or ISO-8601 text",
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)


class ValidationConfig(_Section):
    min_interactions_per_user: int = Field(3, ge=1)
    timestamp_min: Optional[int] = Field(0, description="unix seconds; None to skip")
    timestamp_max: Optional[int] = Field(4102444800, description="unix seconds (2100-01-01)")
    max_feature_null_fraction: float = Field(0.5, ge=0, le=1, description="per feature column")
    report_examples: int = Field(5, ge=1)
    test_only_ids: Literal["warn", "fail"] = Field(
        "warn", description="ids that occur only in a source's own held-out rows (e.g. only in test.txt): "
                            "warn reports them and keeps them as users/items; fail refuses the data")


class ColdStartConfig(_Section):
    enabled: bool = False
    k: int = Field(10, ge=1, description="at most k heuristic edges per cold node")
    user_attributes: Optional[list[str]] = Field(
        None, description="user columns to match on; default: the users table's categorical columns")


class GraphConfig(_Section):
    social_edges: bool = False
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig)


class FeaturesConfig(_Section):
    enabled: bool = True
    text: bool = Field(True, description="encode text columns with all-MiniLM-L6-v2")
    max_categories: int = Field(64, ge=1)


class LightGCNOptions(_Section):
    use_features: bool = Field(False, description="the W + ReLU variant over ID embeddings and features")
    transform: bool = Field(False, description="W + ReLU per layer even without features (implied by use_features)")


def lightgcn_space(trial) -> dict[str, Any]:
    """Optuna search space for LightGCN (and GCN): depth, width, optimiser, negatives."""
    space = {"model.layers": trial.suggest_int("model.layers", 1, 4),
             "model.dim": trial.suggest_categorical("model.dim", [32, 64, 128]),
             "train.lr": trial.suggest_float("train.lr", 1e-3, 2e-2, log=True),
             "train.l2": trial.suggest_float("train.l2", 1e-6, 1e-3, log=True),
             "train.negatives.per_positive": trial.suggest_categorical("train.negatives.per_positive", [1, 4]),
             "train.negatives.kind": trial.suggest_categorical("train.negatives.kind",
                                                               ["uniform", "popularity", "model", "ppr"])}
    kind = space["train.negatives.kind"]
    if kind == "popularity":
        space["train.negatives.popularity_exponent"] = trial.suggest_float("train.negatives.popularity_exponent", 0, 1)
    elif kind == "model":
        space["train.negatives.candidates"] = trial.suggest_categorical("train.negatives.candidates", [8, 16, 32, 64])
        space["train.negatives.temperature"] = trial.suggest_float("train.negatives.temperature", 0.1, 2.0, log=True)
    elif kind == "ppr":
        low = trial.suggest_float("train.negatives.band_low", 0.01, 0.2, log=True)
        space["train.negatives.band"] = [low, min(1.0, 2.5 * low)]
    return space


class SageOptions(_Section):
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


class PinSageOptions(_Section):
    num_neighbors: int = Field(10, ge=1, description="T: most-visited items kept as neighbours")
    num_walks: int = Field(50, ge=1)
    restart_prob: float = Field(0.5, gt=0, le=1)
    num_traversals: int = Field(3, ge=1)
    margin: float = Field(0.5, ge=0)
    pooling: Literal["importance", "mean", "uniform"] = Field(
        "importance", description="importance: random-walk neighbours weighted by visit counts; mean: the "
                                  "same neighbours, equal weights; uniform: T items drawn uniformly from the "
                                  "2-hop item-user-item neighbourhood, equal weights")


def pinsage_space(trial) -> dict[str, Any]:
    """PinSage: T neighbours, walks, restart probability, depth, width."""
    return {"model.pinsage.num_neighbors": trial.suggest_int("model.pinsage.num_neighbors", 3, 20),
            "model.pinsage.num_walks": trial.suggest_categorical("model.pinsage.num_walks", [20, 50, 100]),
            "model.pinsage.restart_prob": trial.suggest_float("model.pinsage.restart_prob", 0.2, 0.8),
            "model.layers": trial.suggest_int("model.layers", 1, 3),
            "model.dim": trial.suggest_categorical("model.dim", [32, 64, 128]),
            "train.lr": trial.suggest_float("train.lr", 1e-3, 2e-2, log=True)}


class MMoEOptions(_Section):
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


class LLMOptions(_Section):
    """The language-model family: graph as text (no training) or GNN embeddings as a soft prompt
    for the frozen MiniLM (only the projection trains)."""
    mode: Literal["text", "prefix"] = "prefix"
    bottom: Literal["lightgcn", "sage"] = Field("sage", description="prefix: the GNN whose embeddings it reads")
    prefix_tokens: int = Field(4, ge=1)
    max_tokens: int = Field(64, ge=8, description="profile tokens read after the prefix")
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=2, description="prefix mode: members per step, each with all their training jobs")
    temperature: float = Field(0.05, gt=0)
    negatives: int = Field(256, ge=1, description="random jobs added to each batch's softmax")
    max_friends: int = Field(5, ge=0, description="text: friends written into a member's text")
    max_items: int = Field(8, ge=0, description="text: jobs written into a member's text")
    max_chars: int = Field(600, ge=50)


class ModelConfig(_Section):
    family: Literal["lightgcn", "gcn", "sage", "pinsage", "mmoe", "llm"] = "lightgcn"
    dim: int = Field(64, ge=1)
    layers: int = Field(3, ge=0, description="lightgcn, gcn and pinsage; sage takes len(sage.fanouts)")
    score: Literal["dot", "cosine"] = Field("dot", description="cosine: embeddings scaled to unit length")
    lightgcn: LightGCNOptions = Field(default_factory=LightGCNOptions)
    sage: SageOptions = Field(default_factory=SageOptions)
    pinsage: PinSageOptions = Field(default_factory=PinSageOptions)
    mmoe: MMoEOptions = Field(default_factory=MMoEOptions)
    llm: LLMOptions = Field(default_factory=LLMOptions)


class NegativesConfig(_Section):
    kind: Literal["uniform", "popularity", "in_batch", "model", "ppr"] = "uniform"
    per_positive: int = Field(1, ge=1, description="negatives drawn per positive (ppr: set by its curriculum)")
    popularity_exponent: float = Field(0.75, ge=0)
    candidates: int = Field(32, ge=1, description="model: uniform candidates scored per positive")
    temperature: Optional[float] = Field(None, gt=0, description="model: None keeps the hardest candidate")
    max_score_percentile: Optional[float] = Field(None, gt=0, le=100, description="model: false-negative guard")
    refresh_every: int = Field(10, ge=1, description="model: batches between score refreshes")
    band: list[float] = Field(default_factory=lambda: [0.05, 0.12], description="ppr: rank band, catalogue fractions")
    pool_size: int = Field(32, ge=1)
    ppr_alpha: float = Field(0.15, gt=0, lt=1)
    ppr_iterations: int = Field(10, ge=1)
    curriculum: bool = True
    max_hard: int = Field(3, ge=0)

    @field_validator("band")
    @classmethod
    def _band(cls, band: list[float]) -> list[float]:
        if len(band) != 2 or not 0 <= band[0] < band[1] <= 1:
            raise ValueError("band must be [low, high] with 0 <= low < high <= 1 (fractions of the catalogue)")
        return band


class TrainConfig(_Section):
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(2048, ge=1)
    lr: float = Field(0.005, gt=0)
    lr_milestones: list[int] = Field(default_factory=list, description="epochs after which lr is multiplied "
                                                                      "by lr_gamma")
    lr_gamma: float = Field(0.1, gt=0, le=1)
    l2: float = Field(1e-4, ge=0)
    eval_every: int = Field(2, ge=1)
    patience: int = Field(5, ge=1, description="evaluations without improvement before stopping")
    monitor: str = "ndcg@20"
    seed: int = 0
    threads: Optional[int] = Field(None, ge=1, description="torch threads; None keeps torch's default")
    progress: bool = True
    loss: Literal["bpr", "softmax"] = Field("bpr", description="bpr (PinSage: hinge) or sampled softmax")
    temperature: float = Field(0.1, gt=0, description="softmax: logits are scores / temperature")
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)


class EvalConfig(_Section):
    ks: list[int] = Field(default_factory=lambda: [10, 20])
    chunk_size: int = Field(1024, ge=1, description="users scored at once; bounds peak memory")

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(ks))


class EmbeddingGateConfig(_Section):
    min_norm: float = Field(1e-6, ge=0, description="smallest L2 norm a served vector may have")
    max_norm: float = Field(1e4, gt=0, description="largest L2 norm a served vector may have")


class CanaryConfig(_Section):
    users: int = Field(200, ge=1, description="users sampled for the canary recommendations")
    k: int = Field(20, ge=1)
    seed: int = 0


class DataDriftConfig(_Section):
    """Today's data against the champion's, before anything trains: counts of active users, items
    and interaction rows, the share of the champion's users and items still present, and
    interactions per user (median, 90th percentile). A figure outside its bounds stops the flow
    (exit 3) unless `allow` is set (`graphrec retrain --allow-shrink`), which is recorded on the run."""

    enabled: bool = True
    min_ratio: float = Field(0.5, ge=0, description="today's / champion's active users, items and interactions: "
                                                     "at least this (a drop beyond it stops the flow)")
    max_ratio: float = Field(2.0, gt=0, description="... and at most this (a jump beyond it stops the flow)")
    min_kept: float = Field(0.5, ge=0, le=1, description="share of the champion's active users, and of its items, "
                                                         "that today's data still holds")
    per_user_min_ratio: float = Field(0.5, ge=0, description="today's / champion's median and 90th percentile "
                                                              "of interactions per user: at least this")
    per_user_max_ratio: float = Field(2.0, gt=0, description="... and at most this")
    allow: bool = Field(False, description="report figures beyond the bounds but train anyway (recorded on the "
                                           "run as tag data_drift.allowed)")


class ReferenceGateConfig(_Section):
    """The metric gate also scores challenger and champion on the champion's own evaluation users
    (a seeded sample recorded with every registered version)."""

    enabled: bool = True
    users: int = Field(1000, ge=1, description="evaluation users recorded with each version (seeded sample of "
                                               "the users with targets in promotion.split)")
    min_coverage: float = Field(0.9, ge=0, le=1, description="share of the champion's evaluation users the "
                                                              "challenger must hold vectors for")
    seed: int = 0


class PromotionConfig(_Section):
    """A challenger becomes champion only if every gate passes: metric, embedding, canary. Before
    training, today's data is compared with the champion's (`data_drift`)."""

    metric: str = "ndcg@20"
    split: Literal["valid", "test"] = "test"
    tolerance: float = Field(0.0, ge=0, description="pass if challenger >= champion - tolerance (same split, "
                                                     "champion re-scored on today's data)")
    embedding: EmbeddingGateConfig = Field(default_factory=EmbeddingGateConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    data_drift: DataDriftConfig = Field(default_factory=DataDriftConfig)
    reference: ReferenceGateConfig = Field(default_factory=ReferenceGateConfig)


class AnnConfig(_Section):
    """The item index a snapshot serves from (faiss, inner product)."""

    kind: Literal["auto", "exact", "hnsw", "ivf"] = Field(
        "auto", description="auto: exact below `exact_below` items, HNSW above")
    exact_below: int = Field(50_000, ge=0)
    hnsw_m: int = Field(32, ge=4, description="HNSW links per node")
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(256, ge=8)
    ivf_lists: Optional[int] = Field(None, ge=1, description="IVF cells; default 4 * sqrt(items)")
    nprobe: int = Field(16, ge=1)
    recall_sample: int = Field(1000, ge=1, description="users whose ANN top-10 is checked against exact search")


class RefreshConfig(_Section):
    """The batch embedding refresh: chunked, partitioned, indexed, retained."""

    chunk_rows: int = Field(131_072, ge=1, description="vectors computed and written per Parquet part")
    keep: int = Field(5, ge=1, description="snapshots kept (CURRENT is always kept)")
    lock_timeout: float = Field(600.0, ge=0, description="seconds to wait for a running refresh; 0 refuses at once")
    threads: Optional[int] = Field(None, ge=1, description="faiss / torch threads; default all cores")
    version: Optional[str] = Field(None, description="refresh from this registered version instead of the champion")
    ann: AnnConfig = Field(default_factory=AnnConfig)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value):
        return str(value) if isinstance(value, int) else value


class ScheduleConfig(_Section):
    """`graphrec serve`: the retrain and refresh deployments and their cron schedules."""

    name: str = Field("graphrec", description="prefix of the deployment names")
    retrain_cron: str = Field("0 3 * * *", description="cron for the retrain flow (default 03:00 daily)")
    refresh_cron: Optional[str] = Field("0 * * * *", description="cron for refresh only (default hourly); "
                                                                 "null: no refresh deployment")
    timezone: str = "UTC"

    @field_validator("retrain_cron", "refresh_cron")
    @classmethod
    def _cron(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and len(value.split()) not in (5, 6):
            raise ValueError(f"{value!r} is not a cron expression (5 fields: minute hour day month weekday)")
        return value


class ComputeConfig(_Section):
    """Where the parallel parts run: the refresh's chunks and the search's trials."""

    runner: Literal["local", "dask"] = Field("local", description="dask: Prefect's DaskTaskRunner")
    workers: int = Field(2, ge=1, description="local Dask cluster: worker processes (one thread each)")
    address: Optional[str] = Field(None, description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786; "
                                                     "default: a local cluster started for the flow")


class StoresConfig(_Section):
    root: Path = Path(".graphrec")
    tracking_uri: Optional[str] = Field(None, description="default: sqlite under root")
    artifact_location: Optional[str] = Field(None, description="default: root/artifacts")
    experiment: str = "graphrec"
    registered_model: str = Field("graphrec-recommender", description="letters, digits, '.', '_', '-'")
    snapshots: Optional[Path] = Field(None, description="default: root/snapshots")
    optuna_storage: Optional[str] = Field(None, description="an SQLAlchemy URL; default: sqlite under root")

    @field_validator("registered_model")
    @classmethod
    def _model_name(cls, name: str) -> str:
        if not MODEL_NAME.fullmatch(name):
            raise ValueError("not a usable registered-model name: use letters, digits, '.', '_' and '-', starting "
                             "with a letter or digit, at most 200 characters (e.g. graphrec-recommender)")
        return name

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    def check_tracking_folder(self) -> Optional[Path]:
        """The SQLite database file of the tracking URI (None for other stores); refuses a
        configured SQLite URI whose folder does not exist (the default one's folder is made)."""
        uri = self.resolved_tracking_uri()
        if not uri.startswith("sqlite:///"):
            return None
        db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
        if self.tracking_uri is not None and not db.parent.is_dir():
            raise ConfigError(f"stores.tracking_uri={self.tracking_uri!r}: the folder {db.parent} does not exist; "
                              "create it, or point stores.tracking_uri at an existing folder")
        return db

    def check_writable(self) -> None:
        """Refuse, before anything runs, a store graphrec could not write: a read-only root (or
        snapshots folder), or an SQLite tracking URI whose folder is missing or read-only. MLflow
        and Prefect would otherwise fail deep inside ("readonly database", "unable to open")."""
        _writable_folder(self.root, "stores.root")
        for sub in ("prefect", "artifacts", "snapshots"):
            if (self.root / sub).is_dir():
                _writable_folder(self.root / sub, "stores.root")
        if self.snapshots is not None:
            _writable_folder(self.snapshots, "stores.snapshots")
        db = self.check_tracking_folder()
        if db is not None:
            if db.parent.is_dir():
                _writable_folder(db.parent, "stores.tracking_uri" if self.tracking_uri else "stores.root")
            if db.is_file():
                try:
                    open(db, "r+b").close()
                except OSError as exc:
                    raise ConfigError(f"the MLflow database {db} cannot be written ({exc.strerror}); make it writable "
                                      "or point stores.root / stores.tracking_uri elsewhere") from None

    def resolved_artifact_location(self) -> str:
        return self.artifact_location or (self.root / "artifacts").resolve().as_uri()

    def text_cache(self) -> Path:
        return (self.root / "text_cache").resolve()

    def resolved_optuna_storage(self) -> str:
        if self.optuna_storage:
            return self.optuna_storage
        self.root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.root / 'optuna.db').resolve()}"

    def resolved_snapshots(self) -> Path:
        return (self.snapshots or self.root / "snapshots").resolve()


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _writable_folder(folder: Path, key: str) -> None:
    """A file can be created in `folder` (or, if it does not exist yet, in its nearest existing
    parent, where it would be made). Tried for real: permission bits alone miss read-only mounts."""
    probe = Path(folder)
    try:
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            raise ConfigError(f"{key}: {probe} is a file, not a folder; point {key} at a folder")
        handle, name = tempfile.mkstemp(prefix=".graphrec-write-test-", dir=probe)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        made = "" if probe == Path(folder) else f" (where {folder} would be created)"
        raise ConfigError(f"{key}: the folder {probe}{made} is not writable ({exc.strerror}); graphrec keeps its "
                          f"MLflow store, Prefect state and snapshots there: make it writable or set {key} to "
                          "another folder") from None


class SearchConfig(_Section):
    family: Literal["lightgcn", "gcn", "sage", "pinsage", "mmoe"] = "lightgcn"
    trials: int = Field(20, ge=1, description="the study's target of finished (complete or pruned) trials")
    timeout: Optional[float] = Field(None, gt=0, description="seconds for this invocation")
    study: Optional[str] = Field(None, description="default: <experiment>-<family>")
    seed: int = Field(0, description="TPE sampler seed")
    pruner_startup_trials: int = Field(3, ge=0, description="trials finished before any is pruned")
    pruner_warmup_epochs: int = Field(2, ge=0, description="epochs a trial runs before it may be pruned")
    heartbeat_seconds: int = Field(30, ge=1, description="a trial's process records it is alive this often")
    grace_seconds: Optional[int] = Field(None, ge=1, description="silence after which a running trial is "
                                                                 "marked failed (default 2 x heartbeat)")
    runner: Literal["local", "prefect"] = Field("local", description="prefect: trials as Prefect tasks")
    workers: int = Field(1, ge=1, description="prefect runner: trials in flight at once")
    register_best: bool = Field(True, description="retrain the best trial, register it, run the gate")

    def study_name(self, experiment: str) -> str:
        return self.study or f"{experiment}-{self.family}"


class RunConfig(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    refresh: RefreshConfig = Field(default_factory=RefreshConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    stores: StoresConfig = Field(default_factory=StoresConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    def flat(self) -> dict[str, Any]:
        """Dotted keys to plain values, e.g. {'model.dim': 64} (for logging as params)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = str(value) if isinstance(value, Path) else value

        walk("", self.model_dump(mode="json"))
        return out


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        section = _section_at(error["loc"][:-1])
        allowed = ", ".join(section.model_fields) if section else "?"
        return f"unknown key '{key}'; allowed here: {allowed}"
    allowed = ""
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        allowed = f" (allowed: {ctx['expected']})"
    message = error["msg"].removeprefix("Value error, ")
    return f"'{key}': {message}{allowed}; got {error.get('input')!r}"


def _section_at(loc: tuple) -> Optional[type[BaseModel]]:
    model: Any = RunConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def load_config(path: Optional[str | Path] = None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (if given), apply `key=value` overrides (values parsed as YAML), validate."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            raise ConfigError(f"config file {path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} "
                              f"at offset {exc.start} "
                              f"(line {line}, column {column}); save it as UTF-8") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
        tree = loaded
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. train.epochs=10")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    source = f" ({path})" if path is not None else ""
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise _invalid([_describe(e) for e in exc.errors()], source) from None
    problems = cross_key_problems(cfg)
    if problems:
        raise _invalid(problems, source)
    return cfg


RANKING_METRICS = ("recall", "ndcg", "precision", "hit")


def computed_metrics(ks: list[int]) -> list[str]:
    """The names the evaluation computes for these K's (recsys.metrics.evaluate_scores)."""
    return [f"{m}@{k}" for k in sorted(ks) for m in RANKING_METRICS]


def cross_key_problems(cfg: RunConfig) -> list[str]:
    """Keys whose allowed values depend on other keys: the metric that training monitors and the
    one the promotion gate compares must be among those the evaluation computes (eval.ks)."""
    names = computed_metrics(cfg.eval.ks)
    problems = []
    for key, value in (("train.monitor", cfg.train.monitor), ("promotion.metric", cfg.promotion.metric)):
        if value in names:
            continue
        metric, _, k = value.partition("@")
        hint = (f" (or add {k} to eval.ks={cfg.eval.ks})" if metric in RANKING_METRICS and k.isdigit() and int(k) > 0
                else f" (a metric is one of {', '.join(RANKING_METRICS)}, '@', a K from eval.ks)")
        problems.append(f"{key}={value!r} is not computed; choose one of {names}{hint}")
    return problems


def _invalid(lines: list[str], source: str = "") -> ConfigError:
    """One line per problem, the first on the first line."""
    return ConfigError(f"invalid configuration{source}: " + "\n  ".join(lines))


SEARCH_SPACES = {"lightgcn": lightgcn_space, "gcn": lightgcn_space, "sage": sage_space, "pinsage": pinsage_space,
                 "mmoe": mmoe_space}


def with_overrides(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A copy of cfg with dotted keys set (e.g. from a search trial), validated again."""
    tree = cfg.model_dump()
    for key, value in values.items():
        _set_dotted(tree, key, value)
    try:
        out = RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise _invalid([_describe(e) for e in exc.errors()]) from None
    problems = cross_key_problems(out)
    if problems:
        raise _invalid(problems)
    return out
