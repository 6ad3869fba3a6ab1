"""Which trial a search keeps: the best, unless its lead over the configured recipe is within the
noise of the validation users."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import optuna

PerUser = Callable[[optuna.trial.FrozenTrial], Optional[tuple[np.ndarray, np.ndarray]]]


def chosen_trial(best: optuna.trial.FrozenTrial, recipe: Optional[optuna.trial.FrozenTrial], per_user: PerUser,
                 min_gain_se: float) -> tuple[optuna.trial.FrozenTrial, dict]:
    """The trial the search registers, and why. `best` unless its lead over `recipe` (the first
    complete trial at the configured recipe) is within `min_gain_se` standard errors of the mean
    paired difference over the validation users (`per_user(trial)`: (users, figure per user), as
    each trial's run logged them): a lead that small is the validation sample's noise, and the
    recipe, which the search did not choose, stays (bench/results/transfer.md shows why it matters)."""
    if recipe is None or recipe.number == best.number or not min_gain_se:
        return best, {"reason": f"trial {best.number} has the best validation figure"}
    ours, theirs = per_user(best), per_user(recipe)
    if ours is None or theirs is None or not np.array_equal(ours[0], theirs[0]):
        return best, {"reason": f"trial {best.number} has the best validation figure (no per-user figures "
                                "to compare it with the recipe's)"}
    diff = ours[1] - theirs[1]
    gain = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    info = {"recipe_trial": recipe.number, "gain_over_recipe": gain, "gain_se": se}
    lead = f"leads the recipe (trial {recipe.number}) by {gain:.3g}, {gain / se if se else float('inf'):.2f} " \
           f"standard errors over {len(diff)} validation users"
    if gain > min_gain_se * se:
        return best, {**info, "reason": f"trial {best.number} {lead}"}
    return recipe, {**info, "reason": f"the recipe kept: trial {best.number} {lead}, not more than "
                                      f"search.min_gain_se={min_gain_se:g}"}
