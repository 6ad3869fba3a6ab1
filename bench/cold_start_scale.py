"""Cold-start edges at scale (issue 19): the previous all-pairs implementations against the linear ones.

Members: the synthetic network's attribute model (bench.synthetic.NETWORK: 200 universities, 2,000
companies, titles from each member's field, as recsys.data.synthetic draws them), 5% cold,
activity drawn as the generator's per-member view counts (5 + Poisson); k = 10 edges per cold
member on university, company and title. Jobs: the network's job vectors (field + company +
noise, recsys.data.synthetic._jobs), 5% cold, k = 10 nearest warm jobs by cosine; plus one row of
random 64-d unit vectors (no neighbourhood structure: the worst case for an ANN index).

The previous implementations (tests/test_cold_start_scale.py) are quadratic: they run on
every cold node at the smallest size only; at larger sizes on the first `--ref-cold` cold nodes
(every warm node kept) and are extrapolated to all of them (members: a line through 1x and 2x
that many; jobs: the per-row cost times the cold count, exact search costs the same per row).
The same subset gives the agreement of the new edges with the previous ones (members: identical
edges; jobs: recall of the exact neighbours).

    ./dev.sh python -m bench.cold_start_scale
    ./dev.sh python -m bench.cold_start_scale --members 62500 250000 --jobs 50000 200000   # shorter
"""
from __future__ import annotations

import argparse
import inspect
import os
import time

import numpy as np
import pandas as pd

from bench.common import growth_ratio, peak_rss_mb, write_results
from bench.synthetic import NETWORK
from recsys.graph.cold_start import attribute_edges, similarity_edges

EXACT_BELOW = inspect.signature(similarity_edges).parameters["exact_below"].default

K = 10
COLD = 0.05


def members(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    from recsys.data.synthetic import FIELDS, _member_taste, _world

    rng = np.random.default_rng(seed)
    world = _world(rng, NETWORK["n_universities"], NETWORK["n_companies"], 16)
    u_uni, u_company, u_field, _ = _member_taste(rng, world, n)
    titles = np.array([FIELDS[f][0] for f in world.field_names])
    frame = pd.DataFrame({"university": np.array(world.universities)[u_uni],
                          "company": np.array(world.companies)[u_company],
                          "title": titles[u_field, rng.integers(3, size=n)]})
    is_cold = rng.random(n) < COLD
    activity = np.where(is_cold, 0, 5 + rng.poisson(NETWORK["mean_interactions"] - 5, size=n))
    return frame, is_cold, activity


def job_vectors(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from recsys.data.synthetic import _jobs, _world

    rng = np.random.default_rng(seed)
    world = _world(rng, NETWORK["n_universities"], NETWORK["n_companies"], 16)
    _, vectors, _ = _jobs(rng, world, n)
    return vectors.astype(np.float32), rng.random(n) < COLD


def random_vectors(n: int, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), rng.random(n) < COLD


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def keep_cold(is_cold: np.ndarray, count: int) -> np.ndarray:
    """Rows of every warm node and of the first `count` cold nodes."""
    cold = np.flatnonzero(is_cold)
    return np.sort(np.concatenate([np.flatnonzero(~is_cold), cold[:count]]))


def member_case(n: int, ref_cold: int, full_reference_below: int) -> dict:
    from tests.test_cold_start_scale import reference_attribute_edges

    frame, is_cold, activity = members(n)
    n_cold = int(is_cold.sum())
    (src, dst, _), new_s = timed(attribute_edges, frame, is_cold, activity, K)
    row = {"members": n, "cold": n_cold, "new_s": round(new_s, 2), "edges": len(src),
           "largest_warm_group": int(frame[~is_cold].groupby("title").size().max())}
    if n <= full_reference_below:
        rows = [np.arange(n)]
    else:
        rows = [keep_cold(is_cold, ref_cold), keep_cold(is_cold, 2 * ref_cold)]
    ref_seconds, same = [], []
    for r in rows:
        sub = frame.iloc[r].reset_index(drop=True)
        expected, seconds = timed(reference_attribute_edges, sub, is_cold[r], activity[r], K)
        got = attribute_edges(sub, is_cold[r], activity[r], K)
        ref_seconds.append(seconds)
        same.append(all(np.array_equal(e, g) for e, g in zip(expected, got)))
    if len(rows) == 1:
        row.update(reference_s=round(ref_seconds[0], 2), reference="measured, every cold member")
    else:
        slope = (ref_seconds[1] - ref_seconds[0]) / ref_cold
        row.update(reference_s=round(ref_seconds[0] + slope * (n_cold - ref_cold), 1),
                   reference=f"extrapolated from {ref_cold} and {2 * ref_cold} cold members "
                             f"({ref_seconds[0]:.1f} s, {ref_seconds[1]:.1f} s)")
    row["identical_to_reference"] = all(same)
    print(f"  members {n}: {row}", flush=True)
    return row


def job_case(n: int, vectors_of, ref_cold: int, full_reference_below: int) -> dict:
    from tests.test_cold_start_scale import reference_similarity_edges

    vectors, is_cold = vectors_of(n)
    n_cold = int(is_cold.sum())
    (src, dst, _), new_s = timed(similarity_edges, vectors, is_cold, K)
    row = {"jobs": n, "cold": n_cold, "dim": vectors.shape[1], "new_s": round(new_s, 2), "edges": len(src),
           "path": "exact" if min(n_cold, n - n_cold) <= EXACT_BELOW else "hnsw"}
    r = np.arange(n) if n <= full_reference_below else keep_cold(is_cold, ref_cold)
    (ref_src, ref_dst, _), seconds = timed(reference_similarity_edges, vectors[r], is_cold[r], K)
    measured_cold = int(is_cold[r].sum())
    row["reference_s"] = round(seconds * n_cold / measured_cold, 1)
    row["reference"] = ("measured, every cold job" if measured_cold == n_cold
                        else f"{seconds:.1f} s for {measured_cold} cold jobs x {n_cold / measured_cold:.1f}")
    truth = set(zip(r[ref_src].tolist(), r[ref_dst].tolist()))
    found = set(zip(src.tolist(), dst.tolist()))
    row["recall_vs_exact"] = round(len(found & truth) / max(len(truth), 1), 4)
    print(f"  jobs {n} ({vectors_of.__name__}): {row}", flush=True)
    return row


def growth(rows: list[dict], size: str, key: str) -> list:
    """(seconds ratio) / (size ratio) from each size to the next: 1 linear, the size ratio quadratic."""
    return [growth_ratio(a[key], b[key], a[size], b[size]) for a, b in zip(rows, rows[1:])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, nargs="+", default=[62_500, 250_000, 1_000_000])
    p.add_argument("--jobs", type=int, nargs="+", default=[50_000, 200_000, 800_000])
    p.add_argument("--random-jobs", type=int, nargs="*", default=[200_000], help="random 64-d unit vectors")
    p.add_argument("--ref-cold", type=int, default=500,
                   help="cold members the previous code runs on above the smallest size (jobs: twice that)")
    args = p.parse_args()
    load = os.getloadavg()[0]
    user_rows = [member_case(n, args.ref_cold, min(args.members)) for n in args.members]
    job_rows = [job_case(n, job_vectors, 2 * args.ref_cold, min(args.jobs)) for n in args.jobs]
    random_rows = [job_case(n, random_vectors, 2 * args.ref_cold, 0) for n in args.random_jobs]
    figures = {
        "k": K, "cold_fraction": COLD, "load_average_at_start": round(load, 1),
        "attribute_edges": user_rows,
        "attribute_edges_growth": {"new": growth(user_rows, "members", "new_s"),
                                   "reference": growth(user_rows, "members", "reference_s")},
        "similarity_edges_network_vectors": job_rows,
        "similarity_edges_growth": {"new": growth(job_rows, "jobs", "new_s"),
                                    "reference": growth(job_rows, "jobs", "reference_s")},
        "similarity_edges_random_64d": random_rows,
        "peak_rss_mb": round(peak_rss_mb()),
    }
    table = []
    for i, r in enumerate(user_rows):
        g = figures["attribute_edges_growth"]
        table.append((f"attribute_edges, {r['members']:,} members ({r['cold']:,} cold)", r["new_s"],
                      g["new"][i - 1] if i else "", r["reference_s"], g["reference"][i - 1] if i else "",
                      "identical edges" if r["identical_to_reference"] else "DIFFERENT edges"))
    for i, r in enumerate(job_rows):
        g = figures["similarity_edges_growth"]
        table.append((f"similarity_edges, {r['jobs']:,} jobs ({r['cold']:,} cold), network vectors d={r['dim']}",
                      r["new_s"], g["new"][i - 1] if i else "", r["reference_s"], g["reference"][i - 1] if i else "",
                      f"{r['path']}, recall {r['recall_vs_exact']}"))
    for r in random_rows:
        table.append((f"similarity_edges, {r['jobs']:,} jobs ({r['cold']:,} cold), random unit vectors d={r['dim']}",
                      r["new_s"], "", r["reference_s"], "", f"{r['path']}, recall {r['recall_vs_exact']}"))
    notes = ("Growth: (seconds ratio) / (size ratio) against the previous size; 1.0 is linear, the size ratio (4) "
             "quadratic. Previous seconds above the smallest size are extrapolated from a subset of cold nodes "
             "(see the JSON's `reference` per row). Agreement is measured on that subset. "
             "similarity_edges searches exactly while at most exact_below (default) items are cold, so the "
             "smallest job size takes the exact path (as fast as before) and the larger ones the HNSW index. "
             "Random 64-d unit vectors have no neighbourhood structure (every warm vector is nearly as far as the "
             "nearest): the worst case for HNSW, shown for honesty; content vectors are clustered like the network's. "
             "Peak RSS is the process's and includes the previous implementations' runs. "
             f"Load average at start {load:.1f} on a shared 2-core machine: absolute seconds are noisy.")
    write_results("cold_start_scale", figures, table, "Cold-start edges: previous all-pairs vs linear",
                  notes, header=("case", "new s", "new growth", "previous s", "previous growth", "agreement"))


if __name__ == "__main__":
    main()
