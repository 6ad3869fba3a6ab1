"""Retraining cost against the size of the network (issue 19, item 1): the report.

Each (family, size) runs in a fresh process through the real retraining flow on the synthetic
network of bench/synthetic.py (`python -m bench.retrain_scale`, bench/retrain_scale/__main__.py);
this module turns the rows into the results: between consecutive sizes of a family the cost ratio
is (epoch seconds ratio) / (interactions ratio) (1.0 grows linearly, 1.3 is the goal's bound), the
same per phase and for the whole flow; the issue's goals (the 1M-member LightGCN retrain end to end
<= 60 min and <= 16 GiB; seconds per epoch at most 1.3x linear from 100k to 1M members, 300k for
MMoE and the LLM prefix), judged on flow rows or on probes of a family's default mode; the table,
the plot and bench/results/<name>.{json,md} (rows of earlier invocations kept, rows of the same
family, size and settings replaced). The full protocol and the recorded commands: bench/README.md.
"""
from __future__ import annotations

from pathlib import Path

from bench.common import RESULTS, growth_ratio, previous, write_results
from bench.synthetic import NETWORK

SIZES = [100_000, 300_000, 1_000_000]
PHASES = ("load", "validate", "drift", "build_graph", "start_run", "record_profile", "train", "evaluate",
          "register", "promote", "refresh")
STAGES = {"": "epoch_seconds", "head": "head_epoch_seconds", "prefix": "prefix_epoch_seconds"}
GOAL_RATIO = 1.3
GOAL_SIZES = {"lightgcn": (100_000, 1_000_000), "gcn": (100_000, 1_000_000), "sage": (100_000, 1_000_000),
              "pinsage": (100_000, 1_000_000), "mf": (100_000, 1_000_000), "mmoe": (100_000, 300_000),
              "llm": (100_000, 300_000)}


STAGE_PROBES = {"llm": "prefix"}  # families probed in a stage of their own, not the ranking loop


def step_mode(train_cfg, family: str) -> str:
    """"bounded" where train.max_steps_per_epoch bounds the family's steps (its registry entry's
    auto_steps under auto), else "per-batch"."""
    from recsys.recipe import resolve

    return "per-batch" if resolve(train_cfg, family).max_steps_per_epoch is None else "bounded"


def row_key(row: dict) -> tuple:
    return row["family"], int(row["members"]), " ".join(row["settings"])


def _ratio(a: dict, b: dict, get) -> float | None:
    y = get(b)
    return growth_ratio(get(a), y, a.get("interactions"), b.get("interactions"), 3) if y else None


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


def growth_goals(rows: list[dict]):
    """(family, cost settings, smaller and larger members, epoch growth or None where a row failed) for
    each family and cost settings measured at both of the family's goal sizes."""
    for (family, settings), sizes in sorted(comparable(rows).items()):
        lo, hi = GOAL_SIZES.get(family, (None, None))
        a, b = sizes.get(lo), sizes.get(hi)
        if a is not None and b is not None:
            yield family, settings, lo, hi, None if "error" in a or "error" in b else epoch_growth(a, b)


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
    for family, settings, lo, hi, ratio in growth_goals(rows):
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
    growth = {f"{family} {settings}".strip(): ratio for family, settings, _, _, ratio in growth_goals(rows)
              if ratio is not None}
    for family, (a, b) in probe_pairs(probes).items():
        if (ratio := probe_ratio(a, b)) is not None:
            growth.setdefault(f"{family} (probes)", ratio)
    out["epoch_growth_vs_linear"] = growth
    out["worst_epoch_growth_vs_linear"] = max(growth.values()) if growth else None
    out["lightgcn_100k_vs_exact"] = versus_exact(rows)
    for key, (bench, figure) in GOWALLA.items():
        out[key] = previous(bench, figure)
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


def merged(name: str, new: list[dict], key: str = "rows", ident=None) -> list[dict]:
    """The results' `key` rows with `new` in place of those of the same identity (rows: row_key)."""
    ident = ident or row_key
    keys = {ident(r) for r in new}
    return [r for r in previous(name, key, []) if ident(r) not in keys] + new


def merged_probes(name: str, new: list[dict]) -> list[dict]:
    return merged(name, new, "exact_probe", lambda r: (r["family"], r["members"], probe_mode(r)))


