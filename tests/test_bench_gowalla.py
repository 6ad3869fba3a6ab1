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


def test_the_two_step_protocol_validates_each_recipe_once_then_trains_the_winner_for_its_budget(tmp_path,
                                                                                                monkeypatch):
    import torch

    from bench import common
    from bench import gowalla as gw

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    recipes = {"a": {"lr": 1, "about": "recipe a"}, "b": {"lr": 2, "about": "recipe b"}}
    parser = gw.protocol_parser("a two-step bench\n", "t", recipes, list(recipes), max_epochs=30, patience=2)
    args = parser.parse_args(["--max-epochs-for", "b=20", "--threads", str(torch.get_num_threads())])
    calls = []

    def validate(name, recipe, cap):
        calls.append(name)
        best = {"a": 4, "b": 10}[name]
        curve = [{"epoch": e, "train_seconds": float(e), "recall@20": 0.2 - abs(e - best) / 100, "ndcg@20": 0.1}
                 for e in range(1, best + 3)]
        return {"recipe": name, "best_epoch": best, "best_recall@20": 0.2 + recipe["lr"] / 100, "best_ndcg@20": 0.1,
                "epochs_run": len(curve), "stopped": "early (patience)", "epoch_seconds": 1.0, "curve": curve}

    protocol = gw.Protocol(parser, args, "t", recipes)
    validation = protocol.validate(validate)
    assert calls == ["a", "b"] and [v["max_epochs"] for v in validation.values()] == [30, 20]
    chosen, recipe, budget, how, test = protocol.test(validation, lambda recipe, epochs: {"epochs": epochs})
    assert chosen["recipe"] == "b" and recipe is recipes["b"] and budget == 9 and test == {"epochs": 9}
    resumed = ["--resume", "--max-epochs-for", "b=20", "--threads", str(torch.get_num_threads())]
    again = gw.Protocol(parser, parser.parse_args(resumed), "t", recipes)
    assert again.validate(validate) == validation and calls == ["a", "b"]  # reused, not run again
    text = gw.choice(chosen, recipe, validation, how, among=" among ")
    assert "recipe 'b' (recipe b)" in text and "among a 0.2100 at epoch 4, b 0.2200 at epoch 10" in text
    assert gw.validation_rows(validation, "validation, ")[1][0] == "validation, b"
