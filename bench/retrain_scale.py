"""Retraining cost against the size of the network (issue 19, item 1).

The synthetic professional network (recsys.data.synthetic.generate, bench/refresh.py's settings:
200k jobs, 200 universities, 2,000 companies, 10 interactions per member on average, each block of
members viewing 4,096 random candidate jobs, friendships) is generated once per size as Parquet
files. Then each (family, size) runs in a fresh process through the real retraining flow,
flows.retrain.retrain_flow on a Prefect server of that process's own, with a store of its own
(emptied first, so every run is the first: the drift check is skipped and the model is promoted):
load -> validate (Great Expectations) -> drift -> build graph -> train to its budget (train.epochs,
early stopping on validation NDCG@20) -> evaluate -> register -> promote -> refresh. Settings:
`data.source=files`, `graph.social_edges=true` (friendships are graph edges), features on without
text (`features.text=false`: categorical and numeric columns only, for speed at scale; text encoding
is then no part of any phase; `--set features.text=true` puts it back, in the build_graph phase),
`train.threads=2`, `refresh.threads=2`, `train.progress=false`, the rest the configuration's
defaults. Families that read no features (LightGCN by default, GCN, MF) get none computed.

One row per (family, size, settings): members, interactions (all rows, and the training rows of
the temporal split), friendships, the flow's seconds per phase (its result's `phase_seconds`, also
on the MLflow run as `phase_<name>_seconds`), the flow's seconds end to end, seconds per epoch (mean
of the run's `epoch_seconds`, the ranking loop's; for `llm` the prefix stage's
`prefix_epoch_seconds`, with the seconds of the train phase outside any epoch, mostly text
encoding, as `text_encoding_seconds`; for `mmoe` the heads' `head_epoch_seconds` beside the
bottom's), epochs run, best epoch, peak RSS of that process (bench.common.peak_rss_mb; the Prefect
server is a process apart) and test recall@20 / NDCG@20. Between consecutive sizes of a family the
cost ratio is (epoch seconds ratio) / (interactions ratio): 1.0 grows linearly, 1.3 is the goal's
bound; the same ratio is given per phase and for the whole flow, which shows a phase that grows
faster than the data. A child that fails, is killed (out of memory) or runs past --timeout gives a
row with its error and the tail of its log (kept under the work folder).

Goals on this machine (2 cores, 24 GiB), from the issue: the 1M-member retrain end to end <= 60 min
and <= 16 GiB with the LightGCN family; seconds per epoch grow at most 1.3x linearly with
interactions, from 100k to 1M members for LightGCN, GCN, GraphSAGE, PinSage and MF, and from 100k
to 300k for MMoE and the LLM prefix (text encoding time reported apart).

Results: bench/results/<name>.json (rows, ratios, goals; rows of earlier invocations are kept and
rows of the same family, size and settings replaced, so families can be measured one at a time),
<name>.md and <name>_epoch_seconds.png (log-log: seconds per epoch against interactions, a line per
family).

    # LightGCN to its budget, 100k, 300k and 1M members (the goal's end-to-end run)
    OMP_WAIT_POLICY=PASSIVE ./dev.sh python -m bench.retrain_scale --work ~/graphrec-scale
    # epoch timing of the other families: two epochs each
    OMP_WAIT_POLICY=PASSIVE ./dev.sh python -m bench.retrain_scale --work ~/graphrec-scale \\
        --families gcn sage pinsage mf --epochs 2
    OMP_WAIT_POLICY=PASSIVE ./dev.sh python -m bench.retrain_scale --work ~/graphrec-scale \\
        --families mmoe llm --sizes 100000 300000 --epochs 2
    # bounded steps per epoch (issue 19's train.max_steps_per_epoch), recorded in the row's settings
    ./dev.sh python -m bench.retrain_scale --work ~/graphrec-scale --set train.max_steps_per_epoch=64
    # the exact per-batch mode's quality at 100k against the default's, same budget (lightgcn_100k_vs_exact)
    ./dev.sh python -m bench.retrain_scale --work ~/graphrec-scale --sizes 100000 --epochs 10
    ./dev.sh python -m bench.retrain_scale --work ~/graphrec-scale --sizes 100000 --epochs 10 \\
        --set train.max_steps_per_epoch=null
    # what the exact per-batch mode (batches of train.batch_size) costs: 20 steps per size, scaled to an epoch
    ./dev.sh python -m bench.retrain_scale --work ~/graphrec-scale --probe-steps 20
    # a family's default mode, probed where a whole epoch at 1M members is long: 8 steps per size
    OMP_WAIT_POLICY=PASSIVE ./dev.sh python -m bench.retrain_scale --work ~/graphrec-scale \\
        --sizes 100000 1000000 --families sage pinsage --probe-steps 8 --probe-mode configured
    # a quick check on small sizes
    ./dev.sh python -m bench.retrain_scale --sizes 5000 10000 --families lightgcn mf --epochs 2 \\
        --name retrain_scale_smoke

--work keeps the generated files (reused when their network settings match) and each run's store
and log; without it a temporary folder is used and removed. The runs share one text cache under it
(stores.text_cache_dir), so texts are encoded once per work folder: the first run that reads them
carries the encoding in its text_encoding_seconds.

Probes (--probe-steps N, results key exact_probe) run N optimiser steps of one mode on a size's data
instead of the flow and scale them to an epoch; a probe of the family's default mode stands for its
epoch in the growth goal where no flow row exists at the larger size. OMP_WAIT_POLICY=PASSIVE (set for the
children unless given) stops torch's idle OpenMP threads from spinning on 2 shared cores.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import RESULTS, UNIFORM_SETS, peak_rss_mb, write_results
from bench.refresh import NETWORK

ROOT = Path(__file__).resolve().parents[1]
SIZES = [100_000, 300_000, 1_000_000]
FILES = ("interactions", "users", "items", "social")
PHASES = ("load", "validate", "drift", "build_graph", "start_run", "record_profile", "train", "evaluate",
          "register", "promote", "refresh")
STAGES = {"": "epoch_seconds", "head": "head_epoch_seconds", "prefix": "prefix_epoch_seconds"}
GOAL_RATIO = 1.3
GOAL_SIZES = {"lightgcn": (100_000, 1_000_000), "gcn": (100_000, 1_000_000), "sage": (100_000, 1_000_000),
              "pinsage": (100_000, 1_000_000), "mf": (100_000, 1_000_000), "mmoe": (100_000, 300_000),
              "llm": (100_000, 300_000)}


# ---------------------------------------------------------------- settings

def base_settings(threads: int) -> list[str]:
    return ["data.source=files", "graph.social_edges=true", "features.enabled=true", "features.text=false",
            f"train.threads={threads}", f"refresh.threads={threads}", "train.progress=false", *UNIFORM_SETS]


def run_overrides(store: Path, files: dict, family: str, args, work: Path) -> list[str]:
    """A child's configuration: its own store, the size's files, the bench's settings, the work
    folder's shared text cache, the family, then --set."""
    return [f"stores.root={store}", *(f"data.{k}={v}" for k, v in files.items()), *base_settings(args.threads),
            f"stores.text_cache_dir={work / 'text_cache'}", f"model.family={family}", *args.set]


def step_mode(train_cfg, family: str) -> str:
    """"bounded" where train.max_steps_per_epoch bounds the family's steps (its registry entry's
    auto_steps under auto), else "per-batch"."""
    from recsys.recipe import resolve

    return "per-batch" if resolve(train_cfg, family).max_steps_per_epoch is None else "bounded"


def bench_settings(args) -> list[str]:
    """What distinguishes one measurement of a family and size from another: --epochs, --set, and
    any change of the threads."""
    sets = list(args.set)
    if args.epochs is not None:
        sets.append(f"train.epochs={args.epochs}")
    if args.threads != 2:
        sets.append(f"threads={args.threads}")
    return sorted(sets)


def row_key(row: dict) -> tuple:
    return row["family"], int(row["members"]), " ".join(row["settings"])


def run_dir_name(family: str, size: int, settings: list[str]) -> str:
    digest = hashlib.sha1(" ".join(settings).encode()).hexdigest()[:8]
    return f"{family}-{size}-{digest}"


# ---------------------------------------------------------------- child processes, every wait bounded

def run_bounded(argv: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[int | None, float]:
    """Run argv (a session of its own, output to `log`); (return code or None on timeout, seconds).
    Past `timeout` the whole process group is sent SIGTERM, then SIGKILL 60 s later. Ctrl-C here
    ends the group too."""
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            code = None
        except BaseException:
            _end_group(proc)
            raise
    return code, time.perf_counter() - t0


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _end_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def failure(code: int | None, timeout: float, log: Path) -> str:
    if code is None:
        why = f"ran past --timeout {timeout:.0f} s and was stopped"
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    else:
        why = f"exited with code {code}"
    tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
    return f"{why}; log {log}\n{tail}"


def child_env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


# ---------------------------------------------------------------- the network's files

def network_files(size: int, work: Path, timeout: float) -> tuple[dict, dict]:
    """({name: path}, counts) of the network with `size` members, generated in a process of its own
    unless a finished earlier generation with the same settings is in the folder."""
    folder = work / f"data-{size}"
    done = folder / "network.json"
    wanted = {**NETWORK, "n_users": size}
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("network") == wanted and all((folder / f"{n}.parquet").is_file() for n in FILES):
            return {n: str(folder / f"{n}.parquet") for n in FILES}, record["counts"]
    shutil.rmtree(folder, ignore_errors=True)
    print(f"  generating {size:,} members ...", flush=True)
    code, seconds = run_bounded([sys.executable, "-m", "bench.retrain_scale", "--generate", str(size), str(folder)],
                                work / "logs" / f"generate-{size}.log", timeout)
    if code != 0 or not done.is_file():
        raise RuntimeError("generating the network " + failure(code, timeout, work / "logs" / f"generate-{size}.log"))
    record = json.loads(done.read_text())
    print(f"  generated in {seconds:.0f} s: {record['counts']}", flush=True)
    return {n: str(folder / f"{n}.parquet") for n in FILES}, record["counts"]


def generate_main(size: int, folder: Path) -> None:
    from recsys.data.loaders import save_files
    from recsys.data.synthetic import generate

    t0 = time.perf_counter()
    data = generate(n_users=size, **NETWORK)
    save_files(data, folder)
    counts = {"members": len(data.users), "jobs": len(data.items), "interactions": len(data.interactions),
              "friendships": 0 if data.social is None else len(data.social)}
    (folder / "network.json").write_text(json.dumps({"network": {**NETWORK, "n_users": size}, "counts": counts,
                                                     "seconds": round(time.perf_counter() - t0, 1)}))


# ---------------------------------------------------------------- one retrain, in its own process

def child_main(spec_path: Path) -> None:
    """The retraining flow once, as `graphrec retrain` runs it; figures to spec["out"]."""
    spec = json.loads(spec_path.read_text())
    store = Path(spec["store"])
    from deploy.tracking import configure, metric_history, run_figures
    from flows.cli import prepare_prefect
    from flows.prefect_api import prefect_api
    from flows.retrain import retrain_flow
    from recsys.config import load_config

    cfg = load_config(None, spec["overrides"])
    t0 = time.perf_counter()
    with prefect_api(prepare_prefect(store)):
        t1 = time.perf_counter()
        out = retrain_flow(cfg, return_state=True).result()  # the flow's error, if any, ends the child
        flow_seconds = time.perf_counter() - t1
    rss = peak_rss_mb()
    configure(cfg.stores)
    run = run_figures(out["run_id"])
    params, metrics = run["params"], run["metrics"]
    stages = {stage: metric_history(out["run_id"], key) for stage, key in STAGES.items()}
    phases = out["phase_seconds"]
    stage_seconds = {s: round(sum(v) / len(v), 3) for s, v in stages.items() if v}
    headline = "prefix" if "prefix" in stage_seconds else ""
    test = out["metrics"].get("test", {})
    ranking_train = metrics.get("train_seconds", 0.0)  # the ranking loop's own seconds (recsys.train.fit)
    figures = {
        "interactions": int(params.get("data.interactions", 0)),
        "train_interactions": int(params.get("data.rows_train", 0)),
        "friendships": int(params.get("data.social_edges", 0)),
        "jobs": int(params.get("data.items", 0)),
        "flow_seconds": round(flow_seconds, 1),
        "total_seconds": round(flow_seconds, 1),
        "prefect_start_seconds": round(t1 - t0, 1),
        "phase_seconds": {k: round(v, 2) for k, v in phases.items()},
        "phase_peak_rss_mb": {k: round(v) for k, v in out["phase_peak_rss_mb"].items()},
        **{f"{k}_seconds": round(v, 2) for k, v in phases.items()},
        "epoch_seconds": stage_seconds.get(headline),
        "epoch_stage": headline or "ranking",
        "stage_epoch_seconds": {s or "ranking": v for s, v in stage_seconds.items()},
        "epoch_seconds_each": [round(v, 2) for v in stages[headline]],
        "epochs": int(metrics.get("epochs_run", len(stages[""]))),
        "best_epoch": int(metrics.get("best_epoch", 0)),
        "batch_size_used": int(metrics.get("batch_size_used", 0)),
        # the train phase outside the ranking loop's epochs: evaluations every eval_every epochs,
        # sampler set-up, and the stages after it (MMoE heads; LLM prefix and its text encoding)
        "train_outside_epochs_seconds": round(phases["train"] - sum(stages[""]), 1),
        "peak_rss_mb": round(rss),
        "recall@20": test.get("recall@20"),
        "ndcg@20": test.get("ndcg@20"),
        "version": out["version"], "promoted": out["promoted"],
    }
    if "prefix" in stages and stages["prefix"]:
        figures["text_encoding_seconds"] = round(phases["train"] - ranking_train - sum(stages["prefix"]), 1)
    Path(spec["out"]).write_text(json.dumps(figures))


def probe_main(spec_path: Path) -> None:
    """A bounded number of optimiser steps on this size's data, in spec["mode"]: "per-batch"
    (train.max_steps_per_epoch=null, batches of train.batch_size: the exact mode of LightGCN, GCN
    and MF) or "configured" (the run's own train.max_steps_per_epoch, by default `auto`: the mode a
    run of the family trains in). The seconds of each step (negative sampling included) are scaled
    to a whole epoch as the first interval (the epoch's start, where PinSage draws its
    neighbourhoods, and the first step) plus the median step for each of the others. Figures,
    with the mode the steps ran in ("bounded" or "per-batch"), to spec["out"]."""
    import numpy as np

    from recsys.config import load_config
    from recsys.data.loaders import load_data
    from recsys.models import build_model
    from recsys.prepare import prepare
    from recsys.recipe import resolve_for_model
    from recsys.train import StopTraining, batch_plan, fit

    spec = json.loads(spec_path.read_text())
    forced = ["train.max_steps_per_epoch=null"] if spec.get("mode", "per-batch") == "per-batch" else []
    cfg = load_config(None, spec["overrides"] + forced + ["train.epochs=1"])
    t0 = time.perf_counter()
    prepared = prepare(load_data(cfg.data), cfg)
    prepare_seconds = time.perf_counter() - t0
    model = build_model(cfg.model, prepared.graph, seed=cfg.train.seed)
    steps, marks = spec["steps"], []

    class Clock:
        def on_epoch_start(self, epoch):
            marks.append(time.perf_counter())

        def on_step(self, step, logs):
            marks.append(time.perf_counter())
            if step >= steps:
                raise StopTraining

        def on_epoch_end(self, epoch, logs):
            pass

    if cfg.model.family in STAGE_PROBES:
        batch, per_epoch, mode = probe_prefix(cfg, prepared, model, Clock())
    else:
        fit(model, prepared.graph, prepared.indexed, cfg.train, cfg.eval, callbacks=[Clock()])
        batch, _ = batch_plan(resolve_for_model(cfg.train, model), len(prepared.indexed.train))
        per_epoch = -(-len(prepared.indexed.train) // batch)
        mode = step_mode(cfg.train, cfg.model.family)
    each = np.diff(marks)
    step_seconds = float(np.median(each[1:] if len(each) > 1 else each))  # the first step warms caches
    Path(spec["out"]).write_text(json.dumps({
        "steps_measured": len(each), "batch_size": batch, "step_seconds_median": round(step_seconds, 4),
        "step_seconds": [round(float(x), 4) for x in each], "steps_per_epoch": per_epoch,
        "first_step_seconds": round(float(each[0]), 4),
        "projected_epoch_seconds": round(float(each[0]) + step_seconds * (per_epoch - 1), 1),
        "mode": mode,
        "train_interactions": len(prepared.indexed.train), "prepare_seconds": round(prepare_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb())}))


STAGE_PROBES = {"llm": "prefix"}  # families probed in a stage of their own, not the ranking loop


def probe_prefix(cfg, prepared, bottom, clock) -> tuple[int, int, str]:
    """The llm family's prefix stage (recsys.llm_fit.fit_prefix, the flow's settings) until
    `clock` stops it: (members per step, steps per epoch, "prefix"). Its inputs are of the flow's
    shapes, but the bottom GNN is untrained and the jobs' vectors are random unit vectors of the
    text encoder's width: a step's cost does not depend on their values, and encoding 200k job texts
    (about 25 min on 2 cores, text_encoding_seconds in the flow's rows) is not the stage's."""
    import numpy as np
    import torch

    from recsys.llm_fit import fit_prefix
    from recsys.models.llm import PrefixEncoder, profile_texts
    from recsys.text import DIM
    from recsys.train import StopTraining

    opts, seed = cfg.model.llm, cfg.train.seed
    bottom.eval()
    with torch.no_grad():
        gnn_users, _ = bottom.embed(prepared.graph)
    gen = torch.Generator().manual_seed(seed)
    jobs = torch.nn.functional.normalize(torch.randn(prepared.indexed.n_items, DIM, generator=gen), dim=1)
    torch.manual_seed(seed)
    model = PrefixEncoder(gnn_users.shape[1], opts.prefix_tokens, opts.max_tokens)
    try:
        fit_prefix(model, gnn_users, profile_texts(prepared.data.users), jobs, prepared.indexed.train, 1, opts.lr,
                   opts.batch_size, opts.temperature, opts.negatives, seed, callbacks=[clock],
                   members_per_epoch=opts.members_per_epoch)
    except StopTraining:
        pass
    members = len(np.unique(prepared.indexed.train[:, 0]))
    read = members if opts.members_per_epoch is None else min(members, opts.members_per_epoch)
    return opts.batch_size, -(-read // opts.batch_size), STAGE_PROBES[cfg.model.family]


def probe(family: str, size: int, files: dict, counts: dict, args, work: Path) -> dict:
    """A child running probe_main in args.probe_mode; a row for results["exact_probe"]."""
    folder = work / "runs" / f"probe-{args.probe_mode}-{family}-{size}-{args.probe_steps}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = {"overrides": run_overrides(folder / "store", files, family, args, work), "steps": args.probe_steps,
            "mode": args.probe_mode, "out": str(folder / "figures.json")}
    (folder / "spec.json").write_text(json.dumps(spec, indent=1))
    log = folder / "child.log"
    print(f"{family} {size:,} members: {args.probe_steps} steps, {args.probe_mode} mode (log {log})", flush=True)
    code, seconds = run_bounded([sys.executable, "-m", "bench.retrain_scale", "--probe", str(folder / "spec.json")],
                                log, args.timeout, child_env(args.threads))
    row = {"family": family, "members": size, "interactions": counts["interactions"], "wall_seconds": round(seconds),
           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out = Path(spec["out"])
    if code == 0 and out.is_file():
        row.update(json.loads(out.read_text()))
        print(f"  {row['step_seconds_median']} s/step x {row['steps_per_epoch']} steps = "
              f"{row['projected_epoch_seconds']} s per {row['mode']} epoch", flush=True)
    else:
        row["error"] = failure(code, args.timeout, log)
        print(f"  FAILED: {row['error'][:2000]}", flush=True)
    return row


def measure(family: str, size: int, files: dict, counts: dict, settings: list[str], args, work: Path) -> dict:
    folder = work / "runs" / run_dir_name(family, size, settings)
    shutil.rmtree(folder, ignore_errors=True)  # every run is a first run, on a store of its own
    folder.mkdir(parents=True)
    store = folder / "store"
    overrides = run_overrides(store, files, family, args, work)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    spec = {"store": str(store), "overrides": overrides, "out": str(folder / "figures.json")}
    (folder / "spec.json").write_text(json.dumps(spec, indent=1))
    row = {"family": family, "members": size, "settings": settings, **{k: counts[k] for k in ("interactions",
                                                                                              "friendships")}}
    log = folder / "child.log"
    print(f"{family} {size:,} members: running (log {log})", flush=True)
    code, seconds = run_bounded([sys.executable, "-m", "bench.retrain_scale", "--child", str(folder / "spec.json")],
                                log, args.timeout, child_env(args.threads))
    row["wall_seconds"] = round(seconds, 1)
    row["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = Path(spec["out"])
    if code == 0 and out.is_file():
        row.update(json.loads(out.read_text()))
        print(f"  {row['flow_seconds']:.0f} s flow, {row['epoch_seconds']} s/epoch x {row['epochs']}, "
              f"peak RSS {row['peak_rss_mb']:,} MB, recall@20 {row['recall@20']}, phases {row['phase_seconds']}",
              flush=True)
    else:
        row["error"] = failure(code, args.timeout, log)
        print(f"  FAILED: {row['error'][:2000]}", flush=True)
    if not args.keep_stores:
        shutil.rmtree(store, ignore_errors=True)
    return row


# ---------------------------------------------------------------- ratios, goals, report

def _ratio(a: dict, b: dict, get) -> float | None:
    x, y = get(a), get(b)
    if not x or not y or not a.get("interactions") or not b.get("interactions"):
        return None
    return round((y / x) / (b["interactions"] / a["interactions"]), 3)


def epoch_growth(a: dict, b: dict) -> float | None:
    """The goal's figure between two rows: the worst cost ratio over the stages both trained (the
    ranking loop's epoch; also MMoE's heads and the LLM prefix, each an epoch of its own)."""
    stages = [s for s in a.get("stage_epoch_seconds", {}) if s in b.get("stage_epoch_seconds", {})]
    found = [x for s in stages if (x := _ratio(a, b, lambda r, s=s: r["stage_epoch_seconds"][s])) is not None]
    return max(found) if found else _ratio(a, b, lambda r: r.get("epoch_seconds"))


def cost_settings(row: dict) -> str:
    """A row's settings less train.epochs: the number of epochs is a budget; it does not change what
    an epoch costs, so rows that differ only in it are compared for cost."""
    return " ".join(s for s in row["settings"] if not s.startswith("train.epochs="))


def comparable(rows: list[dict]) -> dict[tuple[str, str], dict[int, dict]]:
    """(family, cost settings) -> members -> row; of several rows at one size, the latest
    (`measured_at`; rows without one are older), then the one with the most epochs; a failed row only
    where no other is. The latest, because this shared host's speed drifts by tens of percent
    between sessions: sizes measured in one invocation compare; a size rerun alone replaces its
    row, so rerun every size of a family together."""
    def rank(r: dict) -> tuple:
        return "error" not in r, r.get("measured_at", ""), r.get("epochs") or 0

    out: dict[tuple[str, str], dict[int, dict]] = {}
    for r in rows:
        sizes = out.setdefault((r["family"], cost_settings(r)), {})
        old = sizes.get(r["members"])
        if old is None or rank(r) > rank(old):
            sizes[r["members"]] = r
    return out


def ratios(rows: list[dict]) -> list[dict]:
    """Between consecutive sizes of each (family, cost settings): cost ratio = (cost ratio) /
    (interactions ratio), for epoch seconds, each stage's epoch, the flow and each phase; 1.0 is linear."""
    out = []
    for (family, settings), sizes in sorted(comparable(rows).items()):
        group = [sizes[m] for m in sorted(sizes) if "error" not in sizes[m]]
        for a, b in zip(group, group[1:]):
            out.append({
                "family": family, "settings": settings.split() if settings else [],
                "from_members": a["members"], "to_members": b["members"],
                "interactions_ratio": round(b["interactions"] / a["interactions"], 3),
                "epoch_seconds": _ratio(a, b, lambda r: r.get("epoch_seconds")),
                "stages": {s: _ratio(a, b, lambda r, s=s: r["stage_epoch_seconds"].get(s))
                           for s in a["stage_epoch_seconds"] if s in b["stage_epoch_seconds"]},
                "flow_seconds": _ratio(a, b, lambda r: r["flow_seconds"]),
                "phases": {p: _ratio(a, b, lambda r, p=p: r["phase_seconds"].get(p))
                           for p in a["phase_seconds"] if p in b["phase_seconds"]},
                "peak_rss_mb": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3),
            })
    return out


def one_million(rows: list[dict]) -> list[dict]:
    """The rows of the end-to-end goal: LightGCN at 1M members with the defaults, or the defaults and
    an epoch budget (train.epochs) only."""
    return [r for r in rows if r["family"] == "lightgcn" and r["members"] == 1_000_000 and not cost_settings(r)]


def goals(rows: list[dict], probes: list[dict] = ()) -> list[dict]:
    """The issue's goals, for the rows measured at the goal's sizes: the end-to-end goal on
    one_million's rows, the epoch-growth goal between rows of the same cost settings, and between
    the probes of a per-batch family (probe_pairs)."""
    found = []
    for r in one_million(rows):
        held = "error" not in r and r["flow_seconds"] <= 3600 and r["peak_rss_mb"] <= 16 * 1024
        found.append({"goal": "lightgcn, 1M members, end to end <= 60 min and <= 16 GiB",
                      "settings": " ".join(r["settings"]),
                      "figure": r["error"].splitlines()[0] if "error" in r else
                      f"{r['flow_seconds'] / 60:.1f} min, {r['peak_rss_mb'] / 1024:.1f} GiB", "held": held})
    for (family, settings), sizes in sorted(comparable(rows).items()):
        lo, hi = GOAL_SIZES.get(family, (None, None))
        a, b = sizes.get(lo), sizes.get(hi)
        if a is None or b is None:
            continue
        ratio = None if "error" in a or "error" in b else epoch_growth(a, b)
        found.append({"goal": f"{family}: seconds per epoch {lo:,} -> {hi:,} members within {GOAL_RATIO}x linear",
                      "settings": settings, "figure": ratio, "held": ratio is not None and ratio <= GOAL_RATIO})
    for family, (a, b) in probe_pairs(probes).items():
        ratio = probe_ratio(a, b)
        found.append({"goal": f"{family}: seconds per epoch {a['members']:,} -> {b['members']:,} members within "
                              f"{GOAL_RATIO}x linear, projected from {a['steps_measured']}-step probes of its "
                              "default mode", "settings": "", "figure": ratio,
                      "held": ratio is not None and ratio <= GOAL_RATIO})
    return found


def family_mode(family: str) -> str:
    """The mode a run of the family trains in by default: "bounded" (train.max_steps_per_epoch=auto
    bounds its steps) or "per-batch"."""
    from recsys.config import TrainConfig

    if family in STAGE_PROBES:
        return STAGE_PROBES[family]
    return step_mode(TrainConfig(), family)


def probe_mode(r: dict) -> str:
    return r.get("mode", "per-batch")  # probes from before the mode was recorded were all per-batch


def default_probes(probes) -> dict[str, dict[int, dict]]:
    """family -> members -> the latest probe of the family's default mode (family_mode)."""
    out: dict[str, dict[int, dict]] = {}
    for r in sorted(probes, key=lambda r: r.get("measured_at", "")):
        if "error" not in r and probe_mode(r) == family_mode(r["family"]):
            out.setdefault(r["family"], {})[r["members"]] = r
    return out


def probe_ratio(a: dict, b: dict) -> float | None:
    return _ratio(a, b, lambda r: r.get("projected_epoch_seconds"))


def probe_pairs(probes) -> dict[str, tuple[dict, dict]]:
    """Families probed in their default mode at both of the goal's sizes: their step cost scaled to
    an epoch stands for the epoch where no flow run measured one at the larger size (a whole
    per-batch epoch of PinSage at 1M members is about 68 min on 2 cores)."""
    at = default_probes(probes)
    return {family: (at[family][lo], at[family][hi]) for family, (lo, hi) in GOAL_SIZES.items()
            if lo in at.get(family, {}) and hi in at.get(family, {})}


def probe_growth(probes) -> dict[str, list[tuple[int, int, float]]]:
    """Per family probed in its default mode: (smaller, larger members, cost ratio of the projected
    epoch against the interactions ratio) for each pair of consecutive sizes."""
    out = {}
    for family, sizes in sorted(default_probes(probes).items()):
        at = [sizes[m] for m in sorted(sizes)]
        out[family] = [(a["members"], b["members"], probe_ratio(a, b)) for a, b in zip(at, at[1:])]
    return out


GOWALLA = {"gowalla_scalable_recall@20": ("lightgcn_gowalla_steps64", "recall@20"),
           "pinsage_gowalla_recall@20": ("pinsage_gowalla", "gowalla_recall@20")}


EXACT = "train.max_steps_per_epoch=null"


def versus_exact(rows: list[dict], members: int = 100_000) -> list[dict]:
    """LightGCN's default (bounded) mode against the exact per-batch mode at `members`, for each
    epoch budget both were run with: test recall@20 and NDCG@20 and the bounded mode's share of the
    exact mode's (item 2's goal: recall >= 98%), and the seconds of both trainings."""
    runs = {(cost_settings(r), tuple(s for s in r["settings"] if s.startswith("train.epochs="))): r for r in rows
            if r["family"] == "lightgcn" and r["members"] == members and "error" not in r}
    out = []
    for (settings, budget), exact in sorted(runs.items()):
        bounded = runs.get(("", budget))
        if settings != EXACT or bounded is None:
            continue
        out.append({"budget": " ".join(budget) or "defaults",
                    **{f"{mode}_{k}": r[k] for mode, r in (("bounded", bounded), ("exact", exact))
                       for k in ("recall@20", "ndcg@20", "epochs", "best_epoch")},
                    "bounded_train_seconds": bounded["phase_seconds"].get("train"),
                    "exact_train_seconds": exact["phase_seconds"].get("train"),
                    "recall_share": round(bounded["recall@20"] / exact["recall@20"], 4)
                    if exact["recall@20"] else None})
    return out


def headline(rows: list[dict], ratio_rows: list[dict], probes: list[dict] = ()) -> dict:
    """The issue's summary keys: the 1M LightGCN run (default settings), the worst epoch growth
    over families from 100k to 1M members (300k for mmoe and llm) against linear, and the Gowalla
    figures of the scalable LightGCN mode and of PinSage from their own benches' results."""
    out: dict = {}
    one_m = [r for r in one_million(rows) if "error" not in r]
    one_m.sort(key=lambda r: (bool(r["settings"]), -(r.get("epochs") or 0)))  # the defaults, else the longest budget
    out["lightgcn_1m_total_seconds"] = one_m[0]["total_seconds"] if one_m else None
    out["lightgcn_1m_peak_rss_mb"] = one_m[0]["peak_rss_mb"] if one_m else None
    out["lightgcn_1m_settings"] = one_m[0]["settings"] if one_m else None
    growth = {}
    for (family, settings), sizes in comparable(rows).items():
        lo, hi = GOAL_SIZES.get(family, (None, None))
        a, b = sizes.get(lo), sizes.get(hi)
        if a and b and "error" not in a and "error" not in b:
            if (ratio := epoch_growth(a, b)) is not None:
                growth[f"{family} {settings}".strip()] = ratio
    for family, (a, b) in probe_pairs(probes).items():
        if (ratio := probe_ratio(a, b)) is not None:
            growth.setdefault(f"{family} (probes)", ratio)
    out["epoch_growth_vs_linear"] = growth
    out["worst_epoch_growth_vs_linear"] = max(growth.values()) if growth else None
    out["lightgcn_100k_vs_exact"] = versus_exact(rows)
    for key, (bench, figure) in GOWALLA.items():
        path = RESULTS / f"{bench}.json"
        out[key] = json.loads(path.read_text()).get(figure) if path.is_file() else None
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[dict]] = {}
    for r in rows:
        if "error" not in r and r.get("epoch_seconds"):
            label = r["family"] + (f" ({', '.join(r['settings'])})" if r["settings"] else "")
            lines.setdefault(label, []).append(r)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, group in sorted(lines.items()):
        group.sort(key=lambda r: r["interactions"])
        ax.plot([r["interactions"] for r in group], [r["epoch_seconds"] for r in group], marker="o", label=label)
    if lines:
        xs = [r["interactions"] for g in lines.values() for r in g]
        lo, hi = min(xs), max(xs)
        ref = min(r["epoch_seconds"] for g in lines.values() for r in g)
        if hi > lo:
            ax.plot([lo, hi], [ref, ref * hi / lo], ls="--", color="grey", label="linear (slope 1)")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions")
    ax.set_ylabel("seconds per epoch")
    ax.set_title("Retraining: seconds per epoch against interactions (2 threads)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _f(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(rows: list[dict], ratio_rows: list[dict]) -> list[tuple]:
    by_to = {(r["family"], " ".join(r["settings"]), r["to_members"]): r for r in ratio_rows}
    out = []
    for r in sorted(rows, key=lambda r: (r["family"], " ".join(r["settings"]), r["members"])):
        settings = " ".join(r["settings"]) or "defaults"
        if "error" in r:
            out.append((r["family"], f"{r['members']:,}", _f(r.get("interactions"), 0), "failed: " +
                        r["error"].splitlines()[0][:150], *["-"] * 7, settings))
            continue
        ph = r["phase_seconds"]
        ratio = by_to.get((r["family"], cost_settings(r), r["members"]))
        stage = "" if r["epoch_stage"] == "ranking" else f" ({r['epoch_stage']})"
        out.append((r["family"], f"{r['members']:,}", f"{r['interactions']:,}",
                    f"{_f(r['epoch_seconds'], 2)}{stage}", _f(ratio and ratio["epoch_seconds"], 2),
                    f"{r['epochs']} ({r['best_epoch']})", _f(r["flow_seconds"]),
                    " / ".join(_f(ph.get(p)) for p in PHASES), f"{r['peak_rss_mb']:,}",
                    _f(r["recall@20"], 4), _f(r["ndcg@20"], 4), settings))
    return out


HEADER = ("family", "members", "interactions", "s/epoch", "cost ratio", "epochs (best)", "flow s",
          "phases s (" + " / ".join(PHASES) + ")", "peak RSS MB", "test recall@20", "test NDCG@20", "settings")


def report(name: str, rows: list[dict], threads: int, probes: list[dict] = ()) -> Path:
    import torch

    torch.set_num_threads(threads)  # the record's "threads": what the children trained with
    ratio_rows = ratios(rows)
    goal_rows = goals(rows, probes)
    png = RESULTS / f"{name}_epoch_seconds.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(rows, png)
    notes = [f"Synthetic network {NETWORK} (bench/refresh.py's), friendships as graph edges, features without "
             "text; each row one process through flows.retrain.retrain_flow on a fresh store. Cost ratio: (s/epoch "
             "ratio) / (interactions ratio) against the family's next smaller size, 1.0 = linear; per-phase ratios "
             "in the JSON (`ratios`). s/epoch is the ranking loop's (llm: the prefix stage's; text encoding apart "
             "in the JSON). Plot: " + png.name + "."]
    for g in goal_rows:
        notes.append(f"- goal {g['goal']}{' [' + g['settings'] + ']' if g['settings'] else ''}: {g['figure']} -> "
                     f"{'held' if g['held'] else 'NOT held'}")
    if not goal_rows:
        notes.append("- no goal measured (the goals need 100k, 300k and 1M members)")
    for r in ratio_rows:
        fast = {p: v for p, v in r["phases"].items() if v is not None and v > GOAL_RATIO and p != "start_run"}
        if fast:
            notes.append(f"- {r['family']} {r['from_members']:,} -> {r['to_members']:,}: phases growing faster than "
                         f"{GOAL_RATIO}x linear: " + ", ".join(f"{p} {v}" for p, v in fast.items()))
    for v in versus_exact(rows):
        notes.append(f"- lightgcn at 100,000 members, {v['budget']}: bounded mode recall@20 {v['bounded_recall@20']} "
                     f"(best epoch {v['bounded_best_epoch']}, train {_f(v['bounded_train_seconds'])} s), exact mode "
                     f"{v['exact_recall@20']} (best epoch {v['exact_best_epoch']}, train "
                     f"{_f(v['exact_train_seconds'])} s): "
                     f"{_f(v['recall_share'] and 100 * v['recall_share'])}% of the exact mode's (goal >= 98%)")
    for family, steps in probe_growth(probes).items():
        notes.append(f"- {family}, projected epoch from its default mode's probes, cost ratio between sizes: "
                     + ", ".join(f"{a:,} -> {b:,} members {v}" for a, b, v in steps))
    for r in probes:
        if "error" not in r:
            mode = f"{probe_mode(r)} mode" + (" (its default)" if probe_mode(r) == family_mode(r["family"]) else "")
            unit = "members" if r["family"] in STAGE_PROBES else "pairs"
            notes.append(f"- {mode}, {r['family']} at {r['members']:,} members: {r['steps_measured']} "
                         f"steps of {r['batch_size']:,} {unit} measured, median {r['step_seconds_median']} s/step x "
                         f"{r['steps_per_epoch']:,} steps = {r['projected_epoch_seconds']:,} s per epoch (projected)")
    return write_results(name, {"network": NETWORK, "rows": rows, "ratios": ratio_rows, "goals": goal_rows,
                                "plot": png.name, "exact_probe": list(probes), **headline(rows, ratio_rows, probes)},
                         table(rows, ratio_rows), "Retraining cost against the size of the network",
                         "\n".join(notes), header=HEADER)


def merged_probes(name: str, new: list[dict]) -> list[dict]:
    path = RESULTS / f"{name}.json"
    old = json.loads(path.read_text()).get("exact_probe", []) if path.is_file() else []
    keys = {(r["family"], r["members"], probe_mode(r)) for r in new}
    return [r for r in old if (r["family"], r["members"], probe_mode(r)) not in keys] + new


def merged(name: str, new: list[dict]) -> list[dict]:
    path = RESULTS / f"{name}.json"
    old = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
    keys = {row_key(r) for r in new}
    return [r for r in old if row_key(r) not in keys] + new


def main() -> None:
    from recsys.families import FAMILIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="members per network (default: %(default)s)")
    p.add_argument("--families", nargs="+", default=["lightgcn"], choices=list(FAMILIES), metavar="FAMILY",
                   help=f"model families, any of {', '.join(FAMILIES)} (default: lightgcn)")
    p.add_argument("--epochs", type=int, default=None, help="train.epochs for every run (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="configuration override for every run (repeatable), e.g. train.max_steps_per_epoch=64")
    p.add_argument("--threads", type=int, default=2, help="train.threads and refresh.threads (default 2)")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds a run may take before it is stopped")
    p.add_argument("--work", type=Path, default=None, help="folder for the files, stores and logs (kept)")
    p.add_argument("--keep-stores", action="store_true", help="keep each run's MLflow store and snapshots")
    p.add_argument("--name", default="retrain_scale", help="results name under bench/results (default: %(default)s)")
    p.add_argument("--probe-steps", "--exact-steps", type=int, default=0, metavar="N", dest="probe_steps",
                   help="instead of the flow: N optimiser steps per family and size, scaled to an epoch (results "
                        "key exact_probe)")
    p.add_argument("--probe-mode", choices=["per-batch", "configured"], default="per-batch",
                   help="the probes' mode: per-batch (batches of train.batch_size: the exact mode) or configured "
                        "(train.max_steps_per_epoch as the run sets it: the family's default unless --set)")
    p.add_argument("--report", action="store_true",
                   help="run nothing: rewrite the results' tables, goals and plot from its JSON rows")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--generate", nargs=2, metavar=("SIZE", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_main(args.child)
    if args.probe:
        return probe_main(args.probe)
    if args.generate:
        return generate_main(int(args.generate[0]), Path(args.generate[1]))
    if args.report:
        report(args.name, merged(args.name, []), args.threads, merged_probes(args.name, []))
        return
    # `kill` (SIGTERM) as Ctrl-C: unwinds through run_bounded, which ends the running child's group
    signal.signal(signal.SIGTERM, _interrupted)
    from recsys.config import load_config

    load_config(None, [*base_settings(args.threads), *args.set])  # a bad --set is refused before anything runs

    temporary = args.work is None
    work = Path(args.work or tempfile.mkdtemp(prefix="graphrec-retrain-scale-")).resolve()
    settings = bench_settings(args)
    rows: list[dict] = []
    probes: list[dict] = []
    try:
        for size in sorted(set(args.sizes)):
            print(f"size {size:,}:", flush=True)
            try:
                files, counts = network_files(size, work, args.timeout)
            except RuntimeError as exc:
                print(f"  {exc}", flush=True)
                rows += [{"family": f, "members": size, "settings": settings, "error": str(exc)}
                         for f in args.families]
                report(args.name, merged(args.name, rows), args.threads, merged_probes(args.name, probes))
                continue
            for family in args.families:
                if args.probe_steps:
                    probes.append(probe(family, size, files, counts, args, work))
                else:
                    rows.append(measure(family, size, files, counts, settings, args, work))
                report(args.name, merged(args.name, rows), args.threads,
                       merged_probes(args.name, probes))  # after every row: an interruption keeps them
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in rows + probes if "error" in r]
    if failed:
        print(f"{len(failed)} run(s) failed: " + ", ".join(f"{r['family']} {r['members']:,}" for r in failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
