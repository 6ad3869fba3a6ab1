"""bench/data_scale.py: every phase timed on a small network, and the growth figures by hand."""
from bench.data_scale import PHASES, growth, worker
from recsys.data.loaders import save_files


def test_the_worker_times_every_phase_on_a_small_network(tmp_path, small_network):
    files = {k: str(v) for k, v in save_files(small_network, tmp_path).items()}
    row = worker(files, threads=1)
    assert set(row["seconds"]) == set(row["cpu_seconds"]) == set(PHASES)
    assert row["interactions"] == len(small_network.interactions) and row["members"] == len(small_network.users)
    assert 0 < row["train_pairs"] < row["interactions"] and row["peak_rss_mb"] > 0


def test_growth_is_the_seconds_ratio_over_the_interactions_ratio():
    def row(members, interactions, seconds):
        return {"members": members, "interactions": interactions, "seconds": dict.fromkeys(PHASES, seconds)}

    [g] = growth([row(100, 1000, 2.0), row(1000, 10_000, 40.0)], "seconds")
    assert g["interactions_ratio"] == 10 and g["validate"] == 2.0  # 20x the time for 10x the rows
