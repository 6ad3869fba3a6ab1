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

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main as cli_main
from flows.cli import prepare_prefect
from recsys.config import load_config
from tests.conftest import wait_until, worker_of
from tests.search_setup import cli_args, sets, study

ROOT = Path(__file__).resolve().parents[1]
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
    os.killpg(worker_of(slow), signal.SIGKILL)  # the work itself, as kill -9 or the OOM killer would
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

    from deploy.study_store import fail_unheard_trials

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
    from deploy.study_store import open_study
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
    from deploy.study_store import open_study
    from flows.search import make_objective
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
    from recsys.search.space import objective_name

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


def test_a_study_takes_a_finished_retrain_of_the_recipe_as_its_first_trial(tmp_path, prefect_home, capsys):
    """search.first_trial_from: the retrain's validation curve and per-user figures become trial 0
    (nothing trained for it); chosen, it is not retrained. Trial 0's value is the curve at the
    retrain's best epoch, which is also the mean of the per-user figures: the same ranking, so the
    two must agree. A run of other settings is refused (exit 2), naming the setting."""
    from deploy.study_runs import FROM_RUN, PER_USER, load_per_user
    from recsys.search.rules import recipe_trial

    root = tmp_path / "store"
    assert cli_main(["retrain", *cli_args(root, "train.epochs=4", "model.dim=32")]) == 0
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    (source,) = client.search_runs([client.get_experiment_by_name("graphrec").experiment_id])
    history = client.get_metric_history(source.info.run_id, "valid_ndcg_at_20")
    epochs = {m.step for m in client.get_metric_history(source.info.run_id, "loss")}
    curve = {m.step: m.value for m in history if m.step in epochs}  # the final figure follows the last epoch
    assert len(curve) == len(history) - 1 and min(curve) == 1  # train.eval_every=1 in TINY
    assert max(m.step for m in history) == max(epochs) + 1
    best = int(source.data.metrics["best_epoch"])
    users, values = load_per_user(source.info.run_id, client)
    assert values.mean() == pytest.approx(curve[best], abs=1e-9)
    assert source.data.metrics["valid_ndcg_at_20"] == pytest.approx(curve[best], abs=1e-9)

    # a search that chose these settings would register a copy of the champion: the search keeps it instead
    from deploy.first_trial import same_as_champion
    from deploy.tracking import configure
    from recsys.config import with_overrides

    as_trained = load_config(None, sets(root, "train.epochs=4", "model.dim=32"))
    configure(as_trained.stores)
    fingerprint = source.data.tags["graphrec.data_fingerprint"]
    assert same_as_champion(as_trained, fingerprint) == "1"
    assert same_as_champion(with_overrides(as_trained, {"model.dim": 16}), fingerprint) is None
    assert same_as_champion(as_trained, "other data") is None

    capsys.readouterr()
    assert cli_main(["search", "--family", "lightgcn", "--trials", "1", "--first-trial-from", source.info.run_id,
                     *cli_args(root, "train.epochs=4", "model.dim=32")]) == 0
    assert "trained and gated already, not retrained" in capsys.readouterr().out
    s = study(root, "graphrec-lightgcn")
    (trial,) = s.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == curve[best]
    assert trial.intermediate_values == curve
    from recsys.search.rules import PacePruner  # the pace rule's bar at epoch 1 is empty: no trial is pruned there
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
