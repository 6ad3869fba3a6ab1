"""Hyperparameter search, orchestrated: an Optuna study over one model family, every trial an MLflow
child run. The search's logic is library code (recsys/search/: the space and trial order, the
pruning rules, the study, the choice of a trial; deploy/study_store.py and deploy/first_trial.py:
the study's storage and a trial 0 taken from a finished run); this flow wires it to Prefect and
MLflow and holds the objective.

    graphrec search --family lightgcn --trials 20 [--timeout 3600]

* The study lives in an RDB (SQLite under `.graphrec/` by default, any SQLAlchemy URL such as
  PostgreSQL unchanged). Its target is `search.trials` finished trials (complete or pruned), so a
  killed search run again resumes: the killed trial's heartbeat stops, it is marked failed after
  the grace period (also when it was killed before its first heartbeat: fail_unheard_trials), and
  numbering continues. Several processes may work on one study at once.
* TPE with a seed; pruning fed by the validation metric the training loop reports every
  `train.eval_every` epochs: with `search.pace_stretch`, from the second trial on, a pace rule
  against the recipe's curve (PacePruner); with `search.median_pruning` (off: early figures
  ranked final ones in reverse on LastFM and ML-100K) also Optuna's median rule, once
  `search.pruner_startup_trials` trials have completed. After the recipe, a new study tries the
  settings that beat it on other data sets (`search.proven_first`), then its one-step neighbours
  (`search.neighbours_first`).
* MLflow: a parent run per study (found again on resume) holds Optuna's plots (history, parameter
  importance, parallel coordinates); each trial is a child run with its params, per-epoch curves,
  and its state (complete, pruned, failed).
* `search.timeout` is a wall-clock budget for the trials, one deadline for every worker: no trial
  starts after it, and a trial still training at it stops at the end of its current epoch and is
  judged on its best validation figure so far (user attribute `stopped_at_deadline`).
* Finally the chosen trial's configuration (chosen_trial: the best, unless its lead over the
  recipe is within the noise of the validation users) is retrained by the retraining flow, so it is
  registered as `challenger` and goes through the same promotion gate as any scheduled run.
"""
from __future__ import annotations

import time
from typing import Optional

import optuna
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deploy.study_store import open_study
from flows.retrain import build_graph, load_data, retrain_flow, validate
from flows.stopping import flow
from recsys.config import RunConfig, with_overrides
from recsys.families import family
from recsys.recipe import resolve_run
from recsys.search.choice import chosen_trial
from recsys.search.rules import AtDeadline, PruningReporter, TrialProgress, recipe_trial
from recsys.search.space import check_joint_data, draw, objective_name, trial_config
from recsys.search.study import finished_trials, run_trials

PROVEN_ON = "graphrec.proven_on"  # a trial run's tag: the data set its settings were proven on


def make_objective(cfg: RunConfig, prepared, parent_run_id: str, log=print, deadline: Optional[float] = None):
    """The function Optuna calls per trial: sample a config, train with pruning, log a child run.
    A trial still training at `deadline` ends there, judged on its best validation figure so far."""
    from deploy.study_runs import (
        log_per_user,
        start_trial_run,
        trial_complete,
        trial_failed,
        trial_interrupted,
        trial_lost,
        trial_pruned,
    )
    from deploy.tracking import EpochLogger
    from recsys.fit import train

    searched = family(cfg.search.family)

    def objective(trial: optuna.Trial) -> float:
        values = draw(cfg, trial)
        tcfg = with_overrides(cfg, {**values, "train.progress": False,
                                    "train.refit": False})  # a trial is judged on validation: no refit
        own = {k: v for k, v in trial.params.items() if k != "model.family"}
        found_on = next((p.found_on for p in searched.proven if p.settings == own
                         and values["model.family"] == searched.name), None)
        run_id = start_trial_run(tcfg, prepared.data, parent_run_id, trial.study.study_name, trial.number,
                                 {PROVEN_ON: found_on} if found_on else None)
        if found_on:
            log(f"trial {trial.number}: the settings proven on {found_on}")
        trial.set_user_attr("mlflow_run_id", run_id)
        name = objective_name(tcfg)
        reporter = PruningReporter(trial, f"valid_{name}")  # reports at whichever stage computes it
        stop = [AtDeadline(deadline)] if deadline is not None else []
        progress = TrialProgress(trial.number, int(resolve_run(tcfg).epochs), f"valid_{name}", log, deadline)
        try:
            trained = train(prepared, tcfg, lambda stage: [EpochLogger(run_id, prefix=stage), reporter, progress,
                                                           *stop], why="a search's trials start from scratch alike")
            if stop and stop[0].epoch is not None:
                trial.set_user_attr("stopped_at_deadline", stop[0].epoch)
                if trained.score == float("-inf"):  # stopped before its first validation figure: nothing to judge
                    raise optuna.TrialPruned(f"stopped at the search's deadline after epoch {stop[0].epoch}, "
                                             "before any validation")
                log(f"trial {trial.number} stopped at the search's deadline after epoch {stop[0].epoch}")
        except optuna.TrialPruned:
            trial_pruned(run_id)
            log(f"trial {trial.number} pruned: {values}")
            raise
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker took this waiting trial as well and
            trial_lost(run_id)  # finished it (SQLite has no row locks): its run is that worker's, not this one
            raise
        except Exception as exc:
            trial_failed(run_id, exc)
            raise
        except BaseException:  # SIGTERM / Ctrl-C: the trial run ends with the process
            trial_interrupted(run_id)
            raise
        per_user = _per_user(trained, prepared, tcfg, name)
        if per_user is not None:
            log_per_user(run_id, *per_user)
        trial_complete(run_id, name, trained.score, trained.best_epoch)
        log(f"trial {trial.number}: {name}={trained.score:.4f} at epoch {trained.best_epoch}")
        return trained.score

    return objective


def _per_user(trained, prepared, cfg: RunConfig, name: str):
    """The trial's objective per validation user, from the model it is judged by (the same ranking as
    its score); None for an objective that is not a ranking figure (mmoe's AUC)."""
    from recsys.config import computed_metrics
    from recsys.train import evaluate_model_per_user

    if name not in computed_metrics(cfg.eval.ks) or not hasattr(trained.model, "embed"):
        return None
    users, values = evaluate_model_per_user(trained.model, trained.graph, prepared.indexed, "valid", cfg.eval)
    return users, values[name]


@task(cache_policy=NO_CACHE)
def trial_worker(cfg: RunConfig, prepared, parent_run_id: str, deadline: Optional[float]) -> int:
    """One worker of the Prefect runner: its own study handle on the shared storage."""
    study = open_study(cfg)
    run_trials(study, make_objective(cfg, prepared, parent_run_id, get_run_logger().info, deadline),
               cfg.search.trials, deadline)
    return finished_trials(study)


@flow(name="graphrec-search", log_prints=True)
def search_flow(config: Optional[RunConfig] = None) -> dict:
    from deploy.runs import ended_with_outcome, reopen_run
    from deploy.study_runs import study_parent_run
    from flows.stopping import stop_requested

    cfg = config or RunConfig()
    cfg = with_overrides(cfg, {"model.family": cfg.search.family})  # data preparation depends on it
    check_joint_data(cfg)
    logger = get_run_logger()
    data = load_data(cfg)
    validate(data, cfg)
    prepared = build_graph(data, cfg)
    study = open_study(cfg, first=True)
    parent = study_parent_run(cfg, study.study_name, prepared.data)
    reopen_run(parent)  # a resumed study's run is running again, in this process
    with ended_with_outcome(parent, interrupted=stop_requested):  # ends with the search: FINISHED, FAILED, KILLED
        return _search(cfg, study, prepared, parent, logger)


def _search(cfg: RunConfig, study: optuna.Study, prepared, parent: str, logger) -> dict:
    from deploy.first_trial import same_as_champion, seed_first_trial
    from deploy.study_report import log_study
    from deploy.study_runs import load_per_user, tag_best_trial_retrain, tag_chosen_trial

    started = time.time()
    deadline = None if cfg.search.timeout is None else started + cfg.search.timeout  # one for all workers
    objective = make_objective(cfg, prepared, parent, logger.info, deadline)
    before = finished_trials(study)
    logger.info(f"study {study.study_name}: {before} of {cfg.search.trials} trials already finished")
    if cfg.search.first_trial_from and not study.get_trials(deepcopy=False):
        seed_first_trial(cfg, study, prepared, parent, logger.info)
    elif cfg.search.first_trial_from:
        logger.info(f"study {study.study_name} has trials already: search.first_trial_from is for a new study")
    parallel = cfg.search.runner == "prefect" or cfg.compute.runner == "dask"
    if parallel and study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        # the enqueued first trial runs here, before the workers start: two workers could both take
        # a waiting trial from SQLite (no row locks), and the second would fail to report it
        run_trials(study, objective, min(cfg.search.trials, before + 1), deadline)
    if parallel:
        from flows.runners import task_runner

        @flow(name="graphrec-search-trials", task_runner=task_runner(cfg.compute, cfg.search.workers))
        def trials_flow():
            futures = [trial_worker.submit(cfg, prepared, parent, deadline) for _ in range(cfg.search.workers)]
            return [f.result() for f in futures]

        trials_flow()
    else:
        run_trials(study, objective, cfg.search.trials, deadline)
    summary = log_study(study, parent)
    summary["trials_seconds"] = round(time.time() - started, 1)  # this invocation's, before any retraining
    summary["parent_run_id"] = parent
    summary["objective"] = objective_name(cfg)
    if "best_params" in summary:
        chosen, why = chosen_trial(study.best_trial, recipe_trial(cfg, study),
                                   lambda t: load_per_user(t.user_attrs.get("mlflow_run_id")), cfg.search.min_gain_se)
        summary.update(chosen_trial=chosen.number, chosen_value=chosen.value, chosen_params=chosen.params, **why)
        tag_chosen_trial(parent, chosen.number, why)
        logger.info(f"study {study.study_name}: {why['reason']}")
    if cfg.search.register_best and "chosen_params" in summary and chosen.user_attrs.get("from_run"):
        summary["chosen_from_run"] = chosen.user_attrs["from_run"]  # trained and gated already: not again
    elif cfg.search.register_best and "chosen_params" in summary and (
            kept := same_as_champion(trial_config(cfg, chosen), prepared.data.fingerprint())):
        summary["recipe_kept"] = kept  # a retrain would register a copy of the champion
        logger.info(f"study {study.study_name}: the chosen configuration is what champion v{kept} trained on this "
                    "data: recipe kept, nothing retrained or registered")
    elif cfg.search.register_best and "chosen_params" in summary:
        best = retrain_flow(trial_config(cfg, chosen))
        tag_best_trial_retrain(best["run_id"], parent, study.study_name)
        summary["retrain"] = {k: best[k] for k in ("run_id", "version", "promoted", "decision", "metrics")}
    logger.info(f"study {study.study_name}: {summary['trials']}")
    return summary
