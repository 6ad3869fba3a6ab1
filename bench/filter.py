"""The graph-filter family (issue 46) beside LightGCN's default, data set by data set.

Per data set, in a process of its own (its peak RSS its own): the data prepared as the retraining flow
prepares it (Gowalla, LastFM, ML-100K: bench.transfer's splits; the synthetic network: the flow's
temporal split, as bench.retrain_scale ran it); the filter's settings chosen on the validation split by
a coordinate search from the defaults (each option over its grid in turn, the best kept; --rounds, 2;
the randomized SVD is computed once per graph and reused by every candidate, as in a search); then the
chosen filter fitted again from nothing on training and validation pairs together (train.refit, what
the flow serves): its fit seconds; test ranked once, with the served rank-k vectors and with the exact
filter (sparse products, 256 users at a time), on the same users (eval.max_users as the flow ranks:
every user on the public sets, a seeded 10,000 on the network; --exact-users: a seeded sample for the
exact filter, the served vectors ranked on it too). Peak RSS: the child's peak before the test is
ranked (data, search, fit and refit); the exact filter's ranking is recorded apart.

    ./dev.sh python -m bench.filter [--datasets gowalla lastfm ml-100k network100k network1m]
        [--set KEY=VALUE ...] [--rounds 2] [--settings-from ROW] [--exact-users N] [--ranks K ...]
        [--work DIR] [--resume]

Row gowalla-published is Gowalla with the family's defaults, ChebyCF's published Gowalla settings
(its authors' choice, on the test split), with no search: a check of the implementation against the
paper's figure, and the price of serving those settings as vectors (--ranks 1536 2048: the served
vectors at more ranks, each fitted from nothing, beside the configured one). It is not a row chosen
on validation.

LightGCN's figures are the committed ones of the same splits: bench/results/transfer.json (its default
recipe, refit, every test user) and bench/results/retrain_scale.json (the network, the bench's settings:
its epochs within the nightly bound). Writes bench/results/filter.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.common import PUBLIC_SETS, Stages, peak_rss_mb, previous, write_results
from recsys.families import FILTER_IDEAL_RANKS

NAME = "filter"
DATASETS = ["gowalla", "lastfm", "ml-100k", "network100k", "network1m", "gowalla-published"]
PUBLISHED = {"gowalla-published": "gowalla"}  # row -> the data set it runs, with the defaults and no search
GRID = {"kind": ["cheby", "linear"], "norm_power": [0.3, 0.35, 0.4, 0.45, 0.5],
        "degree_power": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "ideal_rank": FILTER_IDEAL_RANKS,
        "ideal_weight": [0.0, 0.1, 0.2, 0.4, 0.7, 1.0], "order": [4, 8, 12, 16],
        "flatness": [0.5, 1.0, 1.5, 2.5, 4.0, 8.0]}


def data_sets(name: str, work: Path) -> list[str]:
    """The configuration settings that load and split data set `name`."""
    name = PUBLISHED.get(name, name)
    if name in PUBLIC_SETS:
        return [*PUBLIC_SETS[name], "eval.max_users=null"]
    from bench.synthetic import network_files

    members = {"network100k": 100_000, "network1m": 1_000_000}[name]
    files, _ = network_files(members, work)
    return ["data.source=files", *(f"data.{k}={v}" for k, v in files.items())]


def lightgcn_default(name: str) -> tuple[float | None, str]:
    """(LightGCN's default test recall@20 on this split, where it comes from)."""
    name = PUBLISHED.get(name, name)
    if name.startswith("network"):
        members = {"network100k": 100_000, "network1m": 1_000_000}[name]
        rows = [r for r in previous("retrain_scale", "rows", []) if r["family"] == "lightgcn"
                and r["members"] == members and r["settings"] == [f"train.epochs={10 if members == 100_000 else 4}"]]
        return (rows[0]["recall@20"], f"retrain_scale.json: {rows[0]['epochs']} epochs") if rows else (None, "-")
    rows = [r for r in previous("transfer", "rows", []) if r.get("dataset") == name]
    return (rows[0].get("default_recall@20"), "transfer.json: default recipe") if rows else (None, "-")


def child(spec: dict) -> None:
    """One data set, start to end (see the module): spec's name, sets, rounds, `fixed` (settings
    taken as chosen, no search: another row's; `search` false: the defaults, no search), exact_users
    (test users the exact filter ranks: a seeded sample, the served vectors ranked on it as well),
    ranks (more ranks to serve at); figures to spec's out."""
    name, sets, out = spec["name"], spec["sets"], Path(spec["out"])
    from recsys.config import load_config
    from recsys.data.loaders import load_data
    from recsys.filter_fit import train_filter
    from recsys.metrics import evaluate_scores
    from recsys.models import build_model
    from recsys.prepare import prepare
    from recsys.train import evaluate_model

    base = load_config(None, [*sets, "model.family=filter", "train.progress=false"])
    prepared = prepare(load_data(base.data), base)
    monitor = base.train.monitor
    chosen = base.model.filter.model_dump()
    tried: dict[str, float] = {}

    def score(options: dict) -> float:
        key = json.dumps(options, sort_keys=True)
        if key not in tried:
            cfg = base.model_copy(update={"model": base.model.model_copy(update={
                "filter": base.model.filter.model_validate(options)})})
            model = build_model(cfg.model, prepared.graph)
            model.fit(prepared.graph)
            tried[key] = evaluate_model(model, prepared.graph, prepared.indexed, "valid", cfg.eval)[monitor]
            print(f"  [{name}] {options} valid {monitor}={tried[key]:.5f}", flush=True)
        return tried[key]

    t0 = time.perf_counter()
    chosen = spec.get("fixed") or chosen
    best = score(chosen) if len(prepared.indexed.valid) else float("nan")
    for _ in range(spec["rounds"] if spec.get("search", True) and not spec.get("fixed") else 0):
        for option, values in GRID.items():
            for value in values:
                candidate = {**chosen, option: value}
                if candidate["ideal_rank"] > candidate["rank"] or candidate == chosen or (
                        option == "ideal_weight" and not candidate["ideal_rank"]) or (
                        option in ("order", "flatness") and candidate["kind"] == "linear"):
                    continue  # out of range, or the same filter as one tried
                if score(candidate) > best:
                    best, chosen = score(candidate), candidate
    search_seconds = time.perf_counter() - t0
    cfg = base.model_copy(update={"model": base.model.model_copy(update={
        "filter": base.model.filter.model_validate(chosen)})})
    trained = train_filter(prepared, cfg, build_model(cfg.model, prepared.graph))  # fit, then refit from nothing
    model, graph, data = trained.model, trained.graph, trained.indexed or prepared.indexed
    fit_rss = round(peak_rss_mb())  # the process's peak so far: data, the search (if any), the fit and refit
    served = evaluate_model(model, graph, data, "test", cfg.eval)
    sample = cfg.eval.model_copy(update={"max_users": spec.get("exact_users") or cfg.eval.max_users})
    on_sample = served if sample == cfg.eval else evaluate_model(model, graph, data, "test", sample)
    t1 = time.perf_counter()
    exact = evaluate_scores(lambda users: model.exact_scores(graph, users), data.n_users, data.n_items,
                            data.split("test"), data.seen_before("test"),
                            **{**sample.ranking(), "chunk_size": 256})  # its products hold users x chunk
    exact_seconds = time.perf_counter() - t1
    by_rank = [_at_rank(cfg, graph, data, rank) for rank in spec.get("ranks") or []]
    out.write_text(json.dumps({
        "dataset": name, "members": data.n_users, "items": data.n_items, "train_pairs": len(data.train),
        "exact_recall@20": exact["recall@20"], "exact_ndcg@20": exact["ndcg@20"],
        "exact_users": sample.max_users, "served_recall@20_on_exact_users": on_sample["recall@20"],
        "served_recall@20": served["recall@20"], "ndcg@20": served["ndcg@20"],
        "fit_seconds": round(trained.result.history[0]["fit_seconds"], 1), "peak_rss_mb": fit_rss,
        "peak_rss_mb_with_exact": round(peak_rss_mb()),
        "exact_test_seconds": round(exact_seconds, 1), "search_seconds": round(search_seconds, 1), "by_rank": by_rank,
        "candidates_tried": len(tried), "valid_" + monitor: best, "chosen": chosen,
        "eval_users": cfg.eval.max_users}))


def _at_rank(cfg, graph, data, rank: int) -> dict:
    """The chosen filter at another rank, fitted from nothing on the served graph: its fit seconds and
    test figures (the same users as the served row)."""
    from recsys.models import build_model
    from recsys.train import evaluate_model

    options = cfg.model.filter.model_copy(update={"rank": rank})  # (the fit takes at most `rank` ideal eigenvectors)
    model = build_model(cfg.model.model_copy(update={"filter": options}), graph)
    started = time.perf_counter()
    model.fit(graph)
    fitted = time.perf_counter() - started
    figures = evaluate_model(model, graph, data, "test", cfg.eval)
    return {"rank": rank, "fit_seconds": round(fitted, 1), "served_recall@20": figures["recall@20"],
            "ndcg@20": figures["ndcg@20"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="*", choices=DATASETS, default=DATASETS,
                   help="the rows to run (none: rewrite the results from the rows they hold)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more settings for every data set")
    p.add_argument("--work", type=Path, default=Path.home() / "graphrec-filter")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the coordinate search over the grid")
    p.add_argument("--settings-from", choices=DATASETS, help="no search: the settings chosen on that (finished) row")
    p.add_argument("--exact-users", type=int, help="test users the exact filter ranks (a seeded sample; default: "
                                                   "those the served vectors rank)")
    p.add_argument("--ranks", nargs="*", type=int, default=[],
                   help="serve at these ranks too (each fitted from nothing; test figures and fit seconds)")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds a data set may run")
    p.add_argument("--resume", action="store_true", help="reuse data sets finished with the same inputs")
    args = p.parse_args(argv)
    from bench.runner import failure, run_bounded

    stages = Stages(NAME, args.resume)
    old = {r["dataset"]: r for r in previous(NAME, "rows", [])}
    for name in args.datasets:
        sets = data_sets(name, args.work) + list(args.set)
        fixed = old[args.settings_from]["chosen"] if args.settings_from and name not in PUBLISHED else None

        def run(name=name, sets=sets, fixed=fixed):
            out = args.work / f"{name}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.unlink(missing_ok=True)
            log = args.work / "logs" / f"{name}.log"
            spec = args.work / f"{name}-spec.json"
            spec.write_text(json.dumps({"name": name, "sets": sets, "out": str(out), "rounds": args.rounds,
                                        "fixed": fixed, "exact_users": args.exact_users, "ranks": args.ranks,
                                        "search": name not in PUBLISHED}))
            code, _ = run_bounded([sys.executable, "-m", "bench.filter", "--child", str(spec)], log, args.timeout)
            if code != 0 or not out.is_file():
                raise RuntimeError(f"bench.filter {name} " + failure(code, args.timeout, log))
            return json.loads(out.read_text())

        row = stages.run(name, {"sets": sets, "rounds": args.rounds, "fixed": fixed, "exact": args.exact_users,
                                **({"ranks": args.ranks} if args.ranks else {})}, run)
        row["chosen_on"] = f"{args.settings_from}'s validation" if fixed else "its validation"
        row["lightgcn_default_recall@20"], row["lightgcn_from"] = lightgcn_default(name)
        old[name] = row
    rows = [old[n] for n in DATASETS if n in old]
    for row in rows:
        if row["dataset"] in PUBLISHED:
            row["chosen_on"] = "the test split, by ChebyCF's authors (their published settings)"
    gowalla = old.get("gowalla", {})
    one_m = old.get("network1m", {})
    write_results(NAME, {"rows": rows, "gowalla_served_recall@20": gowalla.get("served_recall@20"),
                         "gowalla_fit_seconds": gowalla.get("fit_seconds"),
                         "filter_1m_fit_seconds": one_m.get("fit_seconds"),
                         "filter_1m_peak_rss_mb": one_m.get("peak_rss_mb"), "settings": args.set},
                  [(r["dataset"], r["members"], r.get("exact_users") or "all", _f(r["exact_recall@20"]),
                    _f(r.get("served_recall@20_on_exact_users")), _f(r["served_recall@20"]), _f(r["ndcg@20"]),
                    r["fit_seconds"], r["peak_rss_mb"], _f(r["lightgcn_default_recall@20"]), r["lightgcn_from"],
                    _f(r.get("valid_ndcg@20")), f"{_chosen(r['chosen'])} (on {r['chosen_on']})") for r in rows],
                  "The graph filter beside LightGCN's default (test, ranked once)",
                  notes=" ".join(__doc__.split("\n\n")[i].replace("\n", " ")
                                 for i in (1, 3) if i == 1 or any(r["dataset"] in PUBLISHED for r in rows))
                  + _by_rank(rows),
                  header=("data set", "members", "exact: test users", "exact R@20", "served R@20 (same users)",
                          "served R@20", "served NDCG@20", "fit s", "peak RSS MB", "LightGCN default R@20",
                          "LightGCN figure from", "valid NDCG@20 of the settings", "settings (chosen on)"))
    return 0


def _by_rank(rows: list[dict]) -> str:
    """The served vectors at more ranks (--ranks), as a table after the notes."""
    lines = [f"| {r['dataset']} | {r['chosen']['rank']} (served row) | {r['fit_seconds']} | "
             f"{_f(r['served_recall@20'])} | {_f(r['ndcg@20'])} | {_f(r['exact_recall@20'])} |\n"
             + "".join(f"| {r['dataset']} | {b['rank']} | {b['fit_seconds']} | {_f(b['served_recall@20'])} | "
                       f"{_f(b['ndcg@20'])} | |\n" for b in r["by_rank"])
             for r in rows if r.get("by_rank")]
    return ("\n\nThe served vectors' rank (each fitted from nothing on the served graph; test, every user):\n\n"
            "| data set | rank | fit s | served R@20 | served NDCG@20 | exact R@20 |\n|---|---:|---:|---:|---:|---:|\n"
            + "".join(lines)) if lines else ""


def _f(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _chosen(options: dict) -> str:
    keep = ("kind", "order", "flatness", "ideal_rank", "ideal_weight", "degree_power", "norm_power", "rank")
    return ", ".join(f"{k}={options[k]}" for k in keep if k in options)


if __name__ == "__main__":
    if "--child" in sys.argv:
        child(json.loads(Path(sys.argv[sys.argv.index("--child") + 1]).read_text()))
    else:
        sys.exit(main())
