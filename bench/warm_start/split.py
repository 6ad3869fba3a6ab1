"""Where a warm model gains and loses against the scratch model, by the origin of the pairs judged.

`bench.warm_start` leaves, per row, day 2's scratch and warm stores. Day 2's held-out pairs are of two
kinds: pairs day 1's data set already had, held out there too (its validation or test pairs; day 1's
champion never trained on them), and pairs new on day 2. This bench ranks both stores' champions on
each kind apart, user by user on the same users: validation with the vectors the gates judge (the
model chosen on validation), test with the served ones. It reads test, so it chooses nothing; it
says whether day 2's validation split can rank a warm run against a scratch run the way test does.

    ./dev.sh python -m bench.warm_start.split [--rows network300k-lightgcn ...] [--users 100000]

Writes bench/results/warm_split.json (`rows`: row, split, origin, pairs, users, scratch_recall@20,
warm_recall@20, warm_minus_scratch, se, z) and warm_split.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import command, write_results
from bench.warm_start import ROWS, data_sets

ORIGINS = ("day-1 held-out", "new on day 2")


def _indexed(sets: list[str], users: int | None):
    from recsys.config import load_config
    from recsys.data.loaders import load_data, with_split

    cfg = load_config(None, [*sets, f"eval.max_users={users or 'null'}"])
    return with_split(load_data(cfg.data), cfg.data).indexed(), cfg.eval


def _pair_keys(data, pairs):
    import pandas as pd

    return pd.Series(data.user_ids[pairs[:, 0]]).astype(str) + "\t" + pd.Series(data.item_ids[pairs[:, 1]]).astype(str)


def _vectors(store: Path, data) -> dict:
    """The champion's (gate, served) vectors of `store`, in `data`'s id order."""
    import mlflow
    import numpy as np
    import pandas as pd

    from deploy.champion import judged
    from deploy.tracking import load_registered

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    model = load_registered("graphrec-recommender", "champion")
    users = pd.Index(model.user_ids).get_indexer(data.user_ids)
    items = pd.Index(model.item_ids).get_indexer(data.item_ids)
    if (users < 0).any() or (items < 0).any():
        raise SystemExit(f"the champion in {store} lacks users or items of day 2: not this row's model")
    out = {}
    for kind, (u, i) in {"valid": judged(model), "test": (model.user_vectors, model.item_vectors)}.items():
        out[kind] = (np.asarray(u)[users], np.asarray(i)[items])
    return out


def split_row(row: str, work: Path, users: int | None) -> list[dict]:
    import numpy as np

    from recsys.metrics import evaluate_per_user

    days = data_sets(row, work)
    family = [f"model.family={ROWS[row][1]}"]
    one, _ = _indexed(family + days[1], users)
    two, eval_cfg = _indexed(family + days[2], users)
    held = set(_pair_keys(one, np.concatenate([one.valid, one.test])))
    vectors = {stage: _vectors(work / row / stage / "store", two) for stage in ("scratch", "warm")}
    out = []
    for split in ("valid", "test"):
        pairs = getattr(two, split)
        old = _pair_keys(two, pairs).isin(held).to_numpy()
        for origin, mask in zip(ORIGINS, (old, ~old)):
            if not mask.any():  # Gowalla's day 1 holds out no validation pair of day 2's
                continue
            recall = {}
            for stage in ("scratch", "warm"):
                ranked, values = evaluate_per_user(*vectors[stage][split], pairs[mask], two.seen_before(split),
                                                   **eval_cfg.ranking())
                recall[stage] = values["recall@20"]
            diff = recall["warm"] - recall["scratch"]
            se = float(diff.std(ddof=1) / len(diff) ** 0.5) if len(diff) > 1 else 0.0
            out.append({"row": row, "split": split, "origin": origin, "pairs": int(mask.sum()),
                        "share": round(float(mask.mean()), 4), "users": len(diff),
                        "scratch_recall@20": round(float(recall["scratch"].mean()), 5),
                        "warm_recall@20": round(float(recall["warm"].mean()), 5),
                        "warm_minus_scratch": round(float(diff.mean()), 5), "se": round(se, 5),
                        "z": round(float(diff.mean()) / se, 2) if se > 0 else None})
            print(out[-1], flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.warm_start.split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=["network300k-lightgcn"])
    p.add_argument("--users", type=int, default=100_000, help="users ranked per comparison (0: every one)")
    p.add_argument("--work", type=Path, default=Path.home() / "graphrec-warm-start",
                   help="bench.warm_start's folder (its stores)")
    args = p.parse_args(argv)
    write([r for row in args.rows for r in split_row(row, args.work, args.users)], args.users, argv)


def write(rows: list[dict], users: int, argv: list[str] | None) -> None:
    write_results("warm_split", {"rows": rows, "users": users, "command": command("warm_start.split", argv)},
                  [(r["row"], r["split"], r["origin"], f"{r['share']:.1%}", r["users"], r["scratch_recall@20"],
                    r["warm_recall@20"], r["z"]) for r in rows],
                  "Warm against scratch on day 2, by where the held-out pairs come from",
                  "Validation: the models chosen on validation (what early stopping and the gates judge); test: the "
                  "served models. `day-1 held-out`: pairs day 1's data set held out too (its validation or test), "
                  "which day 1's champion never trained on; z: the paired per-user difference over its standard "
                  f"error. Command: `{command('warm_start.split', argv)}`.",
                  header=("row", "split", "pairs from", "share of pairs", "users", "scratch R@20", "warm R@20", "z"))


if __name__ == "__main__":
    main()
