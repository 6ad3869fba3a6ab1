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
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from recsys import families
from recsys.config_base import ConfigError, Section


class SyntheticConfig(Section):
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


class SplitConfig(Section):
    kind: Literal["temporal", "random"] = "temporal"
    valid_fraction: float = Field(0.1, ge=0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0, lt=0.5)
    cold_user_fraction: float = Field(0.0, ge=0, lt=0.5, description="users held out of training entirely")
    cold_item_fraction: float = Field(0.0, ge=0, lt=0.5, description="items held out of training entirely")
    seed: int = 0


class DataConfig(Section):
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


class ValidationConfig(Section):
    min_interactions_per_user: int = Field(3, ge=1)
    timestamp_min: Optional[int] = Field(0, description="unix seconds; None to skip")
    timestamp_max: Optional[int] = Field(4102444800, description="unix seconds (2100-01-01)")
    max_feature_null_fraction: float = Field(0.5, ge=0, le=1, description="per feature column")
    report_examples: int = Field(5, ge=1)
    test_only_ids: Literal["warn", "fail"] = Field(
        "warn", description="ids that occur only in a source's own held-out rows (e.g. only in test.txt): "
                            "warn reports them and keeps them as users/items; fail refuses the data")


class ColdStartConfig(Section):
    enabled: bool = False
    k: int = Field(10, ge=1, description="at most k heuristic edges per cold node")
    user_attributes: Optional[list[str]] = Field(
        None, description="user columns to match on; default: the users table's categorical columns")


class GraphConfig(Section):
    social_edges: bool = False
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig)


class FeaturesConfig(Section):
    enabled: bool = True
    text: bool = Field(True, description="encode text columns with all-MiniLM-L6-v2")
    max_categories: int = Field(64, ge=1)


class _ModelSection(Section):
    family: str = Field("lightgcn", description="a family of recsys/families.py")
    dim: int = Field(64, ge=1)
    layers: int = Field(3, ge=0, description="lightgcn, gcn and pinsage; sage takes len(sage.fanouts)")
    score: Literal["dot", "cosine"] = Field("dot", description="cosine: embeddings scaled to unit length")

    @field_validator("family")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in families.FAMILIES:
            raise ValueError(f"unknown model family; choose one of {', '.join(families.FAMILIES)}")
        return name


# The model section: the shared keys above and each family's own options, model.<family>.
ModelConfig = create_model("ModelConfig", __base__=_ModelSection, **{
    f.name: (f.options, Field(default_factory=f.options)) for f in families.FAMILIES.values() if f.options})


class NegativesConfig(Section):
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


class TrainConfig(Section):
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


class EvalConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [10, 20])
    chunk_size: int = Field(1024, ge=1, description="users scored at once; bounds peak memory")

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(ks))


class EmbeddingGateConfig(Section):
    min_norm: float = Field(1e-6, ge=0, description="smallest L2 norm a served vector may have")
    max_norm: float = Field(1e4, gt=0, description="largest L2 norm a served vector may have")


class CanaryConfig(Section):
    users: int = Field(200, ge=1, description="users sampled for the canary recommendations")
    k: int = Field(20, ge=1)
    seed: int = 0


class DataDriftConfig(Section):
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


class ReferenceGateConfig(Section):
    """The metric gate also scores challenger and champion on the champion's own evaluation users
    (a seeded sample recorded with every registered version)."""

    enabled: bool = True
    users: int = Field(1000, ge=1, description="evaluation users recorded with each version (seeded sample of "
                                               "the users with targets in promotion.split)")
    min_coverage: float = Field(0.9, ge=0, le=1, description="share of the champion's evaluation users the "
                                                              "challenger must hold vectors for")
    seed: int = 0


class PromotionConfig(Section):
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


class AnnConfig(Section):
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


class RefreshConfig(Section):
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


class ScheduleConfig(Section):
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


class ComputeConfig(Section):
    """Where the parallel parts run: the refresh's chunks and the search's trials."""

    runner: Literal["local", "dask"] = Field("local", description="dask: Prefect's DaskTaskRunner")
    workers: int = Field(2, ge=1, description="local Dask cluster: worker processes (one thread each)")
    address: Optional[str] = Field(None, description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786; "
                                                     "default: a local cluster started for the flow")


class StoresConfig(Section):
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


class SearchConfig(Section):
    family: str = Field("lightgcn", description="a family with a search space (recsys/families.py)")
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

    @field_validator("family")
    @classmethod
    def _searchable(cls, name: str) -> str:
        if name not in families.searchable():
            raise ValueError(f"no search space for this family; choose one of {', '.join(families.searchable())}")
        return name

    def study_name(self, experiment: str) -> str:
        return self.study or f"{experiment}-{self.family}"


class RunConfig(Section):
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
