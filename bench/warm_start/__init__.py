"""Warm starts against scratch starts, through the real retraining flow (issue 44).

Per row: day 1 trained from scratch to convergence (early stopping on validation) in a store of its
own, where it becomes the champion; then day 2 twice, each in a copy of that store: from scratch
(train.start=scratch) and from day 1's champion (train.start=champion). Every stage runs
`flows.retrain.retrain_flow` in a process of its own (its peak RSS its own) on a Prefect server of its
own, with the configuration's defaults but `train.epochs` (the bound convergence may need) and the
row's data. Figures per day-2 run: validation recall@20 against the loop's wall clock (evaluations
included; the warm run's first point is the champion's state before any step), the best of it, the
train phase's seconds (selection loop and refit), test recall@20 / NDCG@20 of the registered model.
The warm run's `warm_seconds_to_scratch_best`: the loop's seconds until its validation recall@20
first reaches the scratch run's best (None: never).

Data, and which split chooses what (every choice on validation; test is ranked once per model):
  gowalla   the LightGCN paper's split. Day 2 ("today") is train.txt; day 1 ("yesterday") a seeded 90%
            of each user's train.txt pairs, 5% of the users (seeded) held back as day 2's arrivals.
            Day 1's validation: 10% of its pairs per user at random. Day 2's: the pairs day 1 did not
            have (an arrival: 10% of theirs at random), so neither day-2 run has trained on its
            validation pairs. Test: test.txt, the users and items each day knows.
  embedded  the embedded default (2,000 members) on day 0 and day 1 (recsys/data/next_day.py), the
            flow's temporal split.
  network   the synthetic network (bench/synthetic.py) on day 0 and day 1 (recsys/data/next_day.py,
            the configuration's daily growth), the flow's temporal split: the newest pairs of each
            member are validation and test.

    ./dev.sh python -m bench.warm_start --rows gowalla-mf network100k-lightgcn [--resume]

--resume reuses the stages that finished; a stage stopped while training (the command killed, the
machine lost, --timeout) goes on from the loop state its store kept (train.checkpoint_seconds,
deploy/resume.py), its curve whole and its figures tagged `resumed`, so a 1M-member run to
convergence can take several sittings.

--seeds N runs day 2's scratch and warm runs again on train.seed 1 .. N-1 from the same day 1, for
a row whose test users are too few (the embedded default) for one seed's figures to tell a small difference.

Writes bench/results/warm_start.json (rows: dataset, family, members, scratch_seconds,
warm_seconds_to_scratch_best, scratch_test_recall@20, warm_test_recall@20, peak_rss_mb, the warm
retrain's flow seconds (end to end) and the curves, and with --seeds each seed's test figures and their
means; worst_warm_time_ratio: warm_seconds_to_scratch_best / scratch_seconds, the worst row;
worst_warm_quality_ratio: warm / scratch test recall@20 (the seeds' means where run), the worst row;
the 1M row's figures), warm_start.md and warm_start_curves.png (bench/warm_start/report.py).
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import time
from pathlib import Path

from bench.common import SHARED_DATA, Stages, code_version, paired_recall, peak_rss_mb
from bench.runner import interrupted, retrain_here, retrain_in_child
from bench.synthetic import network_files
from bench.warm_start.report import earlier, over_seeds, reached, write

ROWS = {  # name: (data set, family, members of the synthetic network)
    "embedded-lightgcn": ("embedded", "lightgcn", None),
    "gowalla-lightgcn": ("gowalla", "lightgcn", None),
    "gowalla-mf": ("gowalla", "mf", None),
    "network100k-lightgcn": ("network", "lightgcn", 100_000),
    "network300k-lightgcn": ("network", "lightgcn", 300_000),
    "network300k-sage": ("network", "sage", 300_000),
    "network1m-lightgcn": ("network", "lightgcn", 1_000_000),
}
NETWORK_SETS = ["graph.social_edges=true", "features.enabled=true", "features.text=false"]


def gowalla_days(work: Path, source: Path | None = None) -> dict[int, dict]:
    """Day 1 and day 2 of Gowalla (or the LightGCN-format folder `source`) as interaction files with
    their own split (see the module)."""
    import numpy as np
    import pandas as pd

    from recsys.data.loaders import load_gowalla

    out = {}
    folder = work / "gowalla-days"
    if (folder / "done").is_file():
        return {d: {"interactions": str(folder / f"day{d}.parquet")} for d in (1, 2)}
    folder.mkdir(parents=True, exist_ok=True)
    inter = load_gowalla(source or SHARED_DATA / "gowalla").interactions[["user_id", "item_id", "split"]].astype(
        {"user_id": str, "item_id": str, "split": str})
    rng = np.random.default_rng(0)
    users = inter["user_id"].unique()
    arrivals = set(rng.choice(users, size=round(0.05 * len(users)), replace=False))
    train = inter[inter["split"] == "train"].reset_index(drop=True)
    arrival = train["user_id"].isin(arrivals).to_numpy()
    draw = rng.random(len(train))
    yesterday = ~arrival & (draw < 0.9)
    day2 = train.assign(split=np.where(~yesterday & (~arrival | (draw < 0.1)), "valid", "train"))
    day1 = train[yesterday].drop(columns="split")
    from recsys.data.split import assign_split

    day1 = assign_split(day1, "random", 0.1, 0.0, seed=0)
    test = inter[inter["split"] == "test"]
    for day, table in ((1, day1), (2, day2)):
        known_users, known_items = set(table["user_id"]), set(table[table["split"] == "train"]["item_id"])
        held = test[test["user_id"].isin(known_users) & test["item_id"].isin(known_items)]
        frame = pd.concat([table.astype({"split": str}), held], ignore_index=True)
        frame.to_parquet(folder / f"day{day}.parquet", index=False)
        out[day] = {"interactions": str(folder / f"day{day}.parquet")}
    (folder / "done").write_text("")
    return out


def data_sets(row: str, work: Path, members: int | None = None) -> dict[int, list[str]]:
    """Each day's data settings for `row` (`members`: another size of the network)."""
    data, _, size = ROWS[row]
    members = members or size
    if data == "embedded":
        return {d: ["data.source=synthetic", f"data.synthetic.day={d - 1}"] for d in (1, 2)}
    if data == "gowalla":
        days = gowalla_days(work)
        return {d: ["data.source=files", f"data.interactions={days[d]['interactions']}",
                    "validation.min_interactions_per_user=1", "eval.max_users=null"] for d in days}
    out = {}
    for day, generated in ((1, 0), (2, 1)):
        files, _ = network_files(members, work, day=generated)
        out[day] = ["data.source=files", *(f"data.{k}={v}" for k, v in files.items()), *NETWORK_SETS]
    return out


def run_stage(row: str, stage: str, store: Path, sets: list[str], args, extra: tuple[str, ...] = ()) -> dict:
    """One retrain in a child process (a session of its own, bounded by --timeout): its figures."""
    return retrain_in_child("bench.warm_start", store, [
        f"model.family={ROWS[row][1]}", "train.progress=false", f"train.epochs={args.epochs}",
        f"train.start={'champion' if stage.startswith('warm') else 'scratch'}", *sets, *args.set, *extra],
        args.work / "logs" / f"{row}-{stage}.log", args.timeout, f"{row} {stage}")


def child_main(spec_path: Path) -> None:
    """The retraining flow once, as `graphrec retrain` runs it; figures to the spec's "out"."""
    from deploy.tracking import run_figures

    out, _, figures = retrain_here(spec_path)
    run = run_figures(out["run_id"])
    elapsed = by_step(out["run_id"], "elapsed_seconds")  # every epoch of the selection loop
    recall = by_step(out["run_id"], "valid_recall_at_20")  # its validations (and the final figure, a step later)
    curve = [[round(elapsed[step], 1), round(recall[step], 5)] for step in sorted(recall) if step in elapsed]
    params, test = run["params"], out["metrics"].get("test", {})
    figures.write_text(json.dumps({
        "curve": curve, "best_valid_recall@20": max((r for _, r in curve), default=None),
        "train_seconds": round(out["phase_seconds"]["train"], 1), "loop_seconds": round(max(elapsed.values()), 1),
        "epochs_run": int(run["metrics"].get("epochs_run", 0)), "best_epoch": int(run["metrics"].get("best_epoch", 0)),
        "test_recall@20": test.get("recall@20"), "test_ndcg@20": test.get("ndcg@20"),
        "flow_seconds": round(out["flow_seconds"], 1),
        "members": int(params.get("data.users", 0)), "start": params.get("start"),
        "start_reason": params.get("start_reason"), "peak_rss_mb": round(peak_rss_mb()),
        "version": out["version"], "promoted": out["promoted"],
        "resumed": run["tags"].get("graphrec.resumed"),  # train_seconds is then the last process's alone
        "commit": code_version()}))


def by_step(run_id: str, key: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient().get_metric_history(run_id, key)}


def run_row(row: str, stages: Stages, args) -> dict:
    days = data_sets(row, args.work, args.members)
    inputs = {"sets": args.set, "epochs": args.epochs, "days": {str(d): v for d, v in days.items()}}  # as JSON keeps it
    first = args.work / row / "day1"

    def day1():
        if not _interrupted(first, inputs):
            shutil.rmtree(first, ignore_errors=True)
            first.mkdir(parents=True)
            _mark(first, inputs)
        return run_stage(row, "day1", first / "store", days[1], args)

    base = stages.run(f"{row}/day1", inputs, day1)

    def day2(stage: str, stage_inputs: dict, extra: tuple[str, ...] = ()):
        folder = args.work / row / stage
        if not _interrupted(folder, stage_inputs):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(first, folder)  # day 1's store as it was: its champion is day 1's model
            _mark(folder, stage_inputs)
        return run_stage(row, stage, folder / "store", days[2], args, extra)

    generated = _generated(days[2])  # day 2 drawn under another rule (recsys.data.next_day.RULE): measured anew
    inputs2 = {**inputs, **({"day2_data": generated} if generated else {})}
    variant = "warm" + "".join(f"+{s}" for s in args.warm_set)
    warm_inputs = {**inputs2, "warm_set": args.warm_set, "warm_recipe": _warm_recipe(row)}

    def seeded(seed: int):  # day 2's (scratch, warm) runs with train.seed `seed` (0: the configuration's)
        tag, sets = (f"-seed{seed}", (f"train.seed={seed}",)) if seed else ("", ())
        more = {"seed": seed} if seed else {}
        scratch = stages.run(f"{row}/scratch{tag}", {**inputs2, **more},
                             lambda: day2(f"scratch{tag}", {**inputs2, **more}, sets))

        def warm_day():
            out = day2(f"warm{tag}", {**warm_inputs, **more}, (*args.warm_set, *sets))
            return {**out, "test_paired": _paired(row, days[2], args, scratch, out, tag)}

        return scratch, stages.run(f"{row}/{variant}{tag}", {**warm_inputs, **more}, warm_day)

    runs = [seeded(k) for k in range(max(1, args.seeds))]
    (scratch, warm), seeds = runs[0], over_seeds(runs) if len(runs) > 1 else {}
    return {"row": row, "dataset": ROWS[row][0], "family": ROWS[row][1], "members": warm["members"],
            "day1_test_recall@20": base["test_recall@20"], "day1_epochs": base["epochs_run"],
            "scratch_seconds": scratch["loop_seconds"], "scratch_train_seconds": scratch["train_seconds"],
            "warm_seconds_to_scratch_best": reached(scratch, warm), "warm_loop_seconds": warm["loop_seconds"],
            "warm_train_seconds": warm["train_seconds"], "warm_flow_seconds": warm.get("flow_seconds"),
            "scratch_best_valid_recall@20": scratch["best_valid_recall@20"],
            "warm_best_valid_recall@20": warm["best_valid_recall@20"],
            "warm_start_valid_recall@20": warm["curve"][0][1] if warm["curve"] else None,
            "scratch_test_recall@20": scratch["test_recall@20"], "warm_test_recall@20": warm["test_recall@20"],
            "scratch_test_ndcg@20": scratch["test_ndcg@20"], "warm_test_ndcg@20": warm["test_ndcg@20"],
            # a warm stage cached before the comparison was kept: from the stores, if they still hold its models
            "test_paired": warm["test_paired"] if "test_paired" in warm else _paired(row, days[2], args, scratch, warm),
            "scratch_epochs": scratch["epochs_run"], "warm_epochs": warm["epochs_run"],
            "warm_start": warm["start_reason"], "warm_settings": args.warm_set,
            "peak_rss_mb": max(scratch["peak_rss_mb"], warm["peak_rss_mb"]),
            "scratch_curve": scratch["curve"], "warm_curve": warm["curve"], **seeds}


def _generated(sets: list[str]) -> dict:
    """How the network files `sets` read were generated (bench/synthetic.py's record), {} for other data."""
    path = next((s.split("=", 1)[1] for s in sets if s.startswith("data.interactions=")), None)
    record = Path(path).parent / "network.json" if path else None
    return json.loads(record.read_text())["network"] if record is not None and record.is_file() else {}


def _warm_recipe(row: str) -> dict:
    """The family's warm-start settings as its recipe resolves them: a warm stage measured under other
    ones is not reused. (Day 1 and the scratch run are keyed by the row's inputs alone: after a change
    to a family's training recipe, run its rows without --resume.)"""
    from recsys.recipe import recipe_values

    # named as before train.warm was a section (warm_shrink, ...), and a setting that keeps the earlier
    # behaviour (warm.patience null: train.patience) left out, so stages measured then are still found
    return {"warm_" + k.split(".", 1)[1]: v for k, v in recipe_values(ROWS[row][1]).items()
            if k.startswith("warm.") and v is not None}


def _mark(folder: Path, inputs: dict) -> None:
    (folder / "stage.json").write_text(json.dumps(inputs))


def _interrupted(folder: Path, inputs: dict) -> bool:
    """Whether a run of this stage, with these inputs, was stopped while training: its store then keeps
    the loop's state (deploy/resume.py), and the stage, run again, goes on from there instead of
    starting afresh. A folder left by other inputs (an earlier recipe or day 2, whose store may even
    hold that run's champion) starts afresh."""
    marked = folder / "stage.json"
    found = (marked.is_file() and json.loads(marked.read_text()) == json.loads(json.dumps(inputs))
             and any((folder / "store" / "checkpoints").glob("*/*.pt")))
    if found:
        print(f"[{folder}] goes on from the training state an interrupted run kept", flush=True)
    return found


def _paired(row: str, sets: list[str], args, scratch: dict, warm: dict, tag: str = "") -> dict | None:
    """The warm model's test recall@20 against the scratch model's, user by user (bench.common.paired_recall),
    on --paired-users test users, from the stores the day-2 runs left in --work; None when they no longer
    serve these runs' models (their figures on the runs' own test users differ from the runs')."""
    folder = args.work / row
    stores = (folder / f"scratch{tag}" / "store", folder / f"warm{tag}" / "store")
    sets = [f"model.family={ROWS[row][1]}", *sets, *args.set]
    try:
        own = paired_recall(sets, *stores)
        if abs(own["first"] - scratch["test_recall@20"]) > 1e-4 or abs(own["second"] - warm["test_recall@20"]) > 1e-4:
            print(f"[{row}] no paired comparison: the stores in {folder} serve other models", flush=True)
            return None
        return paired_recall([*sets, f"eval.max_users={args.paired_users or 'null'}"], *stores)
    except (OSError, ValueError) as e:
        print(f"[{row}] no paired comparison: {e}", flush=True)
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.warm_start", description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--epochs", type=int, default=200, help="train.epochs: the bound; early stopping ends a run")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more settings for every run")
    p.add_argument("--warm-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="settings of the warm run alone (e.g. train.warm.shrink=0.5); with --resume, day 1 and "
                        "the scratch run are reused")
    p.add_argument("--members", type=int, help="the network rows at this many members instead (a smoke run)")
    p.add_argument("--work", type=Path, default=Path.home() / "graphrec-warm-start")
    p.add_argument("--timeout", type=float, default=12 * 3600, help="seconds a stage may run")
    p.add_argument("--resume", action="store_true", help="reuse finished stages with the same inputs")
    p.add_argument("--name", default="warm_start")
    p.add_argument("--paired-users", type=int, default=100_000,
                   help="test users of the paired comparison (0: every one); each run's own figure uses eval.max_users")
    p.add_argument("--seeds", type=int, default=1,
                   help="day 2's scratch and warm runs on this many seeds (train.seed 0, 1, ...) from the same day 1; "
                        "the quality ratio then compares the seeds' means")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)
    stages = Stages("warm_start", args.resume)  # one cache for every --name: warm variants share day 1 and scratch
    old = {r["row"]: r for r in earlier(args.name)}
    for row in args.rows:
        t0 = time.perf_counter()
        old[row] = run_row(row, stages, args)
        print(f"[{row}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = [old[r] for r in ROWS if r in old]
    write(args.name, rows, stages, args, notes=__doc__.split("\n\n")[1].replace("\n", " "))
    return 0
