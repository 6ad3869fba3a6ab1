"""The data a version was trained and evaluated on, recorded beside it so later runs can compare
without reading old data: artifacts `data_profile/` of the version's MLflow run.

- `profile.json`: counts of active users, items and interaction rows, interactions per user
  (p10 / p50 / p90 / max), and what the reference sample holds;
- `profile.npz`: 64-bit hashes of the active user and item ids (for "share still present");
- `reference.npz`: a seeded sample of the users evaluated on (`promotion.split`), with their target
  items and the items they had before, ids as text: the champion's own evaluation users, on which
  the metric gate scores challenger and champion.

Plain JSON and .npz read with allow_pickle=False. Versions registered before profiles existed
have none: readers get None and say so.
"""
from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from mlflow.tracking import MlflowClient

from recsys.config_ops import ReferenceGateConfig
from recsys.data.types import IndexedData
from recsys.metrics import sample
from validation.drift import DataProfile, DriftReport

PROFILE_DIR = "data_profile"


@dataclass
class Reference:
    """Evaluation users of a version: ids, and (user row, item row) pairs into `item_ids`."""

    split: str
    user_ids: np.ndarray  # text
    item_ids: np.ndarray  # text: the items the pairs name
    targets: np.ndarray  # (n, 2) int64
    seen: np.ndarray  # (m, 2) int64: masked when ranking, as in the version's own evaluation


def reference_sample(indexed: IndexedData, split: str, cfg: ReferenceGateConfig) -> Reference:
    """Up to `cfg.users` users with targets in `split`, drawn with `cfg.seed`."""
    targets = indexed.split(split)
    with_targets = np.unique(targets[:, 0]) if len(targets) else np.zeros(0, np.int64)
    users = sample(with_targets, cfg.users, cfg.seed)
    local = np.full(indexed.n_users, -1, dtype=np.int64)
    local[users] = np.arange(len(users))
    seen = indexed.seen_before(split)
    t = targets[local[targets[:, 0]] >= 0] if len(targets) else targets.reshape(0, 2)
    s = seen[local[seen[:, 0]] >= 0] if len(seen) else seen.reshape(0, 2)
    items, inverse = np.unique(np.concatenate([t[:, 1], s[:, 1]]), return_inverse=True)
    pairs_t = np.stack([local[t[:, 0]], inverse[:len(t)]], axis=1).astype(np.int64)
    pairs_s = np.stack([local[s[:, 0]], inverse[len(t):]], axis=1).astype(np.int64)
    return Reference(split, indexed.user_ids[users].astype(str), indexed.item_ids[items].astype(str), pairs_t, pairs_s)


def record_profile(run_id: str, profile: DataProfile, reference: Optional[Reference]) -> None:
    """Log the profile (and the reference sample) as artifacts of `run_id`."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        figures = profile.figures()
        if reference is not None:
            figures["reference"] = {"split": reference.split, "users": int(len(reference.user_ids)),
                                    "targets": int(len(reference.targets))}
            np.savez_compressed(folder / "reference.npz", user_ids=reference.user_ids.astype(str),
                                item_ids=reference.item_ids.astype(str), targets=reference.targets,
                                seen=reference.seen)
        (folder / "profile.json").write_text(json.dumps(figures, indent=1))
        np.savez_compressed(folder / "profile.npz", user_hashes=profile.user_hashes, item_hashes=profile.item_hashes)
        MlflowClient().log_artifacts(run_id, str(folder), PROFILE_DIR)


@contextmanager
def _downloaded(name: str, version: str, files: tuple[str, ...]):
    """A temporary local folder with the version's profile files, or None if it lacks any of them."""
    client = MlflowClient()
    run_id = client.get_model_version(name, str(version)).run_id
    present = {Path(a.path).name for a in client.list_artifacts(run_id, PROFILE_DIR)} if run_id else set()
    if run_id is None or not set(files) <= present:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="graphrec-profile-") as tmp:
        for f in files:
            local = Path(client.download_artifacts(run_id, f"{PROFILE_DIR}/{f}", tmp))
            if local != Path(tmp) / f:  # where the client put it depends on the artifact store
                local.replace(Path(tmp) / f)
        yield Path(tmp)


def version_profile(name: str, version: str) -> Optional[DataProfile]:
    """The data profile recorded with `version`, or None (a version registered before profiles)."""
    with _downloaded(name, version, ("profile.json", "profile.npz")) as folder:
        if folder is None:
            return None
        figures = json.loads((folder / "profile.json").read_text())
        with np.load(folder / "profile.npz", allow_pickle=False) as z:
            return DataProfile.from_parts(figures, z["user_hashes"], z["item_hashes"])


def version_reference(name: str, version: str) -> Optional[Reference]:
    """The evaluation users recorded with `version`, or None."""
    with _downloaded(name, version, ("profile.json", "reference.npz")) as folder:
        if folder is None:
            return None
        split = json.loads((folder / "profile.json").read_text()).get("reference", {}).get("split", "test")
        with np.load(folder / "reference.npz", allow_pickle=False) as z:
            return Reference(split, z["user_ids"], z["item_ids"], z["targets"].reshape(-1, 2),
                             z["seen"].reshape(-1, 2))


def tag_drift(run_id: str, report: DriftReport) -> None:
    """The drift check's outcome on the run; an override is what these tags are for."""
    tags = {"data_drift.champion": report.champion or "none",
            "data_drift.result": "skipped" if report.skipped else ("passed" if report.success else "beyond bounds")}
    if report.skipped:
        tags["data_drift.skipped"] = report.skipped[:500]
    if report.failures:
        tags["data_drift.allowed"] = str(report.allowed).lower()
        tags["data_drift.failed"] = "; ".join(f.line() for f in report.failures)[:4000]
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
