"""Errors the command line reports in one line (kept free of heavy imports: MLflow is imported only
when a guarded block runs)."""
from contextlib import contextmanager


class RegistryError(RuntimeError):
    """A registry request that cannot be carried out (unknown version, nothing to roll back to)."""


class TrackingStoreError(RuntimeError):
    """The MLflow tracking store failed in the middle of a registry change."""


@contextmanager
def tracking_store_failure(stores, doing: str, consequence: str):
    """Turn a failure of the tracking store inside the block (MLflow's error, or the file system's
    under a local store) into one plain TrackingStoreError: which store, while doing what, its first
    line, and `consequence` (what is unchanged, what to do). Callers outside deploy/ then never
    need to know MLflow's exception types."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TrackingStoreError(
            f"the MLflow tracking store at {stores.resolved_tracking_uri()} failed while {doing} ({first}). "
            f"{consequence}") from exc
