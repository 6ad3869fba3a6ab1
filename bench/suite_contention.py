"""The test suite's wall time at two commits, on an idle machine and beside a CPU burner (a busy
loop at nice 0 for the whole run), each commit checked out in a temporary worktree and run with
`./dev.sh test` (lint, then pytest on its two workers). Issue 42 compares the commit before
threads were sized to the process's share (--before) with the one that added it (--after);
tests/test_threads.py, which only the latter has, is left out so both run the same tests.

    ./dev.sh python -m bench.suite_contention --before 2c8e6a1 --after f777f7b

A run past `--cap` seconds is interrupted (SIGINT to its group, then SIGKILL) and reported as that
bound (`capped`). Writes bench/results/suite_contention.json (rows: commit, before_or_after,
neighbour, seconds, summary, capped; burner_ratio_before / _after: beside the burner over idle;
idle_change_ratio: after's idle seconds over before's) and suite_contention.md.
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, write_results
from bench.runner import end_group

ROOT = Path(__file__).resolve().parents[1]
ORDER = (("before", "idle"), ("after", "idle"), ("before", "busy loop"), ("after", "busy loop"))


def run_suite(tree: Path, cap: float, log: Path) -> tuple[float, str, bool]:
    """(seconds, pytest's summary line, capped) for `./dev.sh test` in `tree`."""
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(["./dev.sh", "test", "--ignore=tests/test_threads.py"], cwd=tree, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(cap)
            capped = False
        except subprocess.TimeoutExpired:
            capped = True
        finally:
            end_group(proc, signal.SIGINT)  # pytest tears its tests down on SIGINT
    seconds = time.perf_counter() - started
    found = re.findall(r"=+ (.*(?:passed|failed).*) in [\d.]+s", log.read_text())
    return (cap if capped else seconds), (found[-1] if found else "no summary"), capped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="commit before the change")
    parser.add_argument("--after", required=True, help="commit with the change")
    parser.add_argument("--cap", type=float, default=1200, help="seconds after which a run is stopped")
    args = parser.parse_args()
    rows = []
    (RESULTS / ".cache").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="suite-contention-") as work:
        trees = {}
        for label in ("before", "after"):
            trees[label] = Path(work) / label
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(trees[label]), getattr(args, label)],
                           cwd=ROOT, check=True)
        try:
            for label, neighbour in ORDER:
                burner = None
                if neighbour != "idle":
                    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                log = RESULTS / ".cache" / f"suite_contention-{label}-{len(rows)}.log"  # kept to read
                try:
                    seconds, summary, capped = run_suite(trees[label], args.cap, log)
                finally:
                    if burner:
                        end_group(burner, grace=5)
                rows.append({"commit": getattr(args, label), "before_or_after": label, "neighbour": neighbour,
                             "seconds": round(seconds, 1), "summary": summary, "capped": capped})
                print(rows[-1], flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    at = {(r["before_or_after"], r["neighbour"]): r["seconds"] for r in rows}
    figures = {"rows": rows,
               "burner_ratio_before": round(at["before", "busy loop"] / at["before", "idle"], 2),
               "burner_ratio_after": round(at["after", "busy loop"] / at["after", "idle"], 2),
               "idle_change_ratio": round(at["after", "idle"] / at["before", "idle"], 3)}
    table = [(r["before_or_after"], r["commit"], r["neighbour"], ("≥ " if r["capped"] else "") + f"{r['seconds']:.0f}",
              r["summary"]) for r in rows]
    write_results("suite_contention", figures, table, "The suite beside a CPU burner, before and after issue 42",
                  notes=f"Beside the burner over idle: before {figures['burner_ratio_before']}×, after "
                        f"{figures['burner_ratio_after']}×; after's idle time over before's "
                        f"{figures['idle_change_ratio']}.",
                  header=("", "commit", "neighbour", "seconds", "pytest"))


if __name__ == "__main__":
    main()
