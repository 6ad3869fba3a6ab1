"""How the prepared data reaches Ray Train workers (issue 45, compute.ray.data), both routes side by
side on the synthetic network (bench/synthetic.py) at --members: deploy/ray_train.py's `send` in this
process (the flow's driver) and its `receive` in a Ray task of one CPU (a worker), on a local Ray.

  object_store  ray.put once; a worker on the same machine reads the shared-memory copy (on a
                cluster each other machine would first pull it over the network)
  artifacts     one pickle written under an MLflow run's ray_data/ (here a local folder store; on
                a cluster the shared store: S3, GCS, NFS), downloaded and read by the worker, then
                deleted

Figures per route: the bundle's size (one pickle of the prepared data), the seconds to send and to
receive, and the peak RSS of this process; and the seconds to prepare the data (load + graph) for
scale, since every retrain pays that before either route. The prepared data grows linearly with
the log (it is the interaction arrays, the graph's edge arrays and the features).

    python -m bench.ray_data [--members 100000 1000000] [--work DIR]
"""
from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

from bench.common import command, log_bench_run, peak_rss_mb, write_results
from bench.synthetic import network_files

SETS = ["graph.social_edges=true", "features.text=false", "validation.min_interactions_per_user=1",
        "compute.ray.workers=1", "compute.ray.cpus_per_worker=1"]


def received(source: dict, tracking_uri: str) -> float:
    """In a Ray worker: seconds to receive the bundle `source` points at."""
    import mlflow

    from deploy.ray_train import receive

    mlflow.set_tracking_uri(tracking_uri)
    started = time.perf_counter()
    bundle = receive(source)
    seconds = time.perf_counter() - started
    assert bundle["prepared"].indexed.n_users > 0
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--work", type=Path, default=Path("/tmp/graphrec-ray-data"))
    p.add_argument("--name", default="ray_data")
    args = p.parse_args(argv)
    import mlflow
    import ray

    from deploy.ray_cluster import ray_connection
    from deploy.ray_train import forget, send
    from deploy.tracking import configure
    from recsys.config import load_config
    from recsys.data.loaders import load_data
    from recsys.prepare import prepare

    (args.work / "logs").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    remote = ray.remote(num_cpus=1)(received)
    for members in args.members:
        files, counts = network_files(members, args.work)
        cfg = load_config(None, [f"stores.root={args.work / 'store'}", "data.source=files",
                                 *(f"data.{k}={v}" for k, v in files.items()), *SETS])
        started = time.perf_counter()
        prepared = prepare(load_data(cfg.data), cfg)
        prepare_seconds = time.perf_counter() - started
        bundle = {"prepared": prepared, "warm": None}
        size = len(pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL))
        configure(cfg.stores)
        client = mlflow.MlflowClient()
        run_id = client.create_run(mlflow.set_experiment("graphrec-ray-data").experiment_id).info.run_id
        with ray_connection(cfg.compute.ray):
            for route in ("object_store", "artifacts"):
                started = time.perf_counter()
                source = send(bundle, route, run_id)
                sent = time.perf_counter() - started
                seconds = ray.get(remote.remote(source, cfg.stores.resolved_tracking_uri()))
                if route == "artifacts":
                    forget(run_id)
                del source
                rows.append({"route": route, "members": members, "interactions": counts["interactions"],
                             "bytes": size, "send_seconds": round(sent, 2), "receive_seconds": round(seconds, 2),
                             "prepare_seconds": round(prepare_seconds, 1)})
        client.set_terminated(run_id)
        del prepared, bundle
    figures = {"rows": rows, "peak_rss_mb": round(peak_rss_mb()), "command": command("ray_data", argv)}
    table = [(r["route"], f"{r['members']:,}", f"{r['bytes'] / 1e6:,.0f}", r["send_seconds"], r["receive_seconds"],
              r["prepare_seconds"]) for r in rows]
    notes = (f"This process's peak RSS {figures['peak_rss_mb']} MB. Both routes carry the same bundle; the "
             "module's text says what each step is. prepare s: loading the data and building the graph, which "
             "every retrain pays before either route.")
    path = write_results(args.name, figures, table, "The prepared data to the Ray workers", notes,
                         header=("route", "members", "MB", "send s", "receive s (a worker)", "prepare s"))
    log_bench_run(args.name, {"members": " ".join(map(str, args.members))}, [], {path: "results"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
