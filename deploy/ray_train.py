"""compute.trainer=ray: the family's training on Ray Train workers (torch DDP inside).

`train_on_ray` is what the flow's train task calls instead of recsys.fit.train. It sends the prepared
data and the warm-start state to the workers once, by the route `compute.ray.data` names
(`data_route`): through Ray's object store (a local Ray: workers on the same machine read it from
shared memory), or through the run's artifact store (a cluster: written once, as a pickle under the
run's `ray_data/`, read by every worker, deleted when training ends; the store is a shared one there,
and the data does not sit in the driver's object store memory or die with the driver). It starts
Ray Train's TorchTrainer with `compute.ray.workers` workers (gloo between CPU workers, NCCL between
GPU ones) and waits for it. Every worker runs recsys.fit.train, the same code as a local training,
as one rank of the group (recsys/dist.py: what each computes and sends). Rank 0 logs every epoch
to the flow's MLflow run, as a local training does, with the seconds spent in collectives and the
bytes sent; each epoch ends with a checkpoint of the loop (recsys.train_state.loop_state), so a
group restarted after a worker died (`compute.ray.max_failures`) goes on from the last epoch. The
trained result comes back in the last checkpoint, its graphs left out (the flow has them).
"""
from __future__ import annotations

import io
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from recsys.graph.build import RecGraph

TRAINED = "trained.pkl"
LOOPS = "loops.pt"
DATA, BUNDLE = "ray_data", "bundle.pkl"  # the artifacts route: the run's folder for the data, and its file


class RayTrainingFailed(RuntimeError):
    """The Ray workers failed more often than compute.ray.max_failures allows; the message says why."""


def train_on_ray(prepared, cfg, run_id: str, warm=None, why: str = "", log: Optional[Callable[[str], None]] = None):
    """recsys.fit.train on Ray Train workers; the rank 0 worker's Trained, with the flow's graphs."""
    import mlflow
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from deploy.ray_cluster import ray_connection

    settings = cfg.compute.ray
    gpus = settings.gpus_per_worker
    storage = Path(tempfile.mkdtemp(prefix="ray-train-", dir=cfg.stores.root))
    route, client = data_route(settings), mlflow.MlflowClient()
    try:
        with ray_connection(settings, log):
            started = time.perf_counter()
            bundle = send({"prepared": prepared, "warm": warm}, route, run_id)
            client.log_param(run_id, "ray_data", route)
            client.log_metric(run_id, "ray_data_send_seconds", time.perf_counter() - started)
            resources = {"CPU": settings.cpus_per_worker, **({"GPU": gpus} if gpus else {})}
            trainer = TorchTrainer(
                _worker_loop,
                train_loop_config={"bundle": bundle, "cfg": cfg.model_dump(mode="json"), "run_id": run_id,
                                   "why": why, "tracking_uri": cfg.stores.resolved_tracking_uri(),
                                   "threads": settings.cpus_per_worker},
                scaling_config=ScalingConfig(num_workers=settings.workers, use_gpu=bool(gpus),
                                             resources_per_worker=resources),
                torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
                run_config=RunConfig(name="graphrec", storage_path=str(storage),
                                     failure_config=FailureConfig(max_failures=settings.max_failures),
                                     checkpoint_config=CheckpointConfig(num_to_keep=1)))
            try:
                result = trainer.fit()
            except Exception as e:  # Ray's own error names the worker's exception and its traceback
                raise RayTrainingFailed(_first_line(e)) from e
            if result.error is not None or result.checkpoint is None:
                raise RayTrainingFailed(_first_line(result.error or "the workers reported no result"))
            with result.checkpoint.as_directory() as folder:
                trained = _load_trained(Path(folder) / TRAINED, prepared, cfg)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if route == "artifacts":
            forget(run_id, log)
    if log:
        start = trained.start
        log(f"trained on {settings.workers} Ray workers, "
            + ("from scratch: " + start.reason if start.mode == "scratch" else "from " + start.reason)
            + f"; {trained.result.epochs_run} epochs, best at {trained.result.best_epoch}")
    return trained


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: recsys.fit.train as a rank of the group, then rank 0's result reported."""
    import mlflow
    import ray
    import ray.train

    from deploy.tracking import EpochLogger
    from recsys.config import RunConfig
    from recsys.dist import Worker, training_as
    from recsys.fit import train
    from recsys.train import no_callbacks

    torch.set_num_threads(int(config["threads"]))
    mlflow.set_tracking_uri(config["tracking_uri"])
    cfg = RunConfig.model_validate(config["cfg"])
    started = time.perf_counter()
    bundle = receive(config["bundle"])
    received = time.perf_counter() - started
    checkpoint = RayCheckpoint()
    worker = Worker.current(checkpoint, restarts=checkpoint.restarts)
    checkpoint.worker = worker
    run_id = config["run_id"]

    def callbacks(stage: str) -> list:
        return [EpochLogger(run_id, prefix=stage)] if worker.leads else no_callbacks(stage)

    with training_as(worker):
        trained = train(bundle["prepared"], cfg, callbacks, warm=bundle["warm"], why=config["why"])
    if worker.leads:
        client = mlflow.MlflowClient()
        for key, value in (("ray_workers", worker.world), ("ray_restarts", worker.restarts)):
            client.log_param(run_id, key, value)
        client.log_metric(run_id, "ray_data_receive_seconds", received)
    with tempfile.TemporaryDirectory() as folder:
        if worker.leads:
            _save_trained(trained, bundle["prepared"].graph, Path(folder) / TRAINED)
        ray.train.report({"finished": 1}, checkpoint=ray.train.Checkpoint.from_directory(folder)
                         if worker.leads else None)


def data_route(settings) -> str:
    """How the prepared data reaches the workers: compute.ray.data, `auto` made concrete (the object
    store for a local Ray, the run's artifacts on a cluster)."""
    if settings.data != "auto":
        return settings.data
    return "object_store" if settings.address is None else "artifacts"


def send(bundle: dict, route: str, run_id: str) -> dict:
    """Where the workers find `bundle` (`receive` reads it): a reference into Ray's object store, or
    the run whose artifacts hold it."""
    if route == "object_store":
        import ray

        return {"route": route, "ref": ray.put(bundle)}  # inside a dict: Ray hands a task the reference
    import mlflow

    with tempfile.TemporaryDirectory(prefix="graphrec-ray-data-") as folder:
        path = Path(folder) / BUNDLE
        with open(path, "wb") as f:
            pickle.dump(bundle, f, protocol=pickle.HIGHEST_PROTOCOL)
        mlflow.MlflowClient().log_artifact(run_id, str(path), DATA)
    return {"route": route, "run_id": run_id}


def receive(source: dict) -> dict:
    """The bundle `send` sent, in a worker."""
    if source["route"] == "object_store":
        import ray

        return ray.get(source["ref"])
    import mlflow

    with tempfile.TemporaryDirectory(prefix="graphrec-ray-data-") as folder:
        path = mlflow.artifacts.download_artifacts(run_id=source["run_id"], artifact_path=f"{DATA}/{BUNDLE}",
                                                   dst_path=folder)
        with open(path, "rb") as f:
            return pickle.load(f)


def forget(run_id: str, log: Optional[Callable[[str], None]] = None) -> None:
    """The data the artifacts route wrote under the run, deleted (it is a copy of the prepared data)."""
    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        repository = get_artifact_repository(mlflow.MlflowClient().get_run(run_id).info.artifact_uri)
        repository.delete_artifacts(DATA)
    except Exception as e:  # a store that cannot delete keeps the copy; training's result stands
        if log:
            log(f"the workers' copy of the data stays under the run's {DATA}/ ({_first_line(e)})")


class RayCheckpoint:
    """recsys.train_state.LoopCheckpoint through Ray Train: after every epoch every worker reports
    (Ray's barrier), rank 0 with every stage's loop state so far, copied to the run's storage while
    training goes on; a group started again reads the latest. `restarts`: how many starts before
    this one found a checkpoint."""

    def __init__(self):
        import ray.train

        self.worker = None
        self.loops: dict[str, dict] = {}
        self.restarts = 0
        found = ray.train.get_checkpoint()
        if found is not None:
            with found.as_directory() as folder:
                saved = torch.load(Path(folder) / LOOPS, map_location="cpu", weights_only=False)
            self.loops, self.restarts = saved["loops"], saved["restarts"] + 1

    def load(self, stage: str) -> Optional[dict]:
        return self.loops.get(stage)

    def due(self) -> bool:
        return True  # every worker reports every epoch: Ray's barrier

    def save(self, stage: str, state: dict) -> None:
        import ray.train

        self.loops[stage] = state
        metrics = {"stage": stage, "epoch": state["epoch"]}
        if self.worker is not None and not self.worker.leads:
            ray.train.report(metrics)
            return
        folder = tempfile.mkdtemp(prefix="graphrec-loop-")  # Ray copies it to the run's storage, then deletes it
        torch.save({"loops": self.loops, "restarts": self.restarts}, Path(folder) / LOOPS)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                         checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC)  # training goes on meanwhile


class _Pickler(pickle.Pickler):
    """Pickles a Trained without its graphs: the training graph and the refit's are named instead."""

    def __init__(self, file, graph: RecGraph):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.graph = graph

    def persistent_id(self, obj):
        if isinstance(obj, RecGraph):
            return "graph" if obj is self.graph else "refit graph"
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, prepared, cfg):
        super().__init__(file)
        self.prepared, self.cfg, self.refit = prepared, cfg, None

    def persistent_load(self, pid):
        if pid == "graph":
            return self.prepared.graph
        if self.refit is None:  # the refit's graph, built again over the same pairs
            from recsys.prepare import with_validation_trained

            self.refit = with_validation_trained(self.prepared, self.cfg).graph
        return self.refit


def _save_trained(trained, graph: RecGraph, path: Path) -> None:
    buffer = io.BytesIO()
    _Pickler(buffer, graph).dump(trained)
    path.write_bytes(buffer.getvalue())


def _load_trained(path: Path, prepared, cfg):
    with open(path, "rb") as f:
        return _Unpickler(f, prepared, cfg).load()


def _first_line(error) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), lines[-1] if lines
                else type(error).__name__)
    return last.strip()[:500]
