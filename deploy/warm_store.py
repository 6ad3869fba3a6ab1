"""What a registered version keeps for the next night's warm start (recsys/warm.py): artifacts
`warm_start/` of the version's MLflow run.

- `state.pt`: the state of the model chosen on validation, as the family built it, and of its later
  stages' modules (MMoE heads, the LLM prefix): dicts of tensors, read back with torch's weights-only
  loader, so loading runs no code from the store;
- `ids.npz`: the user and item ids its ID rows belong to, as text;
- `warm.json`: the family, its model section, and how many warm starts in a row led to it.

A version without them (registered before warm starts, or its files lost) gives no state, and
the reason says which; the retrain then starts from scratch.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from deploy.registry import CHAMPION, alias_version
from recsys.warm import WarmState

WARM_DIR = "warm_start"
FILES = ("state.pt", "ids.npz", "warm.json")
FORMAT = 1


def _plain(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def record_warm_state(run_id: str, model: torch.nn.Module, family: str, model_cfg: dict,
                      user_ids: np.ndarray, item_ids: np.ndarray, chain: int,
                      stages: Optional[dict[str, torch.nn.Module]] = None) -> None:
    """Log what a later warm start needs as artifacts of `run_id`."""
    with tempfile.TemporaryDirectory(prefix="graphrec-warm-") as tmp:
        folder = Path(tmp)
        # a model fitted whole (the graph filter) starts nothing: its family and ids alone are kept
        state = _plain(model) if getattr(model, "warm_startable", True) else {}
        torch.save({"model": state, "stages": {k: _plain(m) for k, m in (stages or {}).items()}},
                   folder / "state.pt")
        np.savez(folder / "ids.npz", user_ids=np.asarray(user_ids).astype(str),
                 item_ids=np.asarray(item_ids).astype(str))
        (folder / "warm.json").write_text(json.dumps({"format": FORMAT, "family": family, "model_cfg": model_cfg,
                                                      "chain": chain}, indent=1, default=str))
        MlflowClient().log_artifacts(run_id, str(folder), WARM_DIR)


def champion_warm_state(name: str) -> tuple[Optional[WarmState], str]:
    """(the champion's warm state, or None and why) for registered model `name`."""
    version = alias_version(name, CHAMPION)
    if version is None:
        return None, f"registered model {name!r} has no champion yet"
    return version_warm_state(name, version)


def version_warm_state(name: str, version: str) -> tuple[Optional[WarmState], str]:
    client = MlflowClient()
    run_id = client.get_model_version(name, str(version)).run_id
    present = {Path(a.path).name for a in client.list_artifacts(run_id, WARM_DIR)} if run_id else set()
    if run_id is None or not set(FILES) <= present:
        lacking = ", ".join(f for f in FILES if f not in present)
        return None, f"champion v{version} has no warm-start state ({WARM_DIR}/{lacking} missing): a scratch start"
    try:
        with tempfile.TemporaryDirectory(prefix="graphrec-warm-") as tmp:
            local = Path(client.download_artifacts(run_id, WARM_DIR, tmp))
            meta = json.loads((local / "warm.json").read_text())
            saved = torch.load(local / "state.pt", map_location="cpu", weights_only=True)
            with np.load(local / "ids.npz", allow_pickle=False) as z:
                users, items = z["user_ids"], z["item_ids"]
    except Exception as e:  # a damaged artifact is a reason for a scratch start, not a crash
        return None, f"champion v{version}'s warm-start state cannot be read ({type(e).__name__}: {e}): a scratch start"
    if meta.get("format") != FORMAT or not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        return None, f"champion v{version}'s warm-start state is of another format: a scratch start"
    return WarmState(meta["family"], meta.get("model_cfg", {}), saved["model"], users, items, str(version),
                     int(meta.get("chain", 0)), saved.get("stages") or {}), ""


def record_start(run_id: str, start) -> None:
    """How the run's training started (recsys.warm.Start): params `start*` and tags
    `graphrec.start` / `graphrec.warm_from`, which the registered version carries as well."""
    client = MlflowClient()
    for key, value in start.params().items():
        client.log_param(run_id, key, value)
    for key, value in start_tags(start).items():
        client.set_tag(run_id, key, value)


def start_tags(start) -> dict[str, str]:
    tags = {"graphrec.start": start.mode}
    if start.mode == "champion":
        tags.update({"graphrec.warm_from": start.version, "graphrec.warm_chain": str(start.chain)})
    return tags
