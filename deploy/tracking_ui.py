"""The command that starts MLflow's UI on graphrec's store (kept light: `graphrec ui` replaces
itself with that command, so nothing heavy should load first)."""
from __future__ import annotations

import sys


def ui_command(stores, host: str, port: int) -> list[str]:
    """`python -m mlflow ui` over the configured tracking store and artifact root."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", stores.resolved_tracking_uri(),
            "--default-artifact-root", stores.resolved_artifact_location(),
            "--host", host, "--port", str(port)]
