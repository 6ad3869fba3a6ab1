"""The design's claims, each measured here on real data: runs the experiments, logs every arm to
MLflow (one experiment, a parent run per claim), writes bench/results/claims.json and docs/claims.md.

A claim is a statement practitioners repeat, the arms that test it (each run in its own process by
bench.runner.run_case, so its memory is its own) and a verdict computed from the measured rows.
Claims 2, 3, 8 and 9 live in their own modules (bench/claim_*.py, bench/llm.py); the others reuse
the case functions of the existing benchmarks with the arms listed here.

    ./dev.sh python -m bench.claims                # all nine (about 40 minutes on 2 cores)
    ./dev.sh python -m bench.claims --only 1 4     # some; the others keep their last entries
"""
from __future__ import annotations

import argparse
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.common import SAMPLERS, previous, write_results
from bench.runner import run_case, settle

DOC = Path(__file__).resolve().parents[1] / "docs" / "claims.md"
EXPERIMENT = "graphrec-claims"


@dataclass
class Claim:
    id: int
    title: str
    claim: str
    data: str
    protocol: str
    module: str  # whose case() runs each arm
    specs: list[dict]
    columns: list[str]
    verdict: Callable[[list[dict]], tuple[bool, str]]  # given rows that all have figures (see settle)

    @classmethod
    def of(cls, module: str) -> "Claim":
        """A claim module exports CLAIM, COLUMNS, specs(), case(spec) and verdict(rows)."""
        m = importlib.import_module(module)
        c = m.CLAIM
        return cls(c["id"], c["title"], c["claim"], c["data"], c["protocol"], module, m.specs(), m.COLUMNS,
                   m.verdict)


def by_arm(rows: list[dict]) -> dict[str, dict]:
    return {r["arm"]: r for r in rows}


def _family(dataset: str, family: str, options: dict, arm: str, epochs: int = 60, lr: float = 0.005,
            graph: dict | None = None) -> dict:
    return {"arm": arm, "dataset": dataset, "family": family, "options": options, "epochs": epochs,
            "eval_every": 2, "lr": lr, "graph": graph or {}}


# --- claim 1: aggregators -------------------------------------------------------------------------
def aggregators_verdict(rows: list[dict]) -> tuple[bool, str]:
    parts, held = [], True
    for data in dict.fromkeys(r["arm"].split(" / ")[0] for r in rows):
        scores = {r["options"]["sage"]["aggregator"]: r["recall@20"] for r in rows if r["arm"].startswith(data + " /")}
        best = max(scores.values())
        held &= scores["mean"] >= 0.98 * best
        parts.append(f"{data}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return held, ("mean is best or within 2% of the best on every data set" if held
                  else "mean is not within 2% of the best everywhere") + " (recall@20: " + "; ".join(parts) + ")"


AGGREGATORS = Claim(
    1, "Mean vs sum vs max aggregation",
    "Mean aggregation is the safe default for recommendation graphs; sum lets hubs dominate and max "
    "discards how many neighbours agree.",
    "ML-100K (user and movie attributes) and LastFM (user-artist plays, ID-only; with and without its "
    "user-user friendships in the graph)",
    "GraphSAGE, 2 layers, fan-outs [20, 10], dim 64; per-user random 80/10/10 split; early stopping on "
    "validation NDCG@20 (up to 60 epochs, lr 0.005); full ranking on test. On LastFM once more with the "
    "friendships as user-user edges, so users aggregate artists and friends together. The claim holds if mean "
    "is within 2% of the best recall@20 on every data set.",
    "bench.families",
    [_family(d, "sage", {"sage": {"aggregator": a, "fanouts": [20, 10]}}, f"{label} / {a}", graph=graph)
     for d, label, graph in (("ml-100k", "ml-100k", None), ("lastfm", "lastfm", None),
                             ("lastfm", "lastfm + friendships", {"social_edges": True}))
     for a in ("mean", "sum", "max")],
    ["recall@20", "ndcg@20", "epoch_seconds", "best_epoch"], aggregators_verdict)


# --- claim 4: LightGCN without W/ReLU vs with ---------------------------------------------------
def lightgcn_verdict(rows: list[dict]) -> tuple[bool, str]:
    a = by_arm(rows)
    id_plain, id_w = a["lastfm / plain"]["recall@20"], a["lastfm / W+ReLU"]["recall@20"]
    ml_plain, ml_w = a["ml-100k / plain"]["recall@20"], a["ml-100k / W+ReLU"]["recall@20"]
    ml_feat = a["ml-100k / W+ReLU + features"]["recall@20"]
    id_part = id_plain >= id_w
    feat_part = ml_feat > ml_plain
    text = (f"ID-only (LastFM): plain {id_plain:.4f} vs W+ReLU {id_w:.4f}; ML-100K: plain {ml_plain:.4f}, "
            f"W+ReLU {ml_w:.4f}, W+ReLU with features {ml_feat:.4f}")
    halves = ("dropping W/ReLU " + ("helps" if id_part else "does not help") + " on ID-only data; features with "
              "W/ReLU " + ("beat" if feat_part else "do not beat") + " plain LightGCN")
    return id_part and feat_part, f"{halves} ({text})"


LIGHTGCN = Claim(
    4, "LightGCN drops W and ReLU; rich features want them back",
    "On ID-only data the feature transform and nonlinearity only hurt (LightGCN's ablation of NGCF); with "
    "rich node features a learned transform pays for itself.",
    "LastFM (ID-only) and ML-100K (user and movie attributes plus MiniLM text of titles)",
    "LightGCN, K = 3, dim 64; plain (no W, no ReLU), with W + ReLU per layer over ID embeddings, and (ML-100K) "
    "W + ReLU over ID embeddings concatenated with projected features. Per-user random 80/10/10 split, early "
    "stopping on validation NDCG@20 (up to 60 epochs, lr 0.005). Holds if plain >= W+ReLU on LastFM and "
    "features beat plain on ML-100K.",
    "bench.families",
    [_family("lastfm", "lightgcn", {}, "lastfm / plain"),
     _family("lastfm", "lightgcn", {"lightgcn": {"transform": True}}, "lastfm / W+ReLU"),
     _family("ml-100k", "lightgcn", {}, "ml-100k / plain"),
     _family("ml-100k", "lightgcn", {"lightgcn": {"transform": True}}, "ml-100k / W+ReLU"),
     _family("ml-100k", "lightgcn", {"lightgcn": {"use_features": True}}, "ml-100k / W+ReLU + features")],
    ["recall@20", "ndcg@20", "epoch_seconds", "best_epoch"], lightgcn_verdict)


# --- claim 5: fan-out memory -------------------------------------------------------------------------
def fanout_verdict(rows: list[dict]) -> tuple[bool, str]:
    for r in rows:
        r["training_extra_mb"] = round(r["peak_rss_mb_training"] - r["rss_mb_before_training"], 1)
    a = by_arm(rows)
    full, f = a["full neighbourhood"], a["fan-out [20, 10]"]
    held = f["training_extra_mb"] < full["training_extra_mb"] and f["recall@20"] >= 0.95 * full["recall@20"]
    ratio = full["training_extra_mb"] / max(f["training_extra_mb"], 1)
    return held, (f"memory above the loaded graph: full {full['training_extra_mb']:.0f} MB vs [20, 10] "
                  f"{f['training_extra_mb']:.0f} MB (x{ratio:.1f}), "
                  f"epoch {full['epoch_seconds']:.0f} s vs {f['epoch_seconds']:.0f} s, recall@20 "
                  f"{full['recall@20']:.4f} vs {f['recall@20']:.4f}")


FANOUT = Claim(
    5, "Fan-out sampling bounds memory",
    "Sampling a fixed number of neighbours per layer bounds a GNN's training memory and time at little cost "
    "in quality, where full neighbourhoods grow with hub degrees.",
    "Gowalla (70,839 nodes, 810k training edges in each direction; hubs of several thousand)",
    "GraphSAGE, 2 layers, mean aggregator, dim 64, batch 2048 triples, one epoch per setting in its own process; "
    "peak RSS above the RSS with the graph loaded; recall@20 by full ranking on test.txt after the epoch. Holds "
    "if [20, 10] uses less memory than full neighbourhoods with recall within 5%.",
    "bench.fanout_memory",
    [{"arm": "full neighbourhood", "fanouts": [-1, -1], "epochs": 1},
     {"arm": "fan-out [20, 10]", "fanouts": [20, 10], "epochs": 1},
     {"arm": "fan-out [10, 5]", "fanouts": [10, 5], "epochs": 1}],
    ["training_extra_mb", "peak_rss_mb_training", "epoch_seconds", "recall@20"], fanout_verdict)


# --- claim 6: heuristic cold-start edges ------------------------------------------------------------
def cold_verdict(rows: list[dict]) -> tuple[bool, str]:
    parts, held = [], True
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        w = next(r for r in rows if r["dataset"] == dataset and r["edges"])
        wo = next(r for r in rows if r["dataset"] == dataset and not r["edges"])
        held &= w["cold_recall@20"] > wo["cold_recall@20"] and w["cold_recall@20"] > wo["popularity_cold_recall@20"]
        parts.append(f"{dataset}: cold recall@20 {wo['cold_recall@20']:.4f} -> {w['cold_recall@20']:.4f} "
                     f"(popularity {wo['popularity_cold_recall@20']:.4f}), warm {wo['warm_recall@20']:.4f} -> "
                     f"{w['warm_recall@20']:.4f}")
    return held, "; ".join(parts)


COLD = Claim(
    6, "Heuristic edges rescue cold-start users",
    "Linking users with no interactions to warm users who share their attributes gives a GNN something to "
    "propagate, and beats popularity for them.",
    "the synthetic professional network (2,000 members, 800 jobs) and ML-100K (age, gender, occupation)",
    "10% of users held out of training entirely (all their interactions are test targets); LightGCN, K = 3, "
    "with and without heuristic edges (each cold user to the 10 warm users sharing most attributes); early "
    "stopping on warm validation NDCG@20; full ranking, cold and warm users apart; popularity as the baseline. "
    "Holds if the edges raise cold recall@20 above both no-edges and popularity on both data sets.",
    "bench.cold_start",
    [{"arm": f"{d} / {'edges' if e else 'no edges'}", "dataset": d, "edges": e, "seed": 0}
     for d in ("synthetic", "ml-100k") for e in (False, True)],
    ["cold_recall@20", "cold_ndcg@20", "warm_recall@20", "popularity_cold_recall@20",
     "attribute_knn_cold_recall@20"], cold_verdict)


# --- claim 7: hard negatives ------------------------------------------------------------------------
def negatives_verdict(rows: list[dict]) -> tuple[bool, str]:
    a = {r["sampler"]: r for r in rows}
    uni, hard = a["uniform"], a["model (32 cand., softmax T=0.5, guard 95th pct)"]
    too, cur = a["too hard (256 cand., top-1)"], a["ppr band + curriculum"]
    held = hard["ndcg@20"] > uni["ndcg@20"] and too["ndcg@20"] < uni["ndcg@20"]
    return held, (f"NDCG@20: uniform {uni['ndcg@20']:.4f}, model-mined {hard['ndcg@20']:.4f}, PPR band + "
                  f"curriculum {cur['ndcg@20']:.4f}, too hard {too['ndcg@20']:.4f}; holds if model-mined beats "
                  f"uniform and too-hard falls below it")


NEGATIVES = Claim(
    7, "Hard negatives sharpen ranking; too hard hurts",
    "Negatives the model finds hard teach more than uniform ones, but always taking the hardest (no "
    "curriculum, no false-negative guard) hurts, as the PinSage paper warns.",
    "ML-100K (this run); Gowalla figures for the same samplers are in bench/results/negatives.json",
    "LightGCN, K = 3, dim 64, lr 0.005, batch 2048; one run per sampler; per-user random 80/10/10 split; "
    "the epoch chosen on validation NDCG@20 (every 2 epochs, up to 80), test ranked once. Holds if "
    "model-mined beats uniform on NDCG@20 and the too-hard setting falls below uniform.",
    "bench.negatives",
    [{"arm": name, "dataset": "ml-100k", "sampler": name, "epochs": 80, "eval_every": 2, "lr": 0.005}
     for name in SAMPLERS],
    ["recall@20", "ndcg@20", "best_epoch", "train_seconds_to_best_epoch"], negatives_verdict)


def all_claims() -> list[Claim]:
    return sorted([AGGREGATORS, Claim.of("bench.claim_inductive"), Claim.of("bench.claim_pinsage"), LIGHTGCN,
                   FANOUT, COLD, NEGATIVES, Claim.of("bench.claim_mmoe"), Claim.of("bench.llm")],
                  key=lambda c: c.id)


# --- running, logging, reporting -------------------------------------------------------------------
def _numbers(d: dict) -> dict[str, float]:
    return {k.replace("@", "_at_"): float(v) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _params(spec: dict) -> dict[str, str]:
    return {k: json.dumps(v) if not isinstance(v, str) else v for k, v in spec.items()}


def run_claim(claim: Claim, mlflow) -> dict:
    t0 = time.perf_counter()
    with mlflow.start_run(run_name=f"claim {claim.id}: {claim.title}") as parent:
        mlflow.set_tags({"claim.id": claim.id, "claim.data": claim.data})
        rows = []
        for spec in claim.specs:
            row = {**spec, **run_case(claim.module, spec)}
            figures = {k: v for k, v in row.items() if k not in spec}
            print(f"  {spec['arm']}: " + json.dumps(figures)[:400], flush=True)
            with mlflow.start_run(run_name=spec["arm"], nested=True):
                mlflow.log_params(_params(spec))
                mlflow.log_metrics(_numbers(figures))
                if "error" in row:
                    mlflow.set_tag("error", row["error"][-500:])
            rows.append(row)
        held, why = settle(rows, claim.verdict)
        entry = {"id": claim.id, "title": claim.title, "claim": claim.claim, "data": claim.data,
                 "protocol": claim.protocol, "held": bool(held), "verdict": why, "columns": claim.columns,
                 "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
                 "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mlflow_run_id": parent.info.run_id}
        mlflow.set_tags({"claim.held": str(bool(held)), "claim.verdict": why[:5000]})
        mlflow.log_text(section(entry), "claim.md")
    return entry


def _cell(column: str, v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if "seconds" in column or "_mb" in column:
            return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def section(entry: dict) -> str:
    cols = entry["columns"]
    lines = [f"## {entry['id']}. {entry['title']}: {'held' if entry['held'] else 'did not hold'} here", "",
             f"**Claim.** {entry['claim']}", "", f"**Data.** {entry['data']}", "",
             f"**Protocol.** {entry['protocol']}", "",
             "| arm | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in entry["rows"]:
        if "error" in r:
            lines.append(f"| {r['arm']} | failed: {r['error'].strip().splitlines()[-1][:100]} |")
        else:
            lines.append(f"| {r['arm']} | " + " | ".join(_cell(c, r.get(c)) for c in cols) + " |")
    lines += ["", f"**Verdict.** {entry['verdict']}", "",
              f"_Run {entry['date']}, {entry['seconds']:.0f} s; MLflow run `{entry['mlflow_run_id']}` in "
              f"experiment `{EXPERIMENT}`._", ""]
    return "\n".join(lines)


def write_doc(entries: list[dict]) -> None:
    head = ["# The design's claims, measured", "",
            "Each claim below was tested by `python -m bench.claims` on the data named in its section, every arm in "
            "its own process on this machine (2 cores, no GPU), every arm logged to the MLflow experiment "
            f"`{EXPERIMENT}`. The verdict is computed from the numbers by the rule stated in the protocol; "
            "\"did not hold\" means it did not hold on this data, not that it never does.", "",
            "| # | claim | data | held here |", "|---:|---|---|---|"]
    head += [f"| {e['id']} | {e['title']} | {e['data']} | {'yes' if e['held'] else 'no'} |"
             for e in entries]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(head) + "\n\n" + "\n".join(section(e) for e in entries))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", type=int, nargs="*", help="claim numbers to run (default: all nine)")
    p.add_argument("--report", action="store_true", help="only rewrite docs/claims.md from bench/results/claims.json")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: the embedded store, sqlite under .graphrec/)")
    args = p.parse_args()

    entries = {e["id"]: e for e in previous("claims", "claims", [])}
    if args.report:
        write_doc([entries[k] for k in sorted(entries)])
        return

    import mlflow

    from recsys.config import load_config

    mlflow.set_tracking_uri(args.tracking_uri or load_config(None).stores.resolved_tracking_uri())
    mlflow.set_experiment(EXPERIMENT)
    for claim in all_claims():
        if args.only and claim.id not in args.only:
            continue
        print(f"claim {claim.id}: {claim.title} ({len(claim.specs)} arms)", flush=True)
        entries[claim.id] = run_claim(claim, mlflow)
        print(f"  -> {'held' if entries[claim.id]['held'] else 'did not hold'}: {entries[claim.id]['verdict']}",
              flush=True)
        ordered = [entries[k] for k in sorted(entries)]
        write_results("claims", {"claims": ordered},
                      [(f"{e['id']}. {e['title']}", "held" if e["held"] else "did not hold") for e in ordered],
                      "Claims of the design, measured", header=("claim", "here"))
        write_doc(ordered)


if __name__ == "__main__":
    main()
