"""The operations sections of a run's configuration: the promotion gates, the embedding refresh and
its item index, the schedules, where parallel work runs, the stores, and the hyperparameter search.
recsys/config.py assembles them with the data and training sections into RunConfig."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, field_validator

from recsys import families
from recsys.config_base import ConfigError, Section


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
    split: Literal["valid", "test"] = Field(
        "valid", description="the split the challenger and the champion are compared on; valid by default, "
                             "so test data never chooses what serves (every source has one: with_split)")
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


class RayConfig(Section):
    """compute.trainer=ray: the model trains on Ray Train workers (torch DDP; recsys/dist.py says what
    each worker computes and sends). docs/scale-out.md: running it on a cluster."""

    address: Optional[str] = Field(None, description="an existing Ray cluster (e.g. ray://10.0.0.5:10001 or "
                                                     "10.0.0.5:6379); none: a local Ray started by the command "
                                                     "and stopped with it")
    workers: int = Field(2, ge=1, description="training workers (one DDP rank each)")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs each worker holds (its torch threads)")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs each worker holds (NCCL between them); 0: CPU "
                                                        "workers (gloo)")
    max_failures: int = Field(1, ge=0, description="worker failures survived: the group restarts from the last "
                                                   "epoch's checkpoint")
    data: Literal["auto", "object_store", "artifacts"] = Field(
        "auto", description="how the prepared data reaches the workers: object_store (Ray's: shared memory on one "
                            "machine), artifacts (written once under the run in the artifact store, which every "
                            "machine of a cluster reaches, and read by each worker); auto: object_store for a "
                            "local Ray, artifacts with an address")


class ComputeConfig(Section):
    """Where the work runs: the layer mathematics (`device`), the model's training (`trainer`), the
    refresh's chunks and the search's trials."""

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N: where training, negative scoring, "
                                            "evaluation and the refresh's embedding run (auto: CUDA when torch "
                                            "sees a device); recorded on the run")
    trainer: Literal["local", "ray"] = Field("local", description="where the model trains: local (this process) "
                                                                  "or ray (Ray Train workers, compute.ray)")
    ray: RayConfig = Field(default_factory=RayConfig)
    runner: Literal["local", "dask"] = Field("local", description="dask: Prefect's DaskTaskRunner")
    workers: int = Field(2, ge=1, description="local Dask cluster: worker processes (one thread each)")
    address: Optional[str] = Field(None, description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786; "
                                                     "default: a local cluster started for the flow")
    threads: Union[Literal["auto"], int] = Field(
        "auto", description="threads of this process's work (torch, OpenMP, BLAS); auto: the CPUs it is given (its "
                            "affinity, capped by its cgroup's CPU quota). Workers it starts (Dask) share them")
    adapt_threads: bool = Field(True, description="while training, use fewer threads while other work holds the "
                                                  "cores (recsys/threads.py), and more again when it is gone")
    reuse_memory: bool = Field(True, description="while training, keep the memory a step frees for the next step "
                                                 "instead of handing it back to the kernel each time (glibc; a "
                                                 "faster epoch for a higher peak RSS, recsys/heap.py)")

    @field_validator("threads")
    @classmethod
    def _threads(cls, value):
        if value != "auto" and value < 1:
            raise ValueError("must be auto or a positive integer")
        return value

    @field_validator("device")
    @classmethod
    def _device_name(cls, name: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
            raise ValueError("choose auto, cpu, cuda or cuda:N")
        return name

    def check_device(self) -> None:
        """Refuse a device this machine does not have (ConfigError, exit 2) before anything starts:
        compute.device, and GPUs for local Ray workers."""
        from recsys.device import resolve_device

        resolve_device(self.device)
        if self.trainer == "ray" and self.ray.gpus_per_worker and self.ray.address is None:
            import torch

            have = torch.cuda.device_count()
            if have < self.ray.workers * self.ray.gpus_per_worker:
                raise ConfigError(f"compute.ray.gpus_per_worker={self.ray.gpus_per_worker} with "
                                  f"compute.ray.workers={self.ray.workers} asks for "
                                  f"{self.ray.workers * self.ray.gpus_per_worker:g} GPUs, but this machine has {have} "
                                  "and compute.ray.address names no cluster; set gpus_per_worker=0 or an address")


class StoresConfig(Section):
    root: Path = Path(".graphrec")
    tracking_uri: Optional[str] = Field(None, description="default: sqlite under root")
    artifact_location: Optional[str] = Field(None, description="default: root/artifacts")
    experiment: str = "graphrec"
    registered_model: str = Field("graphrec-recommender", description="letters, digits, '.', '_', '-'")
    snapshots: Optional[Path] = Field(None, description="default: root/snapshots")
    optuna_storage: Optional[str] = Field(None, description="an SQLAlchemy URL; default: sqlite under root")
    ui_port: int = Field(5000, ge=1, le=65535, description="where `graphrec ui` serves MLflow's UI, and the port "
                                                          "of the links graphrec prints (a tracking server's own "
                                                          "address when tracking_uri is http(s))")
    text_cache_dir: Optional[Path] = Field(
        None, description="sentence vectors of texts already encoded, by content; default: root/text_cache. Stores "
                          "may share one (writes replace its one file whole)")

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
        return (self.text_cache_dir or self.root / "text_cache").resolve()

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
    family: str = Field("lightgcn", description="a family with a search space (see `graphrec families`)")
    trials: int = Field(20, ge=1, description="the study's target of finished (complete or pruned) trials")
    timeout: Optional[float] = Field(None, gt=0, description="wall-clock seconds for this invocation's trials: "
                                                            "none starts later, one still training stops at its "
                                                            "next epoch end")
    families: list[str] = Field(default_factory=list, description="a joint study: these families compete for one "
                                "objective on validation, each trial drawing one (the parameter model.family) and "
                                "then its own space; `family` (trial 0's recipe) must be among them; empty: "
                                "`family` alone")
    study: Optional[str] = Field(None, description="default: <experiment>-<family> (a joint study: the families "
                                                   "joined by +)")
    seed: int = Field(0, description="TPE sampler seed")
    median_pruning: bool = Field(
        False, description="also prune a trial whose best validation figure is below the median of the other "
                           "trials' at the same epoch (Optuna's MedianPruner). Off: a trial's early figures "
                           "ranked the complete trials' final ones in reverse (rank correlation at epochs 4-16: "
                           "-0.15 to -0.64 on LastFM, -0.30 to -0.42 on ML-100K; slow starters finish best), so "
                           "the median kept the fast starters. On: more, shorter trials per hour "
                           "(bench/results/transfer.md)")
    pruner_startup_trials: int = Field(3, ge=0, description="median_pruning: trials completed before any is pruned "
                                       "(1: from the second trial on, against the configured recipe's curve)")
    pruner_warmup_epochs: int = Field(2, ge=0, description="median_pruning: epochs a trial runs before it may "
                                                            "be pruned")
    pace_stretch: Optional[float] = Field(
        2.0, gt=1, description="also prune, from the second trial on, a trial slower than the configured recipe "
                                "by more than this factor: at epoch e, its best validation figure is below the "
                                "best the recipe's trial had reached by epoch e / pace_stretch (none: off)")
    heartbeat_seconds: int = Field(30, ge=1, description="a trial's process records it is alive this often")
    grace_seconds: Optional[int] = Field(None, ge=1, description="silence after which a running trial is "
                                                                 "marked failed (default 2 x heartbeat)")
    runner: Literal["local", "prefect"] = Field("local", description="prefect: trials as Prefect tasks")
    workers: int = Field(1, ge=1, description="prefect runner: trials in flight at once")
    register_best: bool = Field(True, description="retrain the best trial, register it, run the gate")
    first_trial_configured: bool = Field(
        True, description="a new study's first trial is the configuration itself (its values of the space's "
                          "parameters), so the search's best is never below the recipe it starts from")
    first_trial_from: Optional[str] = Field(
        None, description="an MLflow run id: a finished run of the configured recipe on the same data (a retrain, "
                          "say the default one just trained) that a new study takes as its first trial, its "
                          "validation curve and per-user figures copied, instead of training the recipe again; "
                          "refused, naming what differs, unless its settings, data fingerprint and commit are "
                          "the search's. Chosen in the end, it is not retrained: it was trained and gated already")
    first_trial_store: Optional[str] = Field(
        None, description="first_trial_from's tracking URI when that run is not in this search's store "
                          "(stores.tracking_uri or stores.root)")
    neighbours_first: bool = Field(
        True, description="a new study queues, after the recipe, the recipe with one parameter moved one step "
                           "(every such neighbour, in a seeded order) before the sampler's own trials")
    proven_first: bool = Field(
        True, description="a new study tries, right after the recipe, the settings that beat the recipe in searches "
                          "on other data sets (the family's `proven` entries in recsys/families.py, each naming its "
                          "evidence; their trial runs are tagged graphrec.proven_on), then the neighbours")
    proven_pace_stretch: Optional[float] = Field(
        4.0, gt=0, description="the pace rule's factor for the proven settings (pace_stretch for the others; none: "
                               "never pruned by pace): looser, since settings that won elsewhere may learn slower "
                               "here and still end ahead (bench/results/proven.json)")
    proven_skip: list[str] = Field(
        default_factory=list, description="data sets whose proven settings are not tried: bench.transfer skips the "
                                          "data set it searches, so its row measures transfer to new data")
    min_gain_se: float = Field(
        1.0, ge=0, description="the best trial replaces the configured recipe (the study's first trial) only when "
                               "its validation objective beats the recipe's by more than this many standard errors "
                               "of the paired per-user difference; 0: the best trial, however small its lead")

    @field_validator("proven_skip")
    @classmethod
    def _known_data_sets(cls, names: list[str]) -> list[str]:
        known = {p.found_on for f in families.FAMILIES.values() for p in f.proven}
        if unknown := [n for n in names if n not in known]:
            raise ValueError(f"no proven settings were found on {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return names

    @field_validator("family")
    @classmethod
    def _searchable(cls, name: str) -> str:
        if name not in families.searchable():
            raise ValueError(f"no search space for this family; choose one of {', '.join(families.searchable())}")
        return name

    @field_validator("families")
    @classmethod
    def _all_searchable(cls, names: list[str], info) -> list[str]:
        if unknown := [n for n in names if n not in families.searchable()]:
            raise ValueError(f"no search space for {', '.join(unknown)}; "
                             f"choose from {', '.join(families.searchable())}")
        if names and info.data.get("family") not in names:
            raise ValueError(f"search.family ({info.data.get('family')}, trial 0's recipe) must be one of them")
        return list(dict.fromkeys(names))

    def searched(self) -> list[str]:
        """The families the study draws from."""
        return self.families or [self.family]

    def study_name(self, experiment: str) -> str:
        return self.study or f"{experiment}-{'+'.join(self.searched())}"
