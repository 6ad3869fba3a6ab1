"""MLflow tracking: the store, the run, per-epoch curves, plots and the logged model."""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from deploy.locks import FileLock
from deploy.provenance import dataset_input, source_tags
from deploy.pyfunc import BUNDLE, EMBEDDINGS, RecommenderModel, save_embeddings
from deploy.runs import OWNER, close_orphaned_runs, owner
from recsys.config import RunConfig
from recsys.config_ops import StoresConfig
from recsys.data.types import RecData
from recsys.device import describe, resolve_device

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def configure(stores: StoresConfig) -> str:
    """Point MLflow at the configured store; create the experiment if needed; return its id."""
    stores.root.mkdir(parents=True, exist_ok=True)
    uri = stores.resolved_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with _first_use_lock(uri):
        return _experiment_id(stores)


def _first_use_lock(uri: str):
    """Two processes opening a new SQLite store at once race on creating its tables: let the first
    one finish (it is quick, so no bound on the wait). A server database such as PostgreSQL
    handles this itself."""
    if not uri.startswith("sqlite:///"):
        return nullcontext()
    return FileLock(Path(uri[len("sqlite:///"):] + ".lock"))


# MLflow 3 opens an experiment without this tag on its GenAI pages (traces, prompts); graphrec's
# experiments are model training, whose page is the runs table.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def _experiment_id(stores: StoresConfig) -> str:
    client = MlflowClient()
    exp = client.get_experiment_by_name(stores.experiment)
    if exp is None:
        try:
            return client.create_experiment(stores.experiment, artifact_location=stores.resolved_artifact_location(),
                                            tags={EXPERIMENT_KIND: MODEL_TRAINING})
        except mlflow.exceptions.MlflowException:  # another process created it a moment ago
            exp = client.get_experiment_by_name(stores.experiment)
            if exp is None:
                raise
    if EXPERIMENT_KIND not in exp.tags:  # made by an older graphrec; a kind someone chose stays
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return exp.experiment_id


def start_run(cfg: RunConfig, data_summary: dict, fingerprint: str, run_name: Optional[str] = None,
              parent_run_id: Optional[str] = None, tags: Optional[dict[str, str]] = None,
              data: Optional[RecData] = None) -> str:
    """A run with the whole config as params; a child of `parent_run_id` if given (MLflow's UI
    nests it under the parent, e.g. a search trial under its study). Named `<family> · <data>-<
    fingerprint>` unless `run_name` is given; tagged with the source commit; given `data`, the data
    set is the run's dataset input."""
    experiment_id = configure(cfg.stores)
    if parent_run_id is None:  # once per command, not once per search trial
        close_orphaned_runs(experiment_id)
    from mlflow.tracking.context.registry import resolve_tags

    client = MlflowClient()
    all_tags = {
        **resolve_tags(),  # MLflow's own: mlflow.user, mlflow.source.name and .type (the UI's Created by, Source)
        OWNER: owner(),
        "graphrec.model_family": cfg.model.family,
        "graphrec.data_source": cfg.data.source,
        "graphrec.data_fingerprint": fingerprint,
        "graphrec.device": describe(resolve_device(cfg.compute.device)),  # compute.device resolved (auto)
        **source_tags(),
        **(tags or {}),
    }
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if run_name is None:
        run_name = f"{cfg.model.family} · {data.name if data is not None else cfg.data.source}-{fingerprint[:6]}"
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    if data is not None:
        client.log_inputs(run.info.run_id, datasets=[dataset_input(data, fingerprint, cfg.data)])
    params = {k: ("None" if v is None else str(v))[:500] for k, v in cfg.flat().items()}
    params.update({f"data.{k}": str(v) for k, v in data_summary.items()})
    params["data.fingerprint"] = fingerprint
    items = list(params.items())
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in items[start:start + 100]])
    return run.info.run_id


def name_run_for_version(run_id: str, version: str) -> str:
    """Add the registered version to the run's name (`lightgcn · synthetic-3f2a1c · v7`)."""
    client = MlflowClient()
    name = client.get_run(run_id).info.run_name or ""
    suffix = f" · v{version}"
    if not name.endswith(suffix):
        name = f"{name}{suffix}" if name else suffix[3:]
        client.update_run(run_id, name=name)
    return name


class EpochLogger:
    """Training callback (recsys.train.Callback): every epoch's figures become MLflow metrics with
    step = epoch, their names after `prefix` (a training stage: "head_", "prefix_")."""

    def __init__(self, run_id: str, prefix: str = ""):
        self.run_id, self.prefix = run_id, prefix
        self.client = MlflowClient()

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(self.prefix + metric_key(key), float(v), now, epoch) for key, v in logs.items()]
        self.client.log_batch(self.run_id, metrics=metrics)


def metric_key(name: str) -> str:
    """MLflow metric names allow no '@'; recall@20 is logged as recall_at_20."""
    return name.replace("@", "_at_")


def log_phase_figures(run_id: str, seconds: dict[str, float], peak_rss_mb: dict[str, float]) -> None:
    """How long each phase of the retraining flow took and its peak resident memory, as metrics
    `phase_<name>_seconds` and `phase_<name>_peak_rss_mb`."""
    now = int(time.time() * 1000)
    metrics = [Metric(f"phase_{name}_seconds", float(v), now, 0) for name, v in seconds.items()]
    metrics += [Metric(f"phase_{name}_peak_rss_mb", float(v), now, 0) for name, v in peak_rss_mb.items()]
    MlflowClient().log_batch(run_id, metrics=metrics)


def metric_history(run_id: str, key: str) -> list[float]:
    """A run's values of one metric in step order (e.g. `epoch_seconds`, one per epoch); [] if never logged."""
    return [m.value for m in sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)]


def run_figures(run_id: str) -> dict:
    """A run's params, (latest) metrics and tags: {"params": {...}, "metrics": {...}, "tags": {...}}."""
    run = MlflowClient().get_run(run_id)
    return {"params": dict(run.data.params), "metrics": dict(run.data.metrics), "tags": dict(run.data.tags)}


def log_results(run_id: str, history: list[dict], metrics: dict[str, dict[str, float]],
                extra: dict[str, float], recipe: Optional[dict] = None) -> None:
    """Final metrics per split, the settings trained with (`recipe`, the train settings with `auto`
    resolved, as params `train_used.<key>`), the training-curve plot and a metrics table as artifacts.
    A final figure shares its key with the per-epoch curve (`valid_ndcg_at_20`), so it is logged one
    step after the last epoch: the value MLflow shows for the run (runs table, compare page) is the
    chosen model's, the one the gates judge, and the curve ends on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = MlflowClient()
    now = int(time.time() * 1000)
    final = max((int(h["epoch"]) for h in history), default=0) + 1
    flat = [Metric(metric_key(f"{split}_{k}"), float(v), now, final) for split, m in metrics.items()
            for k, v in m.items()]
    flat += [Metric(k, float(v), now, 0) for k, v in extra.items()]
    params = [mlflow.entities.Param(f"train_used.{k}", str(v)) for k, v in (recipe or {}).items()]
    client.log_batch(run_id, metrics=flat, params=params)

    table = pd.DataFrame(metrics).T.rename_axis("split").reset_index()
    client.log_table(run_id, data=table, artifact_file="metrics/metrics_table.json")
    client.log_text(run_id, _markdown_table(table), "metrics/metrics_table.md")
    if not history or "loss" not in history[0]:  # no gradient steps: the llm's graph-as-text, the graph filter
        return
    hist = pd.DataFrame(history)
    valid_cols = [c for c in hist.columns if c.startswith("valid_ndcg@") or c.startswith("valid_recall@")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(hist["epoch"], hist["loss"], label="BPR loss")
    axes[0].plot(hist["epoch"], hist["reg_loss"], label="L2 term")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("training loss")
    axes[0].legend()
    for col in valid_cols:
        points = hist[["epoch", col]].dropna()
        axes[1].plot(points["epoch"], points[col], marker="o", label=col)
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation metrics")
    if valid_cols:
        axes[1].legend()
    fig.tight_layout()
    client.log_figure(run_id, fig, "plots/training_curves.png")
    plt.close(fig)


def log_multitask(run_id: str, heads, head_kind: str) -> None:
    """AUC per split and task, the gate-utilisation heatmap (MMoE) and the head's weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from recsys.data.network_tasks import TASKS

    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"{split}_auc_{task}", float(v), now, 0)
                                      for split, m in heads.aucs.items() for task, v in m.items()]
                         + [Metric(metric_key(f"test_friend_{k}"), float(v), now, 0)
                            for k, v in heads.friend_ranking.items()])
    client.set_tag(run_id, "graphrec.head", head_kind)
    if heads.gates is not None:
        fig, ax = plt.subplots(figsize=(3.0 + 0.7 * heads.gates.shape[1], 2.8))
        im = ax.imshow(heads.gates, cmap="viridis", vmin=0, vmax=max(float(heads.gates.max()), 1e-6))
        ax.set_yticks(range(len(TASKS)), TASKS)
        ax.set_xticks(range(heads.gates.shape[1]), [f"e{e}" for e in range(heads.gates.shape[1])])
        for (t, e), v in np.ndenumerate(heads.gates):
            ax.text(e, t, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_title("mean gate weight (test rows)", fontsize=10)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        client.log_figure(run_id, fig, "plots/gate_utilisation.png")
        plt.close(fig)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.pt"
        torch.save(heads.model.head.state_dict(), path)
        client.log_artifact(run_id, str(path), "multitask")


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def log_and_register_model(
    run_id: str,
    registered_name: str,
    user_ids, user_vectors, item_ids, item_vectors, seen_pairs: np.ndarray,
    version_tags: Optional[dict[str, str]] = None,
    bundle=None,
    gate_vectors=None,
) -> str:
    """Log the pyfunc (signature and input example included) and register it; return the version.
    `bundle` (recsys.inductive.Bundle) makes the model embed unseen users at predict time;
    `gate_vectors` (deploy.pyfunc.save_embeddings) are what the promotion gates score.

    The model is logged from code (deploy/model_code.py) with copies of the modules it imports and
    its requirements pinned to the installed versions: `mlflow models serve` and
    `mlflow.pyfunc.load_model` work where graphrec is not installed, and nothing is pickled."""
    from deploy.pyfunc import MODEL_CODE, requirements, stage_code

    with tempfile.TemporaryDirectory() as tmp:
        path = save_embeddings(Path(tmp) / "embeddings.npz", user_ids, user_vectors, item_ids, item_vectors, seen_pairs,
                               gate_vectors)
        artifacts = {EMBEDDINGS: str(path)}
        if bundle is not None:
            artifacts[BUNDLE] = str(bundle.save(Path(tmp) / "bundle"))
        code_paths = stage_code(Path(tmp) / "code", inductive=bundle is not None)
        model = RecommenderModel().load(str(path))
        example = pd.DataFrame({"user_id": np.asarray(user_ids).astype(str)[:3]})
        signature = infer_signature(example, model.predict(None, example, {"k": 10}), params={"k": 10})
        if bundle is not None:
            signature = _with_optional_profile(signature, bundle)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                code_paths=code_paths,
                artifacts=artifacts,
                signature=signature,
                input_example=example,
                pip_requirements=requirements(bundle),
                registered_model_name=registered_name,
            )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in (version_tags or {}).items():
        client.set_model_version_tag(registered_name, version, key, value)
    return version


def _with_optional_profile(signature, bundle):
    """Inputs for inductive models: user_id, plus optional profile columns, items and friends."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    cols = [ColSpec("string", "user_id")]
    enc = bundle.user_encoder
    for col in (enc.spec.columns() if enc else []):
        kind = "double" if col in enc.spec.numeric else "string"
        cols.append(ColSpec(kind, col, required=False))
    cols += [ColSpec(Array("string"), "items", required=False), ColSpec(Array("string"), "friends", required=False)]
    return ModelSignature(inputs=Schema(cols), outputs=signature.outputs, params=signature.params)


def load_registered(registered_name: str, alias_or_version: str) -> RecommenderModel:
    """The python model behind `models:/name@alias` (or a version number).

    Loading puts the version's `code/` folder first on sys.path; here graphrec's own `deploy` and
    `recsys` are already imported and serve the model, so the path is put back as it was (a long
    process loads many versions, each from a temporary folder)."""
    import sys

    ref = f"@{alias_or_version}" if not str(alias_or_version).isdigit() else f"/{alias_or_version}"
    path = list(sys.path)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{registered_name}{ref}")
    finally:
        sys.path[:] = path
    return loaded.unwrap_python_model()


def run_link(run_id: str, stores: StoresConfig) -> str:
    """The run's page in MLflow's UI (`graphrec ui`, or the tracking server's own)."""
    from deploy.tracking_ui import page_url, ui_base

    run = MlflowClient().get_run(run_id)
    return page_url(ui_base(stores), run.info.experiment_id, run_id)
