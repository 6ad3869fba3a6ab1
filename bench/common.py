"""Harness: what every benchmark records beside its figures and how it writes them, the stages it keeps
for --resume, and settings several benches share."""
from __future__ import annotations

import json
import os
import platform
import resource
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED_DATA = Path(os.environ.get("GRAPHREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


# The training settings the flow used by default before LightGCN got its own recipe (issue 21): the
# benches recorded before then (retrain_scale, the gpu bench's reference and scale stages) keep them.
UNIFORM_RECIPE = {"epochs": 40, "lr": 0.005, "l2": 1e-4, "average": None,
                  "negatives": {"kind": "uniform", "per_positive": 1}}
# The public data sets as the quality benches (transfer, filter) load and split them: configuration
# settings per name. 10 LastFM users have fewer than 3 artists, which the default validation refuses.
PUBLIC_SETS = {
    "gowalla": ["data.source=gowalla", f"data.path={SHARED_DATA / 'gowalla'}"],
    "lastfm": ["data.source=lastfm", f"data.path={SHARED_DATA / 'lastfm'}", "validation.min_interactions_per_user=1"],
    "ml-100k": ["data.source=ml-100k", f"data.path={SHARED_DATA / 'ml-100k'}", "data.split.kind=random",
                "data.split.valid_fraction=0.1", "data.split.test_fraction=0.2"],
}
UNIFORM_SETS = ["train.lr=0.005", "train.l2=0.0001", "train.average=null", "train.negatives.kind=uniform",
                "train.negatives.per_positive=1"]
def command(bench: str, argv: list[str] | None) -> str:
    """The command line that ran `bench` (argv: main's own, else the process's)."""
    import sys

    return f"./dev.sh python -m bench.{bench} " + " ".join(sys.argv[1:] if argv is None else argv)


def code_version() -> str:
    """The commit the code ran at ("+changes" where recsys/, deploy/ or flows/ differ from it), or "-"
    outside a git checkout."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        return (head + ("+changes" if git("status", "--porcelain", "--", "recsys", "deploy", "flows") else "")) or "-"
    except (OSError, subprocess.SubprocessError):
        return "-"


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1),
            "python": platform.python_version(), "system": platform.platform()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def previous(name: str, key: str, default=None):
    """`key` of the results bench/results/<name>.json holds already (`default` where there are none)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()).get(key, default) if path.is_file() else default


def write_results(name: str, figures: dict, table_rows: list[tuple], title: str, notes: str = "",
                  header: tuple = ("figure", "value")) -> Path:
    """bench/results/<name>.json (figures + date, machine, threads) and a Markdown table beside it."""
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {**figures, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "threads": torch.get_num_threads()}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    where = record["machine"]
    lines = [f"# {title}", "", f"{record['date']} on {where['cpu']} "
             f"({where['cores']} cores, {where['memory_gb']} GB), torch threads {record['threads']}",
             "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table_rows]
    if notes:
        lines += ["", notes]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path


class Stages:
    """Finished stages of a bench kept in bench/results/.cache/<name>_stages.json, so that --resume
    repeats only what did not finish (a stage is reused only with the same inputs)."""

    def __init__(self, name: str, resume: bool):
        self.path = RESULTS / ".cache" / f"{name}_stages.json"
        self.done = json.loads(self.path.read_text()) if resume and self.path.exists() else {}

    def run(self, key: str, inputs: dict, fn):
        kept = self.done.get(key)
        if kept and kept["inputs"] == inputs:
            print(f"[{key}] reused from {self.path}", flush=True)
            return kept["output"]
        print(f"[{key}] running {inputs}", flush=True)
        output = fn()
        print(f"[{key}] {json.dumps({k: v for k, v in output.items() if 'curve' not in k})}", flush=True)
        self.done[key] = {"inputs": inputs, "output": output}
        # the file keeps the stages of earlier or concurrent invocations too; only --resume reads them
        kept = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({**kept, **self.done}, indent=1))
        return output


def log_bench_run(name: str, params: dict, steps: list[tuple[int, dict]], files: dict[str, Path]) -> None:
    """The bench's run in MLflow (the project's default store, .graphrec/mlflow.db; experiment
    graphrec-bench): its params, metrics by step, and files as artifacts under their folders."""
    import mlflow

    store = Path(__file__).resolve().parents[1] / ".graphrec"
    store.mkdir(exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("graphrec-bench")
    with mlflow.start_run(run_name=name):
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for step, metrics in steps:
            mlflow.log_metrics(metrics, step=step)
        for path, folder in files.items():
            mlflow.log_artifact(str(path), folder)


def growth_ratio(x, y, size_x, size_y, digits: int = 2):
    """(cost ratio) / (size ratio) from one size to a larger one: 1.0 grows linearly; None without a base."""
    if not x or not size_x or not size_y:
        return None
    return round((y / x) / (size_y / size_x), digits)


def mean_epoch_seconds(history: list[dict]) -> float:
    return sum(h["epoch_seconds"] for h in history) / len(history)


def paired_recall(sets: list[str], first: Path, second: Path) -> dict:
    """Test recall@20 of the models two stores roots serve (their CURRENT snapshots), user by user on
    the same users: the vectors ranked as the retraining flow ranks test (training and validation
    pairs masked, every user with test pairs) on the data `sets` configure, so each mean is that
    run's own test figure; the second's lead comes with the standard error of the paired per-user
    difference. The same root twice ranks once."""
    import numpy as np
    import pandas as pd

    from deploy.snapshot import Snapshot
    from recsys.config import load_config
    from recsys.data.loaders import load_data, with_split
    from recsys.metrics import evaluate_per_user

    cfg = load_config(None, sets)
    indexed = with_split(load_data(cfg.data), cfg.data).indexed()
    recall = {}
    for root in dict.fromkeys((first, second)):
        snapshot = Snapshot.open(root / "snapshots")
        users = snapshot.user_ids.get_indexer(indexed.user_ids)
        items = pd.Index(snapshot.item_ids).get_indexer(indexed.item_ids)
        if (users < 0).any() or (items < 0).any():
            raise ValueError(f"the snapshot in {root} lacks users or items of the data: not this data's model")
        _, values = evaluate_per_user(np.asarray(snapshot.user_vectors)[users],
                                      np.asarray(snapshot.item_vectors)[items], indexed.test,
                                      indexed.seen_before("test"), **cfg.eval.ranking())
        recall[root] = values["recall@20"]
    diff = recall[second] - recall[first]
    se = float(diff.std(ddof=1) / len(diff) ** 0.5) if len(diff) > 1 else 0.0
    return {"users": len(diff), "first": round(float(recall[first].mean()), 5),
            "second": round(float(recall[second].mean()), 5), "second_minus_first": round(float(diff.mean()), 5),
            "se": round(se, 5), "z": round(float(diff.mean()) / se, 2) if se > 0 else None}
