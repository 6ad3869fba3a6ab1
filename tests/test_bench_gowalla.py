"""The Gowalla paper protocol (bench/gowalla.py): the paper's epoch choice on a test curve; the epoch
budget carried over from a validation curve. (The parameter average it ranks with is
recsys.train.ParameterAverage, tested in tests/test_train.py.)"""

def test_best_evaluation_is_the_highest_recall_point_with_its_own_ndcg():
    from bench.gowalla import best_evaluation

    points = [{"epoch": e, "recall@20": r, "ndcg@20": n, "train_seconds": 60.0 * e}
              for e, r, n in [(1, 0.10, 0.09), (2, 0.18, 0.14), (3, 0.17, 0.16)]]
    best = best_evaluation(points)
    # chosen by recall@20, as the paper's early stopping does: epoch 2, not epoch 3's higher NDCG
    assert (best["epoch"], best["recall@20"], best["ndcg@20"], best["train_seconds"]) == (2, 0.18, 0.14, 120.0)
    assert best["evaluations"] == 3
    assert best_evaluation([]) is None


def test_validated_budget_takes_the_best_epoch_of_the_series_and_carries_its_steps_over():
    from bench.gowalla import validated_budget

    curve = [{"epoch": e, "recall@20": r, "raw": [r, 0.0], "ema0.998": [a, 0.0]}
             for e, r, a in [(5, 0.19, 0.18), (10, 0.21, 0.20), (15, 0.20, 0.22), (20, 0.19, 0.21)]]
    assert validated_budget(curve, "raw")[0] == 9  # epoch 10 on 90% of train.txt: 9 epochs on all of it
    epochs, how = validated_budget(curve, "ema0.998")
    assert epochs == 14 and "best validation epoch 15" in how  # 13.5 rounds to even
    assert validated_budget(curve, "ema0.5")[0] == 9  # a series the curve lacks: its headline recall@20


def test_a_stage_is_reused_on_resume_only_with_the_same_inputs(tmp_path, monkeypatch):
    from bench import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    calls = []

    def stage(value):
        calls.append(value)
        return {"value": value}

    assert common.Stages("t", resume=False).run("a", {"x": 1}, lambda: stage(1)) == {"value": 1}
    assert common.Stages("t", resume=True).run("a", {"x": 1}, lambda: stage(2)) == {"value": 1}  # reused
    assert common.Stages("t", resume=True).run("a", {"x": 2}, lambda: stage(3)) == {"value": 3}  # inputs changed
    assert common.Stages("t", resume=False).run("a", {"x": 2}, lambda: stage(4)) == {"value": 4}  # no --resume
    assert calls == [1, 3, 4]
