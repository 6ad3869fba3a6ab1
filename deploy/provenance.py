"""Where a run came from, in the form MLflow's UI shows: the source commit as a run tag and the
data set as a dataset input (name, fingerprint as digest, schema, row counts).

Both are cheap on purpose: one `git` call per process, bounded by a timeout, and a schema read
from the first rows of the interactions (the fingerprint and counts describe the whole data)."""
from __future__ import annotations

import json
import os
import subprocess
import warnings
from functools import lru_cache
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_COMMIT

from recsys.config import DataConfig
from recsys.data.types import RecData

CHECKOUT = Path(__file__).resolve().parent.parent  # the folder holding deploy/ and recsys/
DIRTY = "graphrec.source_dirty"
SCHEMA_ROWS = 100


def source_tags(checkout: Path = CHECKOUT, timeout: float = 5.0) -> dict[str, str]:
    """`mlflow.source.git.commit` (and `graphrec.source_dirty=true` when tracked files differ from
    it) if the code runs from a git checkout; nothing otherwise (an installed package, no git,
    a slow or refusing git)."""
    return dict(_source_tags(str(checkout), timeout))


@lru_cache(maxsize=None)
def _source_tags(checkout: str, timeout: float) -> tuple[tuple[str, str], ...]:
    if not (Path(checkout) / ".git").exists():  # not a checkout of its own (e.g. inside site-packages)
        return ()
    # porcelain v2 with --branch gives the commit and the changed tracked files in one call; no
    # optional locks, so it never takes index.lock from under someone committing at that moment.
    cmd = ["git", "--no-optional-locks", "-C", checkout, "status", "--porcelain=v2", "--branch",
           "--untracked-files=no"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return ()
    if out.returncode != 0:
        return ()
    lines = out.stdout.splitlines()
    commit = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), "")
    if len(commit) < 40:  # "(initial)": a repository without commits
        return ()
    tags = [(MLFLOW_GIT_COMMIT, commit)]
    if any(not ln.startswith("#") for ln in lines if ln.strip()):
        tags.append((DIRTY, "true"))
    return tuple(tags)


def dataset_input(data: RecData, fingerprint: str, data_cfg: DataConfig) -> DatasetInput:
    """The interactions as an MLflow dataset input of a training run. The digest is graphrec's
    fingerprint of the whole data (ids, interactions, social edges); the schema comes from the
    first rows, the profile holds the real counts."""
    head = data.interactions.head(SCHEMA_ROWS)
    try:
        from mlflow.types.utils import _infer_schema

        with warnings.catch_warnings():  # its hint about integer columns is for model signatures
            warnings.simplefilter("ignore")
            schema = json.dumps({"mlflow_colspec": _infer_schema(head).to_dict()})
    except Exception:  # a column MLflow cannot type: the input is still worth logging without it
        schema = None
    profile = {"num_rows": len(data.interactions), **data.summary(),
               "columns": [str(c) for c in data.interactions.columns]}
    source_type, source = _source(data, data_cfg)
    dataset = Dataset(name=data.name, digest=fingerprint, source_type=source_type, source=source,
                      schema=schema, profile=json.dumps(profile))
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])


def _source(data: RecData, cfg: DataConfig) -> tuple[str, str]:
    """(source type, source JSON) in the forms MLflow's own dataset sources write."""
    path = cfg.interactions if cfg.source == "files" else cfg.path
    if path is not None:
        return "local", json.dumps({"uri": str(Path(path).resolve())})
    settings = cfg.synthetic.model_dump() if cfg.source == "synthetic" else {}
    tags = {"mlflow.source.name": f"recsys.data.{cfg.source}"}
    if settings:
        tags["graphrec.generator"] = ", ".join(f"{k}={v}" for k, v in settings.items())
    return "code", json.dumps({"tags": tags})
