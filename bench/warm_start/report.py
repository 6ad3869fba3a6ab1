"""bench.warm_start's results: the summary the issue names, the table, the curves' plot, the warm
variants the stage cache holds, and the bench's run in MLflow."""
from __future__ import annotations

from pathlib import Path

from bench.common import RESULTS, Stages, log_bench_run, previous, write_results

VARIANTS = ("Warm runs measured (row, --warm-set: best validation recall@20 against the scratch run's; the loop's "
            "seconds until it first reached the scratch run's best, None: never; test recall@20 against the scratch "
            "model's). The recipes' warm settings are chosen on day 2's validation split alone: the variant that "
            "reaches the scratch run's best validation figure soonest on its family's rows. Variants with "
            "train.refit=false, train.eval_every=1, train.patience=3 are diagnostics (no refit; validation every "
            "epoch); train.warm_replay and train.warm_ramp were measured at earlier commits and removed. Test is "
            "read once per run:")
SEEDS = ("Seeds (--seeds N, rows run so): day 2's scratch and warm runs again with train.seed 1 .. N-1 from the same "
         "day 1 (train.seed 0: the row's own runs); a row's quality ratio is then the ratio of the seeds' mean test "
         "recall@20, its standard error from the per-seed differences.")
HEADER = ("row", "scratch s (loop)", "warm s to scratch's best", "scratch test R@20", "warm test R@20",
          "warm - scratch, user by user (z)", "over seeds: scratch / warm mean R@20 (seeds; se of the difference)",
          "warm valid R@20 at start", "scratch best valid R@20", "warm retrain s (flow)", "peak RSS MB")


def reached(scratch: dict, warm: dict):
    """The warm run's loop seconds until its validation recall@20 first reaches the scratch run's best."""
    target = scratch["best_valid_recall@20"]
    return next((s for s, r in warm["curve"] if target is not None and r >= target), None)


def over_seeds(pairs: list[tuple[dict, dict]]) -> dict:
    """Per seed, the (scratch, warm) runs' test recall@20; their means and the standard error of the
    mean per-seed difference (None with one seed)."""
    import numpy as np

    seeds = [{"seed": k, "scratch_test_recall@20": s["test_recall@20"], "warm_test_recall@20": w["test_recall@20"]}
             for k, (s, w) in enumerate(pairs)]
    diff = np.array([s["warm_test_recall@20"] - s["scratch_test_recall@20"] for s in seeds])
    return {"seeds": seeds,
            "scratch_test_recall@20_mean": round(float(np.mean([s["scratch_test_recall@20"] for s in seeds])), 5),
            "warm_test_recall@20_mean": round(float(np.mean([s["warm_test_recall@20"] for s in seeds])), 5),
            "seeds_difference_se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 5) if len(diff) > 1 else None}


def variants(stages: Stages, rows: list[dict]) -> list[dict]:
    """Every warm run of these rows that the stage cache holds (the defaults' and --warm-set's), each
    beside its row's scratch run: what chose the warm settings' defaults (on day 2's validation)."""
    out = []
    for row in (r["row"] for r in rows):
        for key, kept in stages.done.items():
            seed = kept["inputs"].get("seed", 0)  # beside the scratch run of its own seed
            scratch = stages.done.get(f"{row}/scratch" + (f"-seed{seed}" if seed else ""), {}).get("output")
            if scratch and key.split("/")[0] == row and key.split("/")[1].startswith("warm"):
                warm = kept["output"]
                out.append({"row": row, "warm_settings": kept["inputs"].get("warm_set", []),
                            "warm_recipe": kept["inputs"].get("warm_recipe"),  # None: measured before it was kept
                            "seed": seed,
                            "warm_seconds_to_scratch_best": reached(scratch, warm),
                            "warm_start_valid_recall@20": warm["curve"][0][1] if warm["curve"] else None,
                            "warm_best_valid_recall@20": warm["best_valid_recall@20"],
                            "scratch_best_valid_recall@20": scratch["best_valid_recall@20"],
                            "warm_test_recall@20": warm["test_recall@20"],
                            "scratch_test_recall@20": scratch["test_recall@20"],
                            "commits": [scratch.get("commit"), warm.get("commit")]})  # None: before kept
    return out


def summary(rows: list[dict]) -> dict:
    """The issue's keys: the worst row's time and quality ratios (a row run on several seeds: its seeds'
    means), and the 1M row's figures (its warm retrain end to end: the flow's seconds)."""
    def ratio(a, b):
        return None if a is None or not b else round(a / b, 3)

    def mean(r, key):
        return r.get(f"{key}_mean", r[key])

    time_ratios = [ratio(r["warm_seconds_to_scratch_best"], r["scratch_seconds"]) for r in rows]
    quality = [ratio(mean(r, "warm_test_recall@20"), mean(r, "scratch_test_recall@20")) for r in rows]
    one_m = next((r for r in rows if r["row"] == "network1m-lightgcn"), {})
    return {"worst_warm_time_ratio": None if None in time_ratios or not rows else max(time_ratios),
            "worst_warm_quality_ratio": min((q for q in quality if q is not None), default=None),
            "lightgcn_1m_warm_total_seconds": one_m.get("warm_flow_seconds"),
            "lightgcn_1m_converged_test_recall@20": one_m.get("scratch_test_recall@20"),
            "lightgcn_1m_warm_test_recall@20": one_m.get("warm_test_recall@20")}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(5 * max(1, len(rows)), 4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        for name in ("scratch", "warm"):
            points = r[f"{name}_curve"]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_title(r["row"])
        ax.set_xlabel("training wall clock (s)")
        ax.set_ylabel("validation recall@20")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(name: str, rows: list[dict], stages: Stages, args, notes: str) -> None:
    """bench/results/<name>.{json,md} and <name>_curves.png, and the bench's run in MLflow."""
    png = RESULTS / f"{name}_curves.png"
    plot(rows, png)
    table = [(r["row"], r["scratch_seconds"], r["warm_seconds_to_scratch_best"], r["scratch_test_recall@20"],
              r["warm_test_recall@20"], _lead(r.get("test_paired")), _seeds(r), r["warm_start_valid_recall@20"],
              r["scratch_best_valid_recall@20"], r.get("warm_flow_seconds", "-"), r["peak_rss_mb"]) for r in rows]
    tried = variants(stages, rows)
    write_results(name, {"rows": rows, **summary(rows), "settings": args.set, "warm_settings": args.warm_set,
                         "epochs_bound": args.epochs, "warm_variants": tried},
                  table, "Warm starts against scratch starts (day 2 of each row)",
                  notes=notes + "\n\n" + SEEDS + "\n\n" + VARIANTS + "\n\n"
                  + "\n".join(f"- {v['row']}, {' '.join(v['warm_settings']) or 'the defaults'}{_recipe(v)}: "
                               f"{v['warm_best_valid_recall@20']} vs {v['scratch_best_valid_recall@20']}, "
                               f"{v['warm_seconds_to_scratch_best']} s, "
                               f"{v['warm_test_recall@20']:.4f} vs {v['scratch_test_recall@20']:.4f}{_commits(v)}"
                               for v in tried),
                  header=HEADER)
    log_bench_run(name, {"rows": " ".join(r["row"] for r in rows), "settings": " ".join(args.set),
                         "warm_settings": " ".join(args.warm_set)}, [],
                  {png: "plots", RESULTS / f"{name}.json": "results"})


def earlier(name: str) -> list[dict]:
    """The rows an earlier invocation wrote under `name`."""
    return previous(name, "rows", [])


def _recipe(variant: dict) -> str:
    """The family's warm settings a variant ran on, as a parenthesis (empty where the cache did not keep them)."""
    recipe = variant.get("warm_recipe")
    seed = f", train.seed={variant['seed']}" if variant.get("seed") else ""
    return f" (recipe {' '.join(f'{k}={v}' for k, v in recipe.items())}{seed})" if recipe else ""


def _commits(variant: dict) -> str:
    """Where the stages kept the code they ran at: scratch's and warm's (a time ratio compares like with like
    only at one code)."""
    scratch, warm = variant.get("commits") or (None, None)
    return f" [scratch at {scratch or 'an earlier commit'}, warm at {warm}]" if warm else ""


def _lead(paired: dict | None) -> str:
    """The paired test comparison as a cell: the mean per-user difference and its z (difference / standard error)."""
    return "-" if not paired else f"{paired['second_minus_first']:+.4f} ({paired['z']}; {paired['users']} users)"


def _seeds(row: dict) -> str:
    if len(row.get("seeds", [])) < 2:
        return "-"
    return (f"{row['scratch_test_recall@20_mean']:.4f} / {row['warm_test_recall@20_mean']:.4f} "
            f"({len(row['seeds'])}; {row['seeds_difference_se']})")
