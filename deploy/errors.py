"""Errors the command line reports in one line (kept free of heavy imports)."""


class RegistryError(RuntimeError):
    """A registry request that cannot be carried out (unknown version, nothing to roll back to)."""


class TrackingStoreError(RuntimeError):
    """The MLflow tracking store failed in the middle of a registry change."""
