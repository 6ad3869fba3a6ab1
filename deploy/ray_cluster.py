"""The Ray that compute.trainer=ray trains on: an existing cluster (compute.ray.address), or a local
Ray started for the command and stopped with it.

A local Ray is this process's: `ray.init` starts its services (GCS, raylet, the workers) as
children that die with this process, Ray's own fate sharing (PR_SET_PDEATHSIG on Linux), so even
a `kill -9` of the command leaves no Ray process behind; a normal end, or an error, shuts it down
here. On a cluster the workers get this checkout's code through Ray's runtime environment
(docs/scale-out.md: what the machines need besides).
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
SHIPPED_NOT = [".git", ".graphrec", "mlruns", "bench/results", "**/__pycache__"]


@contextmanager
def ray_connection(settings, log: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Ray for the block: a local one sized for the workers, or the cluster at settings.address."""
    import ray

    if ray.is_initialized():  # the caller's own (a test's, a notebook's): used as it is
        yield
        return
    # the workers' output stays in Ray's log files (a worker's error comes back with its traceback);
    # what the command says of the training, it says itself (deploy/ray_train.py)
    options: dict = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if settings.address is None:
        # logical CPUs: the workers' and one for Ray Train's controller; the threads each worker runs
        # are compute.ray.cpus_per_worker whatever the machine has. The workers run at the command's
        # own priority, as a local training does (Ray's default, nice 15, starves them beside any
        # other work on the machine)
        options.update(num_cpus=settings.workers * settings.cpus_per_worker + 1,
                       num_gpus=int(settings.workers * settings.gpus_per_worker + 0.999),
                       _system_config={"worker_niceness": os.nice(0)})
        where = "a local Ray"
    else:
        options.update(address=settings.address,
                       runtime_env={"working_dir": str(REPO), "excludes": SHIPPED_NOT})
        where = f"the Ray cluster at {settings.address}"
    if log:
        log(f"training on {settings.workers} Ray workers ({where})")
    ray.init(**options)
    try:
        yield
    finally:
        ray.shutdown()
