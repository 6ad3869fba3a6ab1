"""bench/transfer.py end to end on a tiny folder in LightGCN format: the default recipe through the
retraining flow, a search whose budget is one trial (the default run itself, taken as the study's
first trial: nothing trained again), and the row the issue names, with validation carved from train."""
import json

import bench.common
import bench.transfer
from recsys.config import DataConfig
from recsys.data.loaders import with_split
from tests.test_bench_gpu import write_lightgcn_format


def test_transfer_runs_both_recipes_and_the_search_starts_from_the_default(small_network, tmp_path, monkeypatch):
    data = with_split(small_network, DataConfig()).indexed()
    write_lightgcn_format(data, tmp_path / "tiny")
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench.transfer, "COMMON", [*bench.transfer.COMMON, "model.dim=32", "train.epochs=6"])
    stale = tmp_path / "work" / "tiny" / "search" / "left-by-an-earlier-run"  # e.g. a study it would resume
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    code = bench.transfer.main(["--datasets", "--path", str(tmp_path / "tiny"), "--published", "tiny=0.5",
                                "--search-seconds", "3600", "--search-trials", "1", "--work", str(tmp_path / "work"),
                                "--name", "transfer_check"])
    assert code == 0
    record = json.loads((tmp_path / "results" / "transfer_check.json").read_text())
    (row,) = record["rows"]
    assert row["dataset"] == "tiny" and row["published_recall@20"] == 0.5
    assert "carved from train" in row["chosen_on"]
    assert row["default_valid_recall@20"] > 0
    assert row["trial_0_from_default"] and row["trials"]["complete"] == 1 and row["chosen_trial"] == 0
    assert row["proven_tried"] == ["lastfm", "ml-100k"]  # a --path data set: none of them its own
    assert row["chosen_because"] and row["searched_recall@20"] == row["default_recall@20"]
    assert row["search_seconds"] == 3600 and row["search_command_seconds"] >= row["trials_seconds"]  # budget, times
    assert (tmp_path / "results" / "transfer_check.md").exists()
    assert not stale.exists()  # a stage that runs starts on an empty stores root
    # the paired test comparison, recomputed from the snapshot's vectors, gives the flow's own test figure
    assert row["test_paired"] == {"users": row["test_paired"]["users"], "default": row["default_recall@20"],
                                  "searched": row["default_recall@20"], "searched_minus_default": 0.0, "se": 0.0,
                                  "z": None}  # the recipe chosen: the same model
    assert row["test_paired"]["users"] == len({u for u, _ in data.test.tolist()})

    # --pair-only on rows already written: refused for a row its models do not reproduce; a note is kept
    path, pair_only = tmp_path / "results" / "transfer_check.json", [
        "--datasets", "--path", str(tmp_path / "tiny"), "--work", str(tmp_path / "work"), "--name", "transfer_check",
        "--pair-only"]
    del row["test_paired"]
    path.write_text(json.dumps({**record, "rows": [{**row, "default_recall@20": row["default_recall@20"] + 0.01}],
                                "note": "kept by hand"}))
    assert bench.transfer.main(pair_only) == 1
    assert "test_paired" not in json.loads(path.read_text())["rows"][0]
    assert bench.transfer.main([*pair_only[:3], "--work", str(tmp_path / "elsewhere"), *pair_only[5:]]) == 1
    assert "test_paired" not in json.loads(path.read_text())["rows"][0]  # no models there: refused, no traceback
    path.write_text(json.dumps({**record, "rows": [row], "note": "kept by hand"}))
    assert bench.transfer.main(pair_only) == 0
    again = json.loads(path.read_text())
    assert again["rows"][0]["test_paired"]["default"] == row["default_recall@20"] and again["note"] == "kept by hand"
    assert (tmp_path / "results" / "transfer_check.md").read_text().rstrip().endswith("kept by hand")


def test_a_rows_code_stamp_ignores_the_benchs_own_results(tmp_path):
    """The stamp names the commit; changed results files leave it plain, any other tracked change
    marks it, wherever in the checkout git is asked from (the bench asks from bench/)."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org",
                               *args], check=True, capture_output=True, text=True).stdout.strip()

    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "r.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "--short", "HEAD")
    (tmp_path / "bench" / "results" / "r.json").write_text('{"rows": []}\n')
    assert bench.transfer._commit(tmp_path / "bench") == head
    (tmp_path / "README.md").write_text("b\n")
    assert bench.transfer._commit(tmp_path / "bench") == head + "+changes"
