"""Harness: the synthetic professional network at scale (recsys.data.synthetic.generate, and its later
days) as the scale benches use it (refresh, retrain_scale, gpu, warm_start): 200k jobs, 200
universities, 2,000 companies, 10 interactions per member on average, each block of members viewing
4,096 random candidate jobs, friendships; its Parquet files generated once per size in a process
of their own (`python -m bench.synthetic SIZE FOLDER`) and reused while their settings match.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

NETWORK = {"n_items": 200_000, "n_universities": 200, "n_companies": 2000, "mean_interactions": 10.0,
           "candidates": 4096, "seed": 0}
FILES = ("interactions", "users", "items", "social")


def network_files(size: int, work: Path, timeout: float = 4 * 3600, day: int = 0) -> tuple[dict, dict]:
    """({name: path}, counts) of the network with `size` members (on `day`, recsys/data/next_day.py,
    with the configuration's daily growth) under work/data-<size>[-day<day>], generated in a process
    of its own unless a finished earlier generation with the same settings is there."""
    from bench.runner import failure, run_bounded

    folder = work / (f"data-{size}" + (f"-day{day}" if day else ""))
    done = folder / "network.json"
    wanted = _settings(size, day)
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("network") == wanted and all((folder / f"{n}.parquet").is_file() for n in FILES):
            return {n: str(folder / f"{n}.parquet") for n in FILES}, record["counts"]
    shutil.rmtree(folder, ignore_errors=True)
    print(f"  generating {size:,} members ...", flush=True)
    log = work / "logs" / f"generate-{folder.name}.log"
    code, seconds = run_bounded([sys.executable, "-m", "bench.synthetic", str(size), str(folder), str(day)], log,
                                timeout)
    if code != 0 or not done.is_file():
        raise RuntimeError("generating the network " + failure(code, timeout, log))
    record = json.loads(done.read_text())
    print(f"  generated in {seconds:.0f} s: {record['counts']}", flush=True)
    return {n: str(folder / f"{n}.parquet") for n in FILES}, record["counts"]


def _settings(size: int, day: int) -> dict:
    """What a generated network is kept under: its settings, and for a later day the rule that drew it."""
    from recsys.data.next_day import RULE

    return {**NETWORK, "n_users": size, **({"day": day, "rule": RULE} if day else {})}


def write_network(size: int, folder: Path, day: int = 0) -> None:
    from recsys.data.loaders import save_files
    from recsys.data.next_day import generate_day
    from recsys.data.settings import DayGrowth

    t0 = time.perf_counter()
    data = generate_day(day, DayGrowth().model_dump(), n_users=size, **NETWORK)
    save_files(data, folder)
    counts = {"members": len(data.users), "jobs": len(data.items), "interactions": len(data.interactions),
              "friendships": 0 if data.social is None else len(data.social)}
    (folder / "network.json").write_text(json.dumps({"network": _settings(size, day), "counts": counts,
                                                     "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    write_network(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
