"""MLflow's UI on graphrec's store: the command that starts it, and the links graphrec prints into
it (kept light: `graphrec ui` imports this before anything heavy)."""
from __future__ import annotations

import sys
from typing import Optional

# MLflow 3 opens an experiment on its GenAI pages unless the page is asked for as model training
# (the UI's own switch, kept in the browser, overrides the experiment's tag): every link asks.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_command(stores, host: str, port: int) -> list[str]:
    """`python -m mlflow ui` over the configured tracking store and artifact root."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", stores.resolved_tracking_uri(),
            "--default-artifact-root", stores.resolved_artifact_location(),
            "--host", host, "--port", str(port)]


def ui_base(stores, host: str = "127.0.0.1", port: Optional[int] = None) -> str:
    """The UI's address: a tracking server's own, else `graphrec ui`'s (stores.ui_port unless `port`)."""
    uri = stores.resolved_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://{host}:{port or stores.ui_port}"


def page_url(base: str, experiment_id: Optional[str] = None, run_id: Optional[str] = None) -> str:
    """The runs table of an experiment (or a run of it; the experiments list without one)."""
    if experiment_id is None:
        return f"{base}/#/experiments"
    return f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "") + f"?{MODEL_TRAINING_VIEW}"
