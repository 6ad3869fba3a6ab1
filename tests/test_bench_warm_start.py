"""bench/warm_start.py's Gowalla days: yesterday holds no arrival and 90% of the others' pairs;
today's validation is exactly what yesterday did not have (an arrival's: a tenth of theirs), so
neither of today's runs has trained on it; test pairs are those of users and items the day knows.
And the figures the issue names, from the rows."""
import pandas as pd


def test_the_gowalla_days_hold_out_of_validation_everything_yesterday_trained_on(tmp_path):
    import numpy as np

    from bench.warm_start import gowalla_days

    rng = np.random.default_rng(1)
    src = tmp_path / "lgcn"
    src.mkdir()
    for name, per_user in (("train.txt", 30), ("test.txt", 5)):
        lines = [" ".join(map(str, [u, *rng.choice(60, per_user, replace=False)])) for u in range(100)]
        (src / name).write_text("\n".join(lines) + "\n")
    days = {d: pd.read_parquet(v["interactions"]) for d, v in gowalla_days(tmp_path / "work", src).items()}
    one, two = days[1], days[2]
    had = one[one["split"] != "test"]
    seen = set(zip(had["user_id"], had["item_id"]))
    arrivals = set(two["user_id"]) - set(one["user_id"])
    assert len(arrivals) == 5  # 5% of the 100 users
    two_valid = two[two["split"] == "valid"]
    for user, item in zip(two_valid["user_id"], two_valid["item_id"]):
        assert (user, item) not in seen
    not_seen = two[(two["split"] == "train") & ~two["user_id"].isin(arrivals)]
    assert all(pair in seen for pair in zip(not_seen["user_id"], not_seen["item_id"]))
    assert set(one["split"]) == {"train", "valid", "test"}
    assert abs(len(one[one["split"] != "test"]) - 0.9 * 95 * 30) < 100
    for day in (one, two):
        trained = day[day["split"] == "train"]
        test = day[day["split"] == "test"]
        assert set(test["user_id"]) <= set(day["user_id"]) and set(test["item_id"]) <= set(trained["item_id"])


def test_the_summary_takes_the_worst_row():
    from bench.warm_start.report import summary

    rows = [{"row": "a", "warm_seconds_to_scratch_best": 10.0, "scratch_seconds": 100.0,
             "warm_test_recall@20": 0.2, "scratch_test_recall@20": 0.2},
            {"row": "network1m-lightgcn", "warm_seconds_to_scratch_best": 30.0, "scratch_seconds": 100.0,
             "warm_test_recall@20": 0.19, "scratch_test_recall@20": 0.2, "warm_train_seconds": 900.0,
             "warm_flow_seconds": 1200.0}]
    out = summary(rows)
    assert out["worst_warm_time_ratio"] == 0.3 and out["worst_warm_quality_ratio"] == 0.95
    assert out["lightgcn_1m_warm_total_seconds"] == 1200.0  # end to end, not the train phase alone
    rows[0]["warm_seconds_to_scratch_best"] = None  # never reached: no ratio can be claimed
    assert summary(rows)["worst_warm_time_ratio"] is None


def test_a_row_run_on_several_seeds_is_judged_on_their_means():
    """Three seeds' (scratch, warm) test figures, worked by hand: means 0.40 and 0.39; per-seed
    differences -0.03, 0.00, 0.00: their standard error sqrt(0.0003 / 3) = 0.01."""
    from bench.warm_start.report import over_seeds, summary

    runs = [({"test_recall@20": s}, {"test_recall@20": w}) for s, w in ((0.43, 0.40), (0.38, 0.38), (0.39, 0.39))]
    seeds = over_seeds(runs)
    assert [s["seed"] for s in seeds["seeds"]] == [0, 1, 2]
    assert seeds["scratch_test_recall@20_mean"] == 0.4 and seeds["warm_test_recall@20_mean"] == 0.39
    assert seeds["seeds_difference_se"] == 0.01
    row = {"row": "embedded-lightgcn", "warm_seconds_to_scratch_best": 1.0, "scratch_seconds": 10.0,
           "warm_test_recall@20": 0.40, "scratch_test_recall@20": 0.43, **seeds}  # seed 0's own: ratio 0.930
    assert summary([row])["worst_warm_quality_ratio"] == 0.975  # 0.39 / 0.40


def test_a_stage_goes_on_from_kept_state_only_when_its_inputs_left_it(tmp_path):
    """An interrupted stage's folder (its store keeping the loop's state) is gone on from only when the
    same stage inputs prepared it; a folder another recipe or day 2 left, whose store may hold that
    run's champion, or one that says nothing of its inputs, starts afresh."""
    from bench.warm_start import _interrupted, _mark

    folder = tmp_path / "warm"
    (folder / "store" / "checkpoints" / "run").mkdir(parents=True)
    inputs = {"sets": [], "epochs": 200, "warm_recipe": {"warm_shrink": 0.1}}
    assert not _interrupted(folder, inputs)  # no record of its inputs
    _mark(folder, inputs)
    assert not _interrupted(folder, inputs)  # nothing kept yet
    (folder / "store" / "checkpoints" / "run" / "train.pt").write_bytes(b"kept")
    assert _interrupted(folder, inputs)
    assert not _interrupted(folder, {**inputs, "warm_recipe": {"warm_shrink": 0.3}})
