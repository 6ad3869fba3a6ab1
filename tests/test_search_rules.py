"""The search's rules on real Optuna studies (SQLite storage) and MLflow runs, without the flow:
pruning by pace and by the median rule, the choice between the best trial and the recipe, and the
order of a new study's first trials (the recipe, proven settings, the recipe's neighbours)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from recsys.config import ConfigError, load_config
from tests.search_setup import sets


def test_with_one_startup_trial_the_second_is_pruned_when_it_falls_behind_the_recipe(tmp_path):
    """search.median_pruning with search.pruner_startup_trials=1: with one completed trial (the
    configured recipe) the pruner already judges: past the warm-up epochs, a trial whose best figure is
    below the recipe's at that epoch is pruned, one at or above it is not."""
    from deploy.study_store import open_study

    s = open_study(load_config(None, sets(tmp_path, "search.first_trial_configured=false",
                                          "search.median_pruning=true", "search.pruner_startup_trials=1")),
                   first=True)
    recipe = s.ask()
    for epoch, value in enumerate([0.10, 0.20, 0.30, 0.35], start=1):
        recipe.report(value, epoch)
    s.tell(recipe, 0.35)
    behind, level = s.ask(), s.ask()
    for epoch, (b, v) in enumerate([(0.10, 0.10), (0.15, 0.20), (0.25, 0.30)], start=1):
        behind.report(b, epoch)
        level.report(v, epoch)
    assert behind.should_prune() and not level.should_prune()


@pytest.mark.parametrize("median", [False, True])
def test_the_median_rule_prunes_a_slow_starter_only_when_turned_on(tmp_path, median):
    """search.median_pruning (off by default): three trials complete, the recipe's curve 0.10, 0.20,
    0.30, 0.35 and two at 0.30, 0.40, 0.50, 0.60. A fourth at 0.10, 0.20, 0.30 is below the others'
    median at epoch 3 (0.50), past the 2 warm-up epochs, so the median rule prunes it; the pace rule
    (on) does not: by epoch 3 / 2 the recipe had 0.10."""
    from deploy.study_store import open_study
    from recsys.families import family

    s = open_study(load_config(None, sets(tmp_path, f"search.median_pruning={str(median).lower()}")), first=True)
    for curve in ([0.10, 0.20, 0.30, 0.35], [0.30, 0.40, 0.50, 0.60], [0.30, 0.40, 0.50, 0.60]):
        trial = s.ask()
        family("lightgcn").space(trial)
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
        s.tell(trial, max(curve))
    slow = s.ask()
    family("lightgcn").space(slow)
    for epoch, value in enumerate([0.10, 0.20, 0.30], start=1):
        slow.report(value, epoch)
    assert slow.should_prune() is median


@pytest.mark.parametrize("min_gain_se, kept", [(1.0, "recipe"), (0.5, "best"), (0.0, "best")])
def test_a_lead_over_the_recipe_within_the_noise_keeps_the_recipe(tmp_path, min_gain_se, kept):
    """search.min_gain_se: the best trial is registered only when it leads the configured recipe by
    more than that many standard errors of the paired per-user difference. Here the lead per user is
    (0.02, -0.01, 0, 0.01): mean 0.005, sample sd sqrt(5e-4 / 3) = 0.01291, standard error 0.006455,
    so the lead is 0.775 standard errors: within 1, beyond 0.5."""
    from deploy.study_runs import log_per_user
    from deploy.study_store import open_study
    from deploy.tracking import configure
    from recsys.families import family
    from recsys.search.choice import chosen_trial
    from recsys.search.rules import recipe_trial
    from recsys.search.space import configured_params

    cfg = load_config(None, sets(tmp_path, f"search.min_gain_se={min_gain_se}"))
    s = open_study(cfg, first=True)
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    experiment = configure(cfg.stores)
    users = np.array([3, 5, 8, 13])
    recipe_values = np.array([0.1, 0.2, 0.3, 0.4])
    for values in (recipe_values, recipe_values + [0.02, -0.01, 0.0, 0.01]):
        trial = s.ask()
        family("lightgcn").space(trial)
        run = client.create_run(experiment).info.run_id
        log_per_user(run, users, values)
        trial.set_user_attr("mlflow_run_id", run)
        s.tell(trial, float(values.mean()))
    assert s.trials[0].params == {**s.trials[0].params, **configured_params(cfg)}  # trial 0: the recipe
    from deploy.study_runs import load_per_user

    chosen, why = chosen_trial(s.best_trial, recipe_trial(cfg, s),
                               lambda t: load_per_user(t.user_attrs["mlflow_run_id"]), min_gain_se)
    assert s.best_trial.number == 1
    assert chosen.number == (0 if kept == "recipe" else 1), why["reason"]
    if min_gain_se:
        assert why["gain_over_recipe"] == pytest.approx(0.005)
        assert why["gain_se"] == pytest.approx(np.sqrt(5e-4 / 3) / 2)


RECIPE = ["model.layers=3", "model.dim=64", "train.lr=0.002", "train.lr_schedule=milestones", "train.l2=0.001",
          "train.l2_form=occurrence", "train.average=0.998", "train.batch_size=2048", "train.negatives.per_positive=8",
          "train.negatives.kind=model", "train.negatives.candidates=auto", "train.negatives.temperature=null"]


def paced(study: optuna.Study, curve: list[float]) -> tuple[dict, Optional[int]]:
    """The next trial's parameters, reporting `curve` at epochs 1, 2, ...: and the epoch the pruner
    stopped it at (None: it completed)."""
    from recsys.families import family

    trial = study.ask()
    family("lightgcn").space(trial)
    for epoch, value in enumerate(curve, start=1):
        trial.report(value, epoch)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return trial.params, epoch
    study.tell(trial, max(curve))
    return trial.params, None


def test_with_a_pace_stretch_a_trial_twice_as_slow_as_the_recipe_survives_and_a_slower_one_is_pruned(tmp_path):
    """search.pace_stretch=2 (the median rule off, the default): at epoch e a
    trial's best must reach the recipe's best by epoch e / 2. The recipe reported 0.10, 0.20, 0.30,
    0.35 at epochs 1-4, so the bar is 0.10 at epochs 2 and 3 and 0.20 at epoch 4."""
    from deploy.study_store import open_study

    s = open_study(load_config(None, sets(tmp_path, "search.pace_stretch=2", "search.proven_first=false")), first=True)
    paced(s, [0.10, 0.20, 0.30, 0.35])  # the enqueued recipe
    assert paced(s, [0.05, 0.08, 0.30, 0.40])[1] == 2  # 0.08 < 0.10 by epoch 2
    assert paced(s, [0.05, 0.10, 0.12, 0.19])[1] == 4  # level at 2 and 3; 0.19 < 0.20 at 4
    assert paced(s, [0.05, 0.10, 0.15, 0.20])[1] is None  # twice as slow: survives


def test_the_pace_rule_judges_the_proven_settings_with_its_looser_factor(tmp_path):
    """search.proven_pace_stretch=4 for the proven settings (trials 1 and 2), pace_stretch=2 for the
    rest. The recipe reported 0.10, 0.20, 0.30, 0.35 at epochs 1-4: at stretch 2 the bar is 0.10 from
    epoch 2, at stretch 4 it is 0.10 from epoch 4. A curve 0.05, 0.08, 0.09, 0.12 survives at 4 and is
    pruned at epoch 2 at 2; a curve 0.01, ..., 0.04 is pruned at epoch 4 at 4."""
    from deploy.study_store import open_study
    from recsys.families import family

    s = open_study(load_config(None, sets(tmp_path, *RECIPE, "search.pace_stretch=2",
                                          "search.proven_pace_stretch=4")), first=True)
    paced(s, [0.10, 0.20, 0.30, 0.35])  # the recipe
    lastfm, ml100k = (p.settings for p in family("lightgcn").proven)
    slow, slower = [0.05, 0.08, 0.09, 0.12], [0.01, 0.02, 0.03, 0.04]
    assert paced(s, slow) == (lastfm, None)
    assert paced(s, slower) == (ml100k, 4)
    params, pruned_at = paced(s, slow)
    assert params not in (lastfm, ml100k) and pruned_at == 2


def drawn_params(cfg, n: int) -> list[dict]:
    """The parameters of a new study's first n trials (the search command's study)."""
    from deploy.study_store import open_study
    from recsys.families import family

    s = open_study(cfg, first=True)
    drawn = []
    for _ in range(n):
        trial = s.ask()
        family("lightgcn").space(trial)
        s.tell(trial, 0.0)
        drawn.append(trial.params)
    assert not s.get_trials(states=(optuna.trial.TrialState.WAITING,))
    return drawn


def test_proven_settings_come_right_after_the_recipe_less_those_found_on_skipped_data(tmp_path):
    """search.proven_first: trials 1 and 2 are LightGCN's proven settings (recsys/families.py), in
    order; search.proven_skip leaves out the one found on that data set; an unknown name is refused."""
    from recsys.families import family

    lastfm, ml100k = family("lightgcn").proven
    assert (lastfm.found_on, ml100k.found_on) == ("lastfm", "ml-100k")
    assert lastfm.settings["train.negatives.temperature"] == 0.1 and ml100k.settings["model.layers"] == 2
    drawn = drawn_params(load_config(None, sets(tmp_path / "a", *RECIPE)), 4)
    assert drawn[1:3] == [lastfm.settings, ml100k.settings]
    assert drawn[3] not in (lastfm.settings, ml100k.settings)
    drawn = drawn_params(load_config(None, sets(tmp_path / "b", *RECIPE, "search.proven_skip=[lastfm]")), 2)
    assert drawn[1] == ml100k.settings
    with pytest.raises(ConfigError, match="no proven settings were found on gowala; known: lastfm, ml-100k"):
        load_config(None, sets(tmp_path, "search.proven_skip=[gowala]"))


def test_neighbours_first_queues_the_recipe_with_one_parameter_moved_one_step(tmp_path):
    """search.neighbours_first: after the recipe, trials 1, 2, ... are its one-step neighbours, every
    one of them (by hand, from recsys.families.embedding_space and the configured values below), and
    then the sampler's own trials follow; nothing is left waiting in the study."""
    from recsys.search.space import configured_params

    cfg = load_config(None, sets(tmp_path, "search.neighbours_first=true", "search.proven_first=false", *RECIPE))
    drawn = drawn_params(cfg, 20)
    recipe = configured_params(cfg)
    assert drawn[0] == recipe
    moves = [[(k, str(v)) for k, v in params.items() if k in recipe and recipe[k] != v] for params in drawn[1:19]]
    assert all(len(m) == 1 for m in moves)  # one parameter moved in each
    moves = sorted(m[0] for m in moves)
    assert moves == sorted([
        ("model.layers", "2"), ("model.layers", "4"), ("model.dim", "32"), ("model.dim", "128"),
        ("train.lr", str(0.002 * 10 ** 0.5)), ("train.lr", str(0.002 / 10 ** 0.5)),
        ("train.lr_schedule", "cosine"), ("train.l2", str(0.001 * 10 ** 0.5)), ("train.l2", str(0.001 / 10 ** 0.5)),
        ("train.l2_form", "row"), ("train.average", "0.99"), ("train.batch_size", "1024"),
        ("train.batch_size", "4096"), ("train.negatives.per_positive", "4"), ("train.negatives.kind", "popularity"),
        ("train.negatives.kind", "ppr"), ("train.negatives.candidates", "2"), ("train.negatives.temperature", "0.1")])


def test_trial_progress_warns_once_when_the_budget_cannot_hold_the_trial():
    import time

    from recsys.search.rules import TrialProgress

    said = []
    short = TrialProgress(3, epochs=100, key="valid_ndcg@20", log=said.append, deadline=time.time(), every=0)
    short.on_epoch_end(1, {"loss": 0.5, "valid_ndcg@20": 0.12})
    short.on_epoch_end(2, {"loss": 0.4})
    warned = [line for line in said if "budget" in line]
    assert len(warned) == 1 and warned[0].startswith("trial 3: at ") and "its 100 epochs need" in warned[0]
    assert said[-1].startswith("trial 3: epoch 2 of at most 100, best ndcg@20 0.1200")
    roomy: list[str] = []
    quiet = TrialProgress(4, epochs=2, key="valid_ndcg@20", log=roomy.append, deadline=time.time() + 3600)
    quiet.on_epoch_end(1, {"loss": 0.5})
    assert roomy == []  # room for both epochs, and not yet `every` seconds: nothing said
