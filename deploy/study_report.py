"""What a finished (or stopped) search leaves on its study's parent run: Optuna's plots (history,
parameter importance, parallel coordinates), a trials table, the count of trials per state and the
best trial's value and parameters. A plot Optuna cannot draw yet (importance needs two complete
trials) is skipped with a tag that says why, so a short study still gets its report."""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


def log_study(study: optuna.Study, parent_run_id: str) -> dict:
    """Optuna's plots and a trials table on the parent run; a summary back."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    client = MlflowClient()
    trials = study.trials_dataframe(attrs=("number", "value", "state", "duration", "params"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.csv"
        trials.to_csv(path, index=False)
        client.log_artifact(parent_run_id, str(path), "study")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots: dict[str, Callable[..., Any]] = {
        "history": ovm.plot_optimization_history, "importance": ovm.plot_param_importances,
        "parallel_coordinate": ovm.plot_parallel_coordinate}
    logged = []
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():  # layout notes on a study's few points: the PNG says what matters
                warnings.simplefilter("ignore", UserWarning)
                ax = plot(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(9, 5)
                fig.tight_layout()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. importance needs 2+ complete trials
            client.set_tag(parent_run_id, f"graphrec.plot_{name}", f"skipped: {exc}"[:250])
            continue
        client.log_figure(parent_run_id, fig, f"study/{name}.png")
        plt.close(fig)
        logged.append(name)
    states = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in optuna.trial.TrialState}
    now = int(time.time() * 1000)
    client.log_batch(parent_run_id, metrics=[Metric(f"trials_{k}", v, now, 0) for k, v in states.items()])
    summary: dict[str, Any] = {"study": study.study_name, "trials": states, "plots": logged}
    if complete:
        best = study.best_trial
        assert best.value is not None  # a complete trial has its value
        client.log_metric(parent_run_id, "best_value", best.value)
        # tags, not params: a resumed study's best may change, and two workers ending together both
        # write it (a param may not change, and racing inserts of one new key collide: the second retries)
        tags = [RunTag(f"best.{k}", str(v)) for k, v in best.params.items()]
        for attempt in range(3):
            try:
                client.log_batch(parent_run_id, tags=tags)
                break
            except MlflowException:
                if attempt == 2:
                    raise
                time.sleep(0.5)
        summary.update(best_value=best.value, best_trial=best.number, best_params=best.params)
    return summary
