"""Work done from a registered version: re-scoring it on today's data, and the embedding refresh."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from deploy.gates import ReferenceScores, canary_gate, embedding_gate, metric_gate
from deploy.handover import hand_over, reconcile
from deploy.pyfunc import RecommenderModel
from deploy.registry import (
    CHAMPION,
    PromotionDecision,
    alias_version,
    apply,
    crown_version,
    decide,
    require_version,
    rollback,
)
from deploy.snapshot import read_manifest, snapshots, verify
from deploy.snapshot_writer import write_snapshot
from deploy.tracking import load_registered
from recsys.config import ConfigError, EvalConfig
from recsys.config_ops import PromotionConfig, RefreshConfig
from recsys.data.types import IndexedData
from recsys.metrics import evaluate


def judged(model: RecommenderModel) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) vectors the gates score: a refit version's model chosen on validation
    (the served one trained on the validation pairs, so they would flatter it), else the served ones."""
    return getattr(model, "gate_vectors", None) or (model.user_vectors, model.item_vectors)


def align(model: RecommenderModel, data: IndexedData, gate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's vectors (`gate`: those the gates judge) re-indexed to `data`'s ids. Users it has
    never seen get a zero vector; items it has never seen are marked unavailable, so they are never ranked."""
    user_vectors, item_vectors = judged(model) if gate else (model.user_vectors, model.item_vectors)
    dim = user_vectors.shape[1]
    u_pos = pd.Index(model.user_ids).get_indexer(data.user_ids)
    i_pos = pd.Index(model.item_ids).get_indexer(data.item_ids)
    users = np.zeros((data.n_users, dim), dtype=np.float32)
    items = np.zeros((data.n_items, dim), dtype=np.float32)
    users[u_pos >= 0] = user_vectors[u_pos[u_pos >= 0]]
    items[i_pos >= 0] = item_vectors[i_pos[i_pos >= 0]]
    return users, items, i_pos >= 0


def _known(model_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return pd.Index(model_ids).get_indexer(ids) >= 0


def score_reference(model: RecommenderModel, reference, catalogue: np.ndarray,
                    eval_cfg: EvalConfig) -> tuple[dict[str, float], float]:
    """`model`'s metrics on a version's recorded evaluation users (deploy.profile.Reference),
    ranking over `catalogue` (item ids), and the share of those users it holds a vector for.
    A user it has none for counts with every metric 0: the model cannot serve them."""
    item_row = pd.Index(catalogue).get_indexer(reference.item_ids)

    def pairs(p: np.ndarray) -> np.ndarray:
        p = np.column_stack([p[:, 0], item_row[p[:, 1]]]) if len(p) else p.reshape(0, 2)
        return p[p[:, 1] >= 0]

    user_vectors, item_vectors = judged(model)
    dim = user_vectors.shape[1]
    u_pos = pd.Index(model.user_ids).get_indexer(reference.user_ids)
    i_pos = pd.Index(model.item_ids).get_indexer(catalogue)
    users = np.zeros((len(reference.user_ids), dim), dtype=np.float32)
    items = np.zeros((len(catalogue), dim), dtype=np.float32)
    users[u_pos >= 0] = user_vectors[u_pos[u_pos >= 0]]
    items[i_pos >= 0] = item_vectors[i_pos[i_pos >= 0]]
    metrics = evaluate(users, items, pairs(reference.targets), pairs(reference.seen), item_available=i_pos >= 0,
                       user_available=u_pos >= 0, **eval_cfg.ranking())
    coverage = float((u_pos >= 0).mean()) if len(u_pos) else 1.0
    return metrics, coverage


def reference_check(name: str, champion_version: str, champion: RecommenderModel, challenger: RecommenderModel,
                    metric: str, eval_cfg: EvalConfig) -> Optional[ReferenceScores]:
    """Challenger and champion on the champion's own evaluation users; None when the champion was
    registered before these were recorded."""
    from deploy.profile import version_reference

    reference = version_reference(name, champion_version)
    if reference is None:
        return None
    theirs, _ = score_reference(champion, reference, champion.item_ids, eval_cfg)
    ours, coverage = score_reference(challenger, reference, champion.item_ids, eval_cfg)
    if metric not in ours:
        raise ConfigError(f"promotion.metric={metric!r} is not computed; choose one of {sorted(ours)}")
    return ReferenceScores(len(reference.user_ids), coverage, ours[metric], theirs[metric], reference.split)


def promote_version(name: str, version: str, data: IndexedData, promotion: PromotionConfig, eval_cfg: EvalConfig,
                    challenger_metrics: Optional[dict] = None, force: Optional[str] = None,
                    crown: bool = True) -> PromotionDecision:
    """Run the three gates for `version` against the current champion on `data`, record the
    decision on the version and move the aliases (`crown=False`: all but `champion`, which
    `crown` then moves with CURRENT). `challenger_metrics` (this split's figures, as the flow's
    evaluation computed them) saves re-scoring a version just trained."""
    require_version(name, version)
    split = promotion.split
    if not len(data.split(split)):
        raise ConfigError(f"promotion.split={split} has no evaluation targets in this data; give it some "
                          "(data.split.valid_fraction above 0) or compare on the other split (promotion.split)")
    challenger = load_registered(name, version)
    served = align(challenger, data)
    users, items, available = served if challenger.gate_vectors is None else align(challenger, data, gate=True)
    metrics = challenger_metrics or evaluate(users, items, data.split(split), data.seen_before(split),
                                             item_available=available,
                                             user_available=_known(challenger.user_ids, data.user_ids),
                                             **eval_cfg.ranking())
    if promotion.metric not in metrics:
        raise ConfigError(f"promotion.metric={promotion.metric!r} is not computed; choose one of {sorted(metrics)}")
    champion = alias_version(name, CHAMPION)
    champion_value, reference = None, None
    if champion is not None and champion != str(version):
        champion_model = load_registered(name, champion)
        c_users, c_items, c_available = align(champion_model, data, gate=True)
        champion_value = evaluate(c_users, c_items, data.split(split), data.seen_before(split),
                                  item_available=c_available,
                                  user_available=_known(champion_model.user_ids, data.user_ids),
                                  **eval_cfg.ranking())[promotion.metric]
        if promotion.reference.enabled:
            reference = reference_check(name, champion, champion_model, challenger, promotion.metric, eval_cfg)
            if reference is None:
                reference = ReferenceScores.missing(champion)
    gates = [
        metric_gate(promotion.metric, metrics[promotion.metric], champion_value, champion, promotion.tolerance,
                    reference, promotion.reference.min_coverage),
        embedding_gate(challenger.user_ids, challenger.user_vectors, challenger.item_ids, challenger.item_vectors,
                       data.n_users, data.n_items, promotion.embedding),
        canary_gate(*served[:2], data.seen_before(split), available, promotion.canary),
    ]
    return apply(name, decide(str(version), gates, champion, force), crown)


def crown(name: str, decision: PromotionDecision, root: Path, staged: Optional[Path],
          cfg: Optional[RefreshConfig] = None) -> None:
    """A promoted version takes `champion` and, given its staged snapshot, CURRENT with it as one
    outcome (deploy/handover.py)."""
    if not decision.promoted:
        return
    if staged is None:
        crown_version(name, decision)
        return
    cfg = cfg or RefreshConfig()
    hand_over(root, name, decision.version, staged.name, cfg.lock_timeout, lambda: crown_version(name, decision),
              cfg.keep)


def refresh_snapshot(name: str, root: Path, data: IndexedData, fingerprint: str,
                     cfg: Optional[RefreshConfig] = None, reembed: Optional[Callable] = None,
                     version: Optional[str] = None, switch: bool = True) -> tuple[Path, bool, str]:
    """Write the champion's (or `version`'s) vectors as the CURRENT snapshot (`switch=False`:
    staged, for `crown` to switch to). Returns (folder, written, note). With `reembed` (bundle ->
    (ids, user vectors, item vectors)) an inductive model embeds today's users and items, new ones
    included; otherwise the vectors stored at training are written and the note says which users
    and items of the data have none.
    Nothing is written when CURRENT already holds the same vectors of this version on this data."""
    if version is not None:
        require_version(name, version)
    version = version or alias_version(name, CHAMPION)
    if version is None:
        raise RuntimeError(f"registered model {name!r} has no '{CHAMPION}' alias: nothing to refresh from")
    model = load_registered(name, version)
    mode = "reembedded" if reembed is not None and model.bundle is not None else "stored"
    current = read_manifest(root)
    if current and current["model_version"] == version and current["data_fingerprint"] == fingerprint \
            and current["model_name"] == name and current.get("vectors") == mode \
            and verify(root, current["name"]) is None:
        return Path(root) / current["name"], False, ""
    if mode == "reembedded" and reembed is not None:
        data, users, items = reembed(model.bundle)
        user_ids, item_ids, note = data.user_ids, data.item_ids, ""
    else:
        user_ids, users, item_ids, items = model.user_ids, model.user_vectors, model.item_ids, model.item_vectors
        note = _missing_note(name, version, model, data)
    everything = np.concatenate([data.train, data.valid, data.test])
    seen = pd.DataFrame({"user_id": data.user_ids[everything[:, 0]], "item_id": data.item_ids[everything[:, 1]]})
    folder = write_snapshot(root, name, version, user_ids, users, item_ids, items, seen, fingerprint, cfg,
                            extra={"vectors": mode}, switch=switch)
    return folder, True, note


def _missing_note(name: str, version: str, model: RecommenderModel, data: IndexedData) -> str:
    new_users = int((pd.Index(model.user_ids).get_indexer(data.user_ids) < 0).sum())
    new_items = int((pd.Index(model.item_ids).get_indexer(data.item_ids) < 0).sum())
    if not new_users and not new_items:
        return ""
    family = MlflowClient().get_model_version(name, version).tags.get("graphrec.family", "?")
    return (f"champion {name} v{version} ({family}) has no vector for {new_users} users and {new_items} items "
            "of this data: they are not in the snapshot and appear after the next retrain")


def intact_snapshot(name: str, version: str, root: Path) -> Optional[Path]:
    """The newest snapshot of `version` that passes its checksums; None if none is left."""
    for manifest in snapshots(root):
        if manifest["model_name"] == name and manifest["model_version"] == str(version) \
                and verify(root, manifest["name"]) is None:
            return Path(root) / manifest["name"]
    return None


def roll_back(name: str, current: str, previous: str, reason: str, root: Path, staged: Path,
              cfg: Optional[RefreshConfig] = None) -> None:
    """`champion` from `current` back to `previous` and CURRENT to its snapshot `staged`, as one outcome."""
    cfg = cfg or RefreshConfig()
    hand_over(root, name, previous, staged.name, cfg.lock_timeout, lambda: rollback(name, current, previous, reason),
              cfg.keep)


def reconcile_serving(name: str, root: Path, cfg: Optional[RefreshConfig] = None) -> Optional[str]:
    """Champion and CURRENT brought into agreement (deploy/handover.py); what was done, or None."""
    cfg = cfg or RefreshConfig()
    return reconcile(root, name, alias_version(name, CHAMPION), cfg.lock_timeout, cfg.version)


def champion_profile(stores) -> tuple[Optional[object], Optional[str], str]:
    """(the champion's data profile, its version, why there is none) for the store `stores` names."""
    from deploy.profile import version_profile
    from deploy.tracking import configure

    configure(stores)
    name = stores.registered_model
    version = alias_version(name, CHAMPION)
    if version is None:
        return None, None, f"registered model {name!r} has no champion yet: nothing to compare with"
    profile = version_profile(name, version)
    if profile is None:
        return None, version, (f"champion v{version} was registered before data profiles were recorded: "
                               "nothing to compare with (the next version registered records one)")
    return profile, version, ""
