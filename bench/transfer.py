"""Quality that transfers (issue 21): the default recipe and a searched one, side by side, on every
data set with a fixed test, through the product's own commands.

    ./dev.sh python -m bench.transfer [--datasets gowalla lastfm ml-100k] [--path FOLDER ...]
        [--published NAME=RECALL ...] [--search-seconds 3600] [--work DIR] [--resume] [--pair-only]

Per data set: `graphrec retrain` with the shipped defaults (family lightgcn), then `graphrec search
--timeout S --first-trial-from <that run>` (trial 0: the default run itself; then the settings proven
on the other data sets, then the recipe's neighbours, then TPE), each in this process through the real
flows with a stores root of its own under --work. Every choice is made on the validation split; each
registered model is refit on training and validation pairs and ranks test once; the searched model's
lead over the default's is measured user by user (`test_paired`; --pair-only adds it to rows already
written). The full protocol: bench/README.md. Stages are kept for --resume.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

from bench.common import PUBLIC_SETS, Stages, paired_recall, previous, write_results

NAME = "transfer"
CARVED = "validation: 10% of each user's training pairs at random (split.seed 0), carved from train"
DATASETS = {
    "gowalla": {"sets": PUBLIC_SETS["gowalla"], "published": 0.1830, "chosen_on": CARVED},
    "lastfm": {"sets": PUBLIC_SETS["lastfm"], "published": None, "chosen_on": CARVED},
    "ml-100k": {"sets": PUBLIC_SETS["ml-100k"], "published": None,
                "chosen_on": "validation: 10% of each user's pairs at random (split.seed 0; test 20%)"},
}
# every user with targets is ranked (the product samples 10,000; on Gowalla's 29,858 test users that
# sample moved the default's test recall@20 by 0.0024), as published figures are
COMMON = ["train.progress=false", "model.family=lightgcn", "eval.max_users=null"]


def recall(metrics: dict, split: str) -> Optional[float]:
    value = metrics.get(split, {}).get("recall@20")
    return None if value is None else round(float(value), 5)


def _emptied(root: Path) -> Path:
    """A stage's stores root, emptied: a stage that runs starts with no registry and no study (the
    search would otherwise resume the study an earlier invocation left under the same name)."""
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    return root


def run_default(sets: list[str], root: Path) -> dict:
    from flows.retrain import retrain_flow
    from recsys.config import load_config

    root = _emptied(root)
    cfg = load_config(None, [f"stores.root={root}", *COMMON, *sets])
    started = time.perf_counter()
    out = retrain_flow(config=cfg)
    return {"valid_recall@20": recall(out["metrics"], "valid"), "test_recall@20": recall(out["metrics"], "test"),
            "seconds": round(time.perf_counter() - started, 1), "run_id": out["run_id"]}


def run_search(sets: list[str], root: Path, seconds: float, study: str, trials: int = 100000,
               default: Optional[tuple[str, Path]] = None, proven_skip: tuple[str, ...] = ()) -> dict:
    """The search stage; `default` (the default stage's run id and stores root): its run is the
    study's trial 0 (search.first_trial_from), so the budget goes to other settings, and when the
    recipe is chosen the default run is the searched model too (`from_default`). `proven_skip`:
    data sets whose proven settings the search does not try (search.proven_skip)."""
    from flows.search import search_flow
    from recsys.config import load_config
    from recsys.config_ops import StoresConfig

    root = _emptied(root)
    first = [] if default is None else [f"search.first_trial_from={default[0]}",
                                        f"search.first_trial_store={StoresConfig(root=default[1]).resolved_tracking_uri()}"]
    cfg = load_config(None, [f"stores.root={root}", *COMMON, *sets, "search.family=lightgcn",
                             f"search.timeout={seconds}", f"search.trials={trials}", f"search.study={study}", *first,
                             f"search.proven_skip=[{','.join(proven_skip)}]"])
    code, started = _commit(), time.perf_counter()  # the code as the stage starts
    out = search_flow(config=cfg)
    metrics = out.get("retrain", {}).get("metrics", {})
    return {"valid_recall@20": recall(metrics, "valid"), "test_recall@20": recall(metrics, "test"),
            "from_default": "chosen_from_run" in out,
            "best_trial": out.get("best_trial"), "best_valid_objective": out.get("best_value"),
            "chosen_trial": out.get("chosen_trial"), "chosen_because": out.get("reason"),
            "objective": out.get("objective"), "best_params": out.get("chosen_params"), "trials": out.get("trials"),
            "trials_seconds": out.get("trials_seconds"), "seconds": round(time.perf_counter() - started, 1),
            "code": code}


def paired_test(sets: list[str], default: Path, searched: Path) -> dict:
    """The searched model's test recall@20 against the default's, user by user (bench.common.paired_recall).
    Reports only: test chooses nothing."""
    p = paired_recall([*COMMON, *sets], default, searched)
    return {"users": p["users"], "default": p["first"], "searched": p["second"],
            "searched_minus_default": p["second_minus_first"], "se": p["se"], "z": p["z"]}


def _commit(folder: Path = Path(__file__).parent) -> str:
    """The commit of the checkout `folder` is in (with '+changes' when tracked files other than
    bench/results differ from it): a row's code."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    # pathspecs from the repository's top, whatever folder git runs in
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)bench/results")
    return head + ("+changes" if changed else "")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS),
                   help="shared data sets to run (default: all three)")
    p.add_argument("--path", type=Path, nargs="*", default=[],
                   help="more data sets: folders in LightGCN format (train.txt, test.txt), named by the folder")
    p.add_argument("--published", nargs="*", default=[], metavar="NAME=RECALL",
                   help="a published LightGCN recall@20 for a --path data set")
    p.add_argument("--search-seconds", type=float, default=3600, help="the search's wall-clock budget per data set")
    p.add_argument("--search-trials", type=int, default=100000,
                   help="the search's budget in finished trials as well (default: the wall clock alone)")
    p.add_argument("--work", type=Path, default=Path.home() / "graphrec-transfer",
                   help="stores (MLflow, Optuna, Prefect) of every stage, one folder per data set and stage")
    p.add_argument("--resume", action="store_true", help="reuse finished stages with the same inputs")
    p.add_argument("--name", default=NAME, help="results file name")
    p.add_argument("--pair-only", action="store_true",
                   help="train nothing: add the paired per-user test comparison of default and searched models to "
                        "the rows of --datasets already in the results, from the models the stages left in --work")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    todo = _todo(args)
    if args.pair_only:
        return pair_only(args, todo)
    from flows.cli import prepare_prefect
    from flows.prefect_api import prefect_api
    from recsys.families import family

    proven = {p.found_on for p in family("lightgcn").proven}
    stages, paired = Stages(args.name, args.resume), True
    rows = {row["dataset"]: row for row in previous(args.name, "rows", [])}  # other data sets' rows are kept
    with prefect_api(prepare_prefect(args.work)):
        for name, spec in todo.items():
            sets, root = spec["sets"], args.work / name
            skip = (name,) if name in proven else ()  # settings proven on this data set: not transfer
            tried = {p.found_on: p.settings for p in family("lightgcn").proven if p.found_on not in skip}
            default = stages.run(f"{name}/default", {"sets": sets, "common": COMMON},
                                 lambda s=sets, r=root: run_default(s, r / "default"))
            searched = stages.run(f"{name}/search", {"sets": sets, "common": COMMON, "seconds": args.search_seconds,
                                                     "trials": args.search_trials, "trial_0": default["run_id"],
                                                     "proven": tried},
                                  lambda s=sets, r=root, d=default["run_id"], k=skip: run_search(
                                      s, r / "search", args.search_seconds, f"transfer-{r.name}", args.search_trials,
                                      (d, r / "default"), k))
            if searched.get("from_default"):  # the recipe chosen: the default run is the searched model
                searched.update({k: default[k] for k in ("valid_recall@20", "test_recall@20")})
            rows[name] = {"dataset": name, "default_recall@20": default["test_recall@20"],
                          "searched_recall@20": searched["test_recall@20"],
                          "published_recall@20": spec["published"], "search_seconds": args.search_seconds,
                          "chosen_on": spec["chosen_on"], "default_valid_recall@20": default["valid_recall@20"],
                          "searched_valid_recall@20": searched["valid_recall@20"],
                          "default_seconds": default["seconds"], "search_command_seconds": searched["seconds"],
                          "trials": searched["trials"], "best_trial": searched["best_trial"],
                          "chosen_trial": searched.get("chosen_trial", searched["best_trial"]),
                          "chosen_because": searched.get("chosen_because"),
                          "trials_seconds": searched.get("trials_seconds"), "code": searched.get("code"),
                          "trial_0_from_default": "from_default" in searched,
                          "proven_tried": list(tried),
                          "chosen_settings": searched["best_params"]}
            paired = _pair(rows[name], sets, root) and paired
            _write(args.name, list(rows.values()))
    return 0 if paired else 1


def _todo(args: argparse.Namespace) -> dict[str, dict]:
    """The data sets named (--datasets, --path), each with its spec (as DATASETS)."""
    published = {k: float(v) for k, v in (item.split("=", 1) for item in args.published)}
    todo = {name: DATASETS[name] for name in args.datasets}
    for folder in args.path:
        todo[folder.name] = {"sets": ["data.source=gowalla", f"data.path={folder.resolve()}"],
                             "published": published.get(folder.name), "chosen_on": CARVED}
    return todo


def pair_only(args: argparse.Namespace, todo: dict[str, dict]) -> int:
    """--pair-only: the paired test comparison (paired_test) added to the rows already in the results,
    from the models the stages left in --work; a row whose models there do not give its own test
    figures is left as it is (1 is returned)."""
    rows = previous(args.name, "rows", [])
    paired = [_pair(row, todo[row["dataset"]]["sets"], args.work / row["dataset"]) for row in rows
              if row["dataset"] in todo]
    _write(args.name, rows, previous(args.name, "note"))
    return 0 if all(paired) else 1


def _pair(row: dict, sets: list[str], root: Path) -> bool:
    """row["test_paired"] from the models under `root` (its stages' stores roots), when they give the
    row's own test figures; False, the row left as it is, when they do not (not the row's models)."""
    from deploy.snapshot import SnapshotError

    from_default = row["chosen_trial"] == 0 and row["trial_0_from_default"]
    try:
        paired = paired_test(sets, root / "default", root / ("default" if from_default else "search"))
    except (SnapshotError, ValueError) as exc:
        print(f"{row['dataset']}: no paired test comparison ({exc}); row left as it is", flush=True)
        return False
    found, said = (paired["default"], paired["searched"]), (row["default_recall@20"], row["searched_recall@20"])
    if any(abs(a - b) > 2e-5 for a, b in zip(found, said)):
        print(f"{row['dataset']}: the models in {root} give test recall@20 {found}, the row says {said}: "
              "not the row's models; row left as it is", flush=True)
        return False
    row["test_paired"] = paired
    print(f"{row['dataset']}: searched - default on test {paired}", flush=True)
    return True


def _trials(row: dict) -> str:
    chosen, best = row.get("chosen_trial", row["best_trial"]), row["best_trial"]
    return "-" if best is None else str(best) if chosen == best else f"{chosen} ({best})"


def _paired(row: dict) -> str:
    paired = row.get("test_paired")
    if not paired:
        return "-"
    z = "same model" if paired["z"] is None else f"{paired['z']:+.2f} SE"
    return f"{paired['searched_minus_default']:+.4f} ({z})"


def _write(name: str, rows: list[dict], note: Optional[str] = None) -> None:
    """The results; `note`: a hand-written paragraph kept with them (the JSON's `note`, after the table)."""
    def figure(v):
        return "-" if v is None else f"{v:.4f}"

    def ratio(a, b):
        return "-" if a is None or not b else f"{a / b:.3f}"

    gowalla = next((r["searched_recall@20"] for r in rows if r["dataset"] == "gowalla"), None)
    table = [(r["dataset"], figure(r["default_recall@20"]), figure(r["searched_recall@20"]),
              _paired(r), figure(r["published_recall@20"]), ratio(r["default_recall@20"], r["searched_recall@20"]),
              f"{r['search_seconds']:.0f}", f"{r['trials_seconds']:.0f}", _trials(r),
              r.get("code") or "-",
              ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                        for k, v in (r["chosen_settings"] or {}).items()))
             for r in rows]
    notes = ("Test recall@20 of the registered model (refit on training and validation pairs for the budget "
             "chosen on validation, train.refit; test ranked once per model, choosing nothing); every setting "
             "chosen on the validation split named in the JSON's `chosen_on`. default/searched: the default "
             "recipe's share of the searched figure (goal >= 0.95). Trial 0 is the default recipe (where the "
             "JSON's `trial_0_from_default`: the default run itself, search.first_trial_from, and when it is "
             "chosen the default run is the searched model); the chosen trial is the best one unless its "
             "validation lead over the recipe is within one standard error of the paired per-user difference "
             "(search.min_gain_se; the JSON's `chosen_because`), and then the recipe. Trials 1, 2, ... are the "
             "settings proven on the other data sets (the JSON's `proven_tried`; a data set's own are skipped), "
             "then the recipe's one-step neighbours. budget s: the search's wall-clock budget (search.timeout; "
             "`search_seconds` in the JSON); trials s: the trials' wall time (a trial still training at the "
             "budget stops at its epoch's end, so it can pass the budget by an epoch; `trials_seconds`); the whole "
             "command, the chosen configuration's retraining included: `search_command_seconds`. code: the "
             "commit that measured the row. searched - default: the searched model's test recall@20 lead, user "
             "by user on the same users, in standard errors of the paired difference (the JSON's `test_paired`; "
             "reported, choosing nothing).")
    write_results(name, {"rows": rows, "gowalla_searched_recall@20": gowalla, **({"note": note} if note else {})},
                  table, "Default and searched recipes across data sets (LightGCN)",
                  notes + (f"\n\n{note}" if note else ""),
                  header=("data set", "default recall@20", "searched recall@20", "searched - default",
                          "published LightGCN", "default/searched", "budget s", "trials s", "chosen trial (best)",
                          "code", "chosen settings"))


if __name__ == "__main__":
    raise SystemExit(main())
