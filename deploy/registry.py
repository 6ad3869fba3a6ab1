"""Aliases and the promotion gate.

A new version becomes `challenger`. It takes `champion` only if its gate metric, measured on the
current evaluation split, beats the champion's measured on the same split now (the champion is
re-scored, not trusted from its old run, since the data may have moved). The decision, both
figures and the reason are recorded as tags on the new version, whichever way it goes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass
class PromotionDecision:
    promoted: bool
    version: str
    previous_champion: Optional[str]
    metric: str
    challenger_value: float
    champion_value: Optional[float]
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def alias_version(name: str, alias: str) -> Optional[str]:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote_if_better(
    name: str,
    version: str,
    metric: str,
    challenger_value: float,
    score_champion: Callable[[str], float],
    min_delta: float = 0.0,
) -> PromotionDecision:
    """Set `challenger` on version; move `champion` to it if it wins the gate."""
    client = MlflowClient()
    client.set_registered_model_alias(name, CHALLENGER, version)
    champion = alias_version(name, CHAMPION)
    champion_value = None
    if champion is None:
        promoted, reason = True, "no champion yet: the first version becomes champion"
    elif champion == version:
        promoted, reason = True, "already champion"
    else:
        champion_value = float(score_champion(champion))
        promoted = challenger_value > champion_value + min_delta
        cmp = ">" if promoted else "<="
        reason = (f"{metric}: challenger v{version} {challenger_value:.4f} {cmp} champion v{champion} "
                  f"{champion_value:.4f} + {min_delta:g}")
    decision = PromotionDecision(promoted, version, champion, metric, challenger_value, champion_value, reason)
    tags = {
        "promotion.decision": "promoted" if promoted else "rejected",
        "promotion.reason": reason,
        "gate.metric": metric,
        "gate.challenger_value": f"{challenger_value:.6f}",
        "gate.champion_value": "" if champion_value is None else f"{champion_value:.6f}",
        "gate.champion_version": champion or "",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=f"{tags['promotion.decision']}: {reason}")
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return decision
