"""The search flow with real Optuna (SQLite storage), MLflow (SQLite store) and Prefect.

1. A three-trial study run through the Prefect task runner with two workers: three finished
   trials, each an MLflow child run of the study's parent run, Optuna's plots on the parent, and
   the best configuration retrained, registered and gated.
2. A search process killed in the middle of a trial: run again, the study marks the killed trial
   failed (its heartbeat stopped) and continues the numbering.
3. Two search processes on one study at once: no duplicated trial numbers, no lost trials.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main as cli_main
from flows.cli import prepare_prefect
from recsys.config import ConfigError, load_config
from tests.conftest import TINY_NETWORK, wait_until

ROOT = Path(__file__).resolve().parents[1]
TINY = [*TINY_NETWORK, "train.eval_every=1", "search.heartbeat_seconds=1", "search.grace_seconds=3"]


def sets(root: Path, *extra: str) -> list[str]:
    return [f"stores.root={root}", *TINY, *extra]


def cli_args(root: Path, *extra: str) -> list[str]:
    out = []
    for item in sets(root, *extra):
        out += ["--set", item]
    return out


def study(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}")


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect")
    prepare_prefect(home)
    return home


def test_three_trial_study_through_prefect_workers(tmp_path, prefect_home):
    root = tmp_path / "store"
    code = cli_main(["search", "--family", "lightgcn", "--trials", "3", "--runner", "prefect", "--workers", "2",
                     *cli_args(root, "train.epochs=3", "search.grace_seconds=60")])
    assert code == 0
    s = study(root, "graphrec-lightgcn")
    states = [t.state for t in s.trials]
    finished = [t for t in s.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) >= 3 and optuna.trial.TrialState.RUNNING not in states
    assert sorted(t.number for t in s.trials) == list(range(len(s.trials)))

    cfg = load_config(None, sets(root))
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    exp = client.get_experiment_by_name(cfg.stores.experiment)
    parent = client.search_runs([exp.experiment_id], "tags.`graphrec.role` = 'study'")
    assert len(parent) == 1
    assert parent[0].info.status == "FINISHED"  # the study's run ends with the search
    parent_id = parent[0].info.run_id
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    trial_runs = [r for r in children if "graphrec.trial" in r.data.tags]
    assert len(trial_runs) == len(s.trials)
    for run in trial_runs:
        trial = s.trials[int(run.data.tags["graphrec.trial"])]
        assert run.data.tags["graphrec.trial_state"] == trial.state.name
        assert run.data.params["train.lr"] == str(trial.params["train.lr"])
        assert run.data.tags.get("graphrec.proven_on") == {1: "lastfm", 2: "ml-100k"}.get(trial.number)
        assert client.get_metric_history(run.info.run_id, "loss")
    plots = {a.path for a in client.list_artifacts(parent_id, "study")}
    assert {"study/history.png", "study/trials.csv"} <= plots
    # the best configuration went through the retraining flow: registered and gated
    best = [r for r in children if r.data.tags.get("graphrec.role") == "best-trial-retrain"]
    assert len(best) == 1
    assert best[0].data.params["model.dim"] == str(s.best_trial.params["model.dim"])
    model = client.get_registered_model(cfg.stores.registered_model)
    assert set(model.aliases) == {"champion", "challenger"}


def _spawn(processes, root: Path, *args: str, worker: int = 0) -> subprocess.Popen:
    # the workers share the session's Prefect server, as workers on a team share one; every process
    # group started here is ended when the test ends, pass or fail (the processes fixture)
    env = {**os.environ, "PREFECT_HOME": str(root.parent / f"prefect-{worker}")}
    return processes.start([sys.executable, "-m", "flows.cli", "search", *args], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running_trials(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return con.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_a_killed_search_resumes_and_marks_the_killed_trial_failed(tmp_path, prefect_home, processes):
    root = tmp_path / "store"
    slow = _spawn(processes, root, "--trials", "2", *cli_args(root, "train.epochs=500", "train.patience=500",
                                                              "search.register_best=false"))
    wait_until(lambda: _running_trials(root / "optuna.db") or slow.poll() is not None, "a trial to start")
    assert slow.poll() is None, slow.stdout.read()
    os.killpg(slow.pid, signal.SIGKILL)
    slow.wait()
    time.sleep(4)  # longer than search.grace_seconds: the killed trial's heartbeat is stale

    code = cli_main(["search", "--trials", "2", *cli_args(root, "train.epochs=2", "search.register_best=false")])
    assert code == 0
    trials = study(root, "graphrec-lightgcn").trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials[1:])


def test_two_processes_share_one_study(tmp_path, prefect_home, processes):
    root = tmp_path / "store"
    # a generous grace period: under load, a live worker's heartbeat must not look stale to the other
    args = ("--trials", "4", *cli_args(root, "train.epochs=2", "search.register_best=false",
                                       "search.heartbeat_seconds=2", "search.grace_seconds=600"))
    first = _spawn(processes, root, *args)
    second = _spawn(processes, root, *args, worker=1)
    outputs = [p.communicate(timeout=1800)[0] for p in (first, second)]  # a bound, not a deadline on speed
    assert [p.returncode for p in (first, second)] == [0, 0], "\n\n".join(o[-6000:] for o in outputs)
    trials = study(root, "graphrec-lightgcn").trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials))) and len(set(numbers)) == len(numbers)
    assert len(trials) >= 4
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials), trials
    # every trial has its MLflow child run: none lost between the two writers
    cfg = load_config(None, sets(root))
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    exp = client.get_experiment_by_name(cfg.stores.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`graphrec.study` = 'graphrec-lightgcn'")
    assert sorted(int(r.data.tags["graphrec.trial"]) for r in runs if "graphrec.trial" in r.data.tags) == numbers


def test_a_trial_killed_before_its_first_heartbeat_is_failed_after_the_grace_period(tmp_path):
    from datetime import datetime, timedelta, timezone

    from flows.search import fail_unheard_trials

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=30, grace_period=60)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    unheard = study.ask()  # RUNNING, no heartbeat: as if its process died at once
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)  # a live worker's trial
    now = datetime.now(timezone.utc)
    assert fail_unheard_trials(storage, study, 60, now=now) == []  # within the grace period: left alone
    assert fail_unheard_trials(storage, study, 60, now=now + timedelta(seconds=61)) == [unheard.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {unheard.number: optuna.trial.TrialState.FAIL, alive.number: optuna.trial.TrialState.RUNNING}


def test_a_new_studys_first_trial_is_the_configured_recipe(tmp_path):
    """The study starts from the configuration: its first trial's parameters are the config's own
    values wherever the space holds them; a resumed study does not enqueue it again."""
    from flows.search import open_study
    from recsys.families import family

    cfg = load_config(None, sets(tmp_path, "train.lr=0.002", "train.negatives.kind=model",
                                 "train.negatives.candidates=64", "train.negatives.per_positive=8",
                                 "train.average=0.998", "train.l2_form=row"))
    first = open_study(cfg, first=True).ask()
    family("lightgcn").space(first)  # the enqueued values come back as the trial's suggestions
    assert {k: first.params[k] for k in ("train.lr", "train.negatives.kind", "train.negatives.candidates",
                                         "train.negatives.per_positive", "train.average", "train.l2_form",
                                         "model.layers")} == \
        {"train.lr": 0.002, "train.negatives.kind": "model", "train.negatives.candidates": 64,
         "train.negatives.per_positive": 8, "train.average": 0.998, "train.l2_form": "row",
         "model.layers": cfg.model.layers}
    again = open_study(cfg, first=True)
    assert len(again.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))) == 0


def _one_trial_past_the_deadline(tmp_path, *extra):
    """A new study's first trial (the recipe) run with its deadline already past: (cfg, prepared, trial)."""
    from deploy.study_runs import study_parent_run
    from flows.search import make_objective, open_study
    from recsys.data.loaders import load_data
    from recsys.prepare import prepare

    cfg = load_config(None, sets(tmp_path, *extra))
    prepared = prepare(load_data(cfg.data), cfg)
    s = open_study(cfg, first=True)
    parent = study_parent_run(cfg, s.study_name, prepared.data)
    s.optimize(make_objective(cfg, prepared, parent, deadline=time.time()), n_trials=1)
    return cfg, prepared, s.trials[0]


def test_a_trial_training_at_the_deadline_stops_there_judged_on_its_best_so_far(tmp_path):
    """search.timeout bounds the trials, not only their starts: a trial still training when the
    deadline passes ends at that epoch's end and completes with the validation figure it reached.
    (The deadline is already past here: the trial runs one epoch of its 40.)"""
    from deploy.study_runs import load_per_user
    from deploy.tracking import metric_key
    from flows.search import objective_name

    cfg, prepared, trial = _one_trial_past_the_deadline(tmp_path)
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.user_attrs["stopped_at_deadline"] == 1
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    curve = client.get_metric_history(trial.user_attrs["mlflow_run_id"], "valid_" + metric_key(objective_name(cfg)))
    assert [m.step for m in curve] == [1] and trial.value == pytest.approx(curve[0].value)
    # its figure per validation user is logged with it, and averages to its score
    users, values = load_per_user(trial.user_attrs["mlflow_run_id"])
    assert len(users) == len(np.unique(prepared.indexed.valid[:, 0])) == len(values)
    assert values.mean() == pytest.approx(trial.value, abs=1e-12)


def test_a_trial_at_the_deadline_before_its_first_validation_is_pruned(tmp_path):
    """With validation every 3 epochs and the deadline already past, the trial stops after epoch 1
    with nothing to be judged on: it is pruned (not complete with no figure), and says why."""
    cfg, _, trial = _one_trial_past_the_deadline(tmp_path, "train.eval_every=3")
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["stopped_at_deadline"] == 1
    run = MlflowClient(cfg.stores.resolved_tracking_uri()).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.tags["graphrec.trial_state"] == "PRUNED"


def test_with_one_startup_trial_the_second_is_pruned_when_it_falls_behind_the_recipe(tmp_path):
    """search.median_pruning with search.pruner_startup_trials=1: with one completed trial (the
    configured recipe) the pruner already judges: past the warm-up epochs, a trial whose best figure is
    below the recipe's at that epoch is pruned, one at or above it is not."""
    from flows.search import open_study

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
    from flows.search import open_study
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
    from deploy.tracking import configure
    from flows.search import chosen_trial, configured_params, open_study
    from recsys.families import family

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
    chosen, why = chosen_trial(cfg, s)
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
    from flows.search import open_study

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
    from flows.search import open_study
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
    from flows.search import open_study
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
    from flows.search import configured_params

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


def test_a_study_takes_a_finished_retrain_of_the_recipe_as_its_first_trial(tmp_path, prefect_home, capsys):
    """search.first_trial_from: the retrain's validation curve and per-user figures become trial 0
    (nothing trained for it); chosen, it is not retrained. Trial 0's value is the curve at the
    retrain's best epoch, which is also the mean of the per-user figures: the same ranking, so the
    two must agree. A run of other settings is refused (exit 2), naming the setting."""
    from deploy.study_runs import FROM_RUN, PER_USER, load_per_user
    from flows.search import recipe_trial

    root = tmp_path / "store"
    assert cli_main(["retrain", *cli_args(root, "train.epochs=4", "model.dim=32")]) == 0
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    (source,) = client.search_runs([client.get_experiment_by_name("graphrec").experiment_id])
    history = client.get_metric_history(source.info.run_id, "valid_ndcg_at_20")
    curve = {m.step: m.value for m in history if m.step >= 1}  # step 0: the run's final figure, no epoch
    assert len(curve) == len(history) - 1 and min(curve) == 1  # train.eval_every=1 in TINY
    best = int(source.data.metrics["best_epoch"])
    users, values = load_per_user(source.info.run_id, client)
    assert values.mean() == pytest.approx(curve[best], abs=1e-9)
    assert source.data.metrics["valid_ndcg_at_20"] == pytest.approx(curve[best], abs=1e-9)

    capsys.readouterr()
    assert cli_main(["search", "--family", "lightgcn", "--trials", "1", "--first-trial-from", source.info.run_id,
                     *cli_args(root, "train.epochs=4", "model.dim=32")]) == 0
    assert "trained and gated already, not retrained" in capsys.readouterr().out
    s = study(root, "graphrec-lightgcn")
    (trial,) = s.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == curve[best]
    assert trial.intermediate_values == curve
    from flows.search import PacePruner  # the pace rule's bar at epoch 1 is empty: no trial is pruned there
    pace = PacePruner(optuna.pruners.NopPruner(), 2.0, trial.params)

    def running(epoch):
        return optuna.trial.create_trial(params=trial.params, distributions=trial.distributions,
                                         intermediate_values={epoch: 0.0}, state=optuna.trial.TrialState.RUNNING)

    assert not pace.prune(s, running(1)) and pace.prune(s, running(2))  # by epoch 2: the recipe's epoch 1
    assert recipe_trial(load_config(None, sets(root, "model.dim=32")), s).number == 0
    copied = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert copied.data.tags[FROM_RUN].startswith(f"run {source.info.run_id}")
    assert np.array_equal(load_per_user(copied.info.run_id, client)[1], values)
    assert PER_USER in [a.path for a in client.list_artifacts(copied.info.run_id, "validation")]
    assert [v.version for v in client.search_model_versions("name='graphrec-recommender'")] == [1]

    code = cli_main(["search", "--family", "lightgcn", "--trials", "1", "--study", "other", "--first-trial-from",
                     source.info.run_id, *cli_args(root, "train.epochs=4", "model.dim=32", "train.lr=0.01")])
    err = capsys.readouterr().err
    assert code == 2 and "train.lr (0.002 there, 0.01 here)" in err, err
