"""Retraining cost against the size of the network: runs each (family, size) in a fresh process.

Each child runs flows.retrain.retrain_flow as `graphrec retrain` does, on a Prefect server and a store
of its own (emptied first, so every run is the first), on the network's files with friendships as
graph edges and features without text; or, with --probe-steps N, N optimiser steps of one mode scaled
to an epoch. A child that fails, is killed or runs past --timeout gives a row with its error and the
tail of its log. The report: bench/retrain_scale/__init__.py; commands: bench/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import UNIFORM_SETS, peak_rss_mb
from bench.retrain_scale import SIZES, STAGE_PROBES, STAGES, merged, merged_probes, report, step_mode
from bench.runner import failure, interrupted, run_bounded
from bench.synthetic import network_files


def base_settings(threads: int) -> list[str]:
    return ["data.source=files", "graph.social_edges=true", "features.enabled=true", "features.text=false",
            f"compute.threads={threads}", f"refresh.threads={threads}", "train.progress=false", *UNIFORM_SETS]


def run_overrides(store: Path, files: dict, family: str, args, work: Path) -> list[str]:
    """A child's configuration: its own store, the size's files, the bench's settings, the work
    folder's shared text cache, the family, then --set."""
    return [f"stores.root={store}", *(f"data.{k}={v}" for k, v in files.items()), *base_settings(args.threads),
            f"stores.text_cache_dir={work / 'text_cache'}", f"model.family={family}", *args.set]


def bench_settings(args) -> list[str]:
    """What distinguishes one measurement of a family and size from another: --epochs, --set, and
    any change of the threads."""
    sets = list(args.set)
    if args.epochs is not None:
        sets.append(f"train.epochs={args.epochs}")
    if args.threads != 2:
        sets.append(f"threads={args.threads}")
    return sorted(sets)


def run_dir_name(family: str, size: int, settings: list[str]) -> str:
    digest = hashlib.sha1(" ".join(settings).encode()).hexdigest()[:8]
    return f"{family}-{size}-{digest}"


def child_env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


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


def in_child(kind: str, folder: Path, spec: dict, row: dict, args, digits: int | None, what: str, done) -> dict:
    """`python -m bench.retrain_scale --<kind> <folder>/spec.json` in a process group of its own: `row`
    with the child's figures (done(row) says what it measured) or its error; the wall seconds rounded
    to `digits`."""
    spec["out"] = str(folder / "figures.json")
    (folder / "spec.json").write_text(json.dumps(spec, indent=1))
    log = folder / "child.log"
    print(f"{row['family']} {row['members']:,} members: {what} (log {log})", flush=True)
    code, seconds = run_bounded([sys.executable, "-m", "bench.retrain_scale", f"--{kind}", str(folder / "spec.json")],
                                log, args.timeout, child_env(args.threads))
    row.update(wall_seconds=round(seconds, digits),
               measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out = Path(spec["out"])
    if code == 0 and out.is_file():
        row.update(json.loads(out.read_text()))
        print("  " + done(row), flush=True)
    else:
        row["error"] = failure(code, args.timeout, log)
        print(f"  FAILED: {row['error'][:2000]}", flush=True)
    return row


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)  # every run is a first run, on a store of its own
    folder.mkdir(parents=True)
    return folder


def probe(family: str, size: int, files: dict, counts: dict, args, work: Path) -> dict:
    """A child running probe_main in args.probe_mode; a row for results["exact_probe"]."""
    folder = fresh(work / "runs" / f"probe-{args.probe_mode}-{family}-{size}-{args.probe_steps}")
    spec = {"overrides": run_overrides(folder / "store", files, family, args, work), "steps": args.probe_steps,
            "mode": args.probe_mode}
    row = {"family": family, "members": size, "interactions": counts["interactions"]}
    return in_child("probe", folder, spec, row, args, None, f"{args.probe_steps} steps, {args.probe_mode} mode",
                    lambda r: f"{r['step_seconds_median']} s/step x {r['steps_per_epoch']} steps = "
                              f"{r['projected_epoch_seconds']} s per {r['mode']} epoch")


def measure(family: str, size: int, files: dict, counts: dict, settings: list[str], args, work: Path) -> dict:
    folder = fresh(work / "runs" / run_dir_name(family, size, settings))
    store = folder / "store"
    overrides = run_overrides(store, files, family, args, work)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    row = {"family": family, "members": size, "settings": settings, **{k: counts[k] for k in ("interactions",
                                                                                              "friendships")}}
    row = in_child("child", folder, {"store": str(store), "overrides": overrides}, row, args, 1, "running",
                   lambda r: f"{r['flow_seconds']:.0f} s flow, {r['epoch_seconds']} s/epoch x {r['epochs']}, peak "
                             f"RSS {r['peak_rss_mb']:,} MB, recall@20 {r['recall@20']}, phases {r['phase_seconds']}")
    if not args.keep_stores:
        shutil.rmtree(store, ignore_errors=True)
    return row


def main() -> None:
    from recsys.families import FAMILIES

    p = argparse.ArgumentParser(prog="python -m bench.retrain_scale", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="members per network (default: %(default)s)")
    p.add_argument("--families", nargs="+", default=["lightgcn"], choices=list(FAMILIES), metavar="FAMILY",
                   help=f"model families, any of {', '.join(FAMILIES)} (default: lightgcn)")
    p.add_argument("--epochs", type=int, default=None, help="train.epochs for every run (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="configuration override for every run (repeatable), e.g. train.max_steps_per_epoch=64")
    p.add_argument("--threads", type=int, default=2, help="compute.threads and refresh.threads (default 2)")
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
    args = p.parse_args()
    if args.child:
        return child_main(args.child)
    if args.probe:
        return probe_main(args.probe)
    if args.report:
        report(args.name, merged(args.name, []), args.threads, merged_probes(args.name, []))
        return
    # `kill` (SIGTERM) as Ctrl-C: unwinds through run_bounded, which ends the running child's group
    signal.signal(signal.SIGTERM, interrupted)
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
