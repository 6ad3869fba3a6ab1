"""Errors the command line reports in one line (kept free of heavy imports: MLflow is imported only
when a guarded block runs)."""
from contextlib import contextmanager


class RegistryError(RuntimeError):
    """A registry request that cannot be carried out (unknown version, nothing to roll back to)."""


class StoreFullError(OSError):
    """A store's file system has no room (full disk, quota, file-size limit) for what must be
    written; raised before anything half-written can be served."""


FULL_DISK_ERRNOS = (28, 122, 27)  # ENOSPC, EDQUOT, EFBIG


def store_full(exc: BaseException, path, doing: str) -> "StoreFullError | None":
    """`exc` as a StoreFullError naming the path and what was being written, when it is a full
    file system; None for any other error."""
    if not isinstance(exc, OSError) or exc.errno not in FULL_DISK_ERRNOS:
        return None
    import shutil

    try:
        free = f"{shutil.disk_usage(path).free / 2**20:.1f} MB free there"
    except OSError:
        free = "free space unknown"
    return StoreFullError(exc.errno, f"no room on the file system of {path} while {doing} ({exc.strerror}; "
                                     f"{free}); free some space (or point the store elsewhere) and run again")


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
