"""Task runners from the config: threads in this process, or Dask (a local cluster of worker
processes, or an existing scheduler)."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from recsys.config_ops import ComputeConfig


def task_runner(compute: ComputeConfig, workers: int | None = None):
    workers = workers or compute.workers
    if compute.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if compute.address:
            return DaskTaskRunner(address=compute.address)
        from recsys.threads import worker_environment

        # each worker process takes its share of this process's threads, not all of them
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None,
                                              "env": worker_environment(workers, compute.threads)})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=workers)


@task(cache_policy=NO_CACHE)
def run_chunk(fn, chunk):
    return fn(chunk)


def map_on_runner(fn, chunks: list) -> list:
    """[fn(c) for c in chunks], each a task on the current flow's task runner; results in order."""
    futures = [run_chunk.submit(fn, c) for c in chunks]
    return [f.result() for f in futures]
