"""The three promotion gates. A challenger becomes champion only if all of them pass.

- metric: challenger >= champion - tolerance on the same split of today's data (the champion is
  re-scored now, not trusted from its old run), and again on the champion's own evaluation users
  (recorded when it was registered), of whom the challenger must hold vectors for a share
  (`promotion.reference.min_coverage`): a challenger trained on the wrong file cannot serve them;
- embedding: Great Expectations on the challenger's vectors (no NaN or inf, norms in range,
  one vector per catalogue user and item);
- canary: top-k for a sample of users is non-empty, well formed (known, distinct items, finite
  scores best first) and holds no item the user has already interacted with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from recsys.config_ops import CanaryConfig, EmbeddingGateConfig
from recsys.ranking import recommend


@dataclass
class Gate:
    name: str
    passed: bool
    detail: str
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReferenceScores:
    """Challenger and champion on the champion's own evaluation users (recorded at its registration)."""

    users: int
    coverage: float  # share of those users the challenger holds a vector for
    challenger: Optional[float]
    champion: Optional[float]
    split: str = "test"

    @classmethod
    def missing(cls, champion_version: str) -> "ReferenceScores":
        """A champion registered before evaluation users were recorded: nothing to score on."""
        return cls(0, 1.0, None, None, "")


def metric_gate(metric: str, challenger: float, champion: Optional[float], champion_version: Optional[str],
                tolerance: float, reference: Optional[ReferenceScores] = None, min_coverage: float = 0.9) -> Gate:
    """challenger >= champion - tolerance on today's split and, given `reference`, also on the
    champion's own evaluation users, of whom the challenger must hold vectors for `min_coverage`."""
    figures = {"metric": metric, "challenger": round(challenger, 6), "tolerance": tolerance}
    if champion is None:
        return Gate("metric", True, f"{metric} {challenger:.4f}; no champion to compare with", figures)
    figures.update(champion=round(champion, 6), champion_version=champion_version)
    passed = challenger >= champion - tolerance
    cmp = ">=" if passed else "<"
    parts = [f"{metric}: challenger {challenger:.4f} {cmp} champion v{champion_version} {champion:.4f} - {tolerance:g}"]
    if reference is not None and (reference.challenger is None or reference.champion is None):
        figures["reference_users"] = 0
        parts.append(f"champion v{champion_version} has no recorded evaluation users (registered before they "
                     "were recorded): not scored on them")
    elif reference is not None and reference.challenger is not None and reference.champion is not None:
        on_theirs = reference.challenger >= reference.champion - tolerance
        covered = reference.coverage >= min_coverage
        figures.update(reference_users=reference.users, reference_coverage=round(reference.coverage, 4),
                       reference_challenger=round(reference.challenger, 6),
                       reference_champion=round(reference.champion, 6), min_coverage=min_coverage)
        if not covered:
            n = int(round(reference.coverage * reference.users))
            parts.append(f"challenger holds vectors for {reference.coverage:.1%} ({n} of {reference.users}) of "
                         f"champion v{champion_version}'s evaluation users, below promotion.reference.min_coverage="
                         f"{min_coverage:g}: it cannot serve them")
        cmp = ">=" if on_theirs else "<"
        parts.append(f"on champion v{champion_version}'s {reference.users} evaluation users ({reference.split}): "
                     f"challenger {reference.challenger:.4f} {cmp} champion {reference.champion:.4f} - {tolerance:g}")
        passed = passed and on_theirs and covered
    return Gate("metric", passed, "; ".join(parts), figures)


def embedding_gate(user_ids, user_vectors, item_ids, item_vectors, n_users: int, n_items: int,
                   cfg: EmbeddingGateConfig) -> Gate:
    from validation.embeddings import validate_vectors

    report = validate_vectors("challenger vectors", {"users": (user_ids, user_vectors, n_users),
                                                     "items": (item_ids, item_vectors, n_items)},
                              cfg.min_norm, cfg.max_norm)
    figures: dict[str, Any] = {"users": len(user_ids), "items": len(item_ids), "catalogue_users": n_users,
               "catalogue_items": n_items, "checks": len(report.checks), "failed": len(report.failures)}
    for kind, vectors in (("user", user_vectors), ("item", item_vectors)):
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.linalg.norm(np.asarray(vectors, dtype=np.float64), axis=1) if len(vectors) else np.zeros(1)
        finite = norms[np.isfinite(norms)]
        figures[f"{kind}_norm_min"] = round(float(finite.min()), 6) if len(finite) else None
        figures[f"{kind}_norm_max"] = round(float(finite.max()), 6) if len(finite) else None
        figures[f"{kind}_nonfinite"] = int((~np.isfinite(norms)).sum())
    detail = "vectors pass all checks" if report.success else report.summary()
    return Gate("embedding", report.success, detail, figures)


def canary_gate(user_vectors: np.ndarray, item_vectors: np.ndarray, seen: np.ndarray, available: np.ndarray,
                cfg: CanaryConfig) -> Gate:
    """`user_vectors` / `item_vectors` aligned to the catalogue; `seen` the (user, item) pairs that
    must never be recommended; `available` marks items the model can rank."""
    n_users, n_items = len(user_vectors), len(item_vectors)
    rng = np.random.default_rng(cfg.seed)
    users = np.sort(rng.choice(n_users, size=min(cfg.users, n_users), replace=False))
    seen = seen[np.argsort(seen[:, 0], kind="stable")]
    lo, hi = np.searchsorted(seen[:, 0], users), np.searchsorted(seen[:, 0], users, side="right")
    unavailable = np.flatnonzero(~available)
    masked = [np.union1d(seen[a:b, 1], unavailable) for a, b in zip(lo, hi)]
    idx, scores = recommend(user_vectors[users], item_vectors, cfg.k, masked)
    problems: list[str] = []
    empty = 0
    for row, u in enumerate(users):
        expected = min(cfg.k, n_items - len(masked[row]))
        got = idx[row][idx[row] >= 0]
        s = scores[row][: len(got)]
        if len(got) == 0 and expected > 0:
            empty += 1
            problems.append(f"user {u}: empty list")
        elif len(got) < expected:
            problems.append(f"user {u}: {len(got)} items, expected {expected}")
        if len(np.unique(got)) != len(got):
            problems.append(f"user {u}: repeated items")
        if len(got) and (got.max() >= n_items or got.min() < 0):
            problems.append(f"user {u}: unknown item index")
        if not np.isfinite(s).all() or (np.diff(s) > 1e-6).any():
            problems.append(f"user {u}: scores not finite or not best first")
        if np.isin(got, masked[row]).any():
            problems.append(f"user {u}: recommends an item already seen or unavailable")
    figures = {"users": len(users), "k": cfg.k, "empty_lists": empty, "problems": len(problems)}
    detail = (f"{len(users)} users, top-{cfg.k}: all lists well formed" if not problems else
              f"{len(problems)} problems in {len(users)} users' lists, e.g. " + "; ".join(problems[:5]))
    return Gate("canary", not problems, detail, figures)
