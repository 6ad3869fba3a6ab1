"""bench/mf.py: its --help, the validation runs' stopping rule, and the ML-100K path on one epoch."""
import pytest

from bench.common import SHARED_DATA


def test_help_names_the_recipes(capsys):
    from bench.mf import main

    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "--max-epochs" in out and "uniform" in out and "hard" in out


def test_patience_stops_after_that_many_epochs_without_a_better_validation_recall():
    from bench.gowalla import PatienceOnCurve
    from recsys.train import StopTraining

    class Curve:
        points = []

    stop = PatienceOnCurve(Curve, patience=3)
    for epoch, recall in enumerate([0.10, 0.12, 0.11, 0.12], start=1):  # a tie is no improvement
        Curve.points.append({"epoch": epoch, "recall@20": recall})
        stop.on_epoch_end(epoch, {})
    Curve.points.append({"epoch": 5, "recall@20": 0.115})
    with pytest.raises(StopTraining):
        stop.on_epoch_end(5, {})


@pytest.mark.skipif(not (SHARED_DATA / "ml-100k" / "u.data").exists(), reason="needs shared/data/ml-100k")
def test_ml100k_case_trains_mf_through_the_registry_and_reports_test_figures():
    from bench.mf import ML100K_RECIPE, ml100k_case

    r = ml100k_case("mf", ML100K_RECIPE, max_epochs=1, patience=1, threads=2)
    assert r["family"] == "mf" and r["epochs_run"] == 1 and r["best_epoch"] == 1
    assert 0 < r["recall@20"] < 1 and 0 < r["ndcg@20"] < 1
    assert [e for e, _ in r["valid_curve"]] == [1]


def test_stages_are_reused_only_with_the_same_inputs_and_caps_parse(tmp_path, monkeypatch):
    import argparse

    from bench import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    calls = []

    def stage():
        calls.append(1)
        return {"recall@20": 0.1}

    common.Stages("t", resume=False).run("a", {"lr": 1}, stage)
    again = common.Stages("t", resume=True)
    assert again.run("a", {"lr": 1}, stage) == {"recall@20": 0.1} and len(calls) == 1  # reused
    again.run("a", {"lr": 2}, stage)
    assert len(calls) == 2  # other inputs: run again
    fresh = common.Stages("t", resume=False)  # without resume nothing is reused, even after a stage of its own
    fresh.run("b", {}, stage)
    fresh.run("a", {"lr": 2}, stage)
    assert len(calls) == 4
    parser = argparse.ArgumentParser()
    assert common.epoch_caps(parser, ["x", "y"], 30, ["y=5"]) == {"x": 30, "y": 5}
    with pytest.raises(SystemExit):
        common.epoch_caps(parser, ["x"], 30, ["z=5"])
