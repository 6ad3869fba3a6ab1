"""`auto` made concrete in one place (recsys/recipe.py): the family's recipe from its registry entry,
the generic fallback, the step bound, the candidate rule; and the training loop and the search read
the same values from it."""
import numpy as np

from recsys.config import GENERIC, TrainConfig, load_config
from recsys.families import FAMILIES
from recsys.negatives import auto_candidates
from recsys.recipe import recipe_values, resolve, resolve_run


def test_the_recipe_comes_from_the_registry_and_the_rest_from_the_fallback():
    assert recipe_values("lightgcn") == {**GENERIC, **FAMILIES["lightgcn"].recipe}
    assert recipe_values("gcn") == GENERIC == recipe_values(None)
    assert resolve(TrainConfig(), "pinsage").max_steps_per_epoch == 1024
    assert resolve(TrainConfig(), "mf").max_steps_per_epoch == 64
    assert resolve(TrainConfig(lr=0.03), "lightgcn").lr == 0.03  # a value of one's own is kept


def test_the_candidate_rule_applies_once_the_log_is_known():
    pairs = np.array([[u, i] for u in range(50) for i in range(u % 7, u % 7 + 5)])
    without = resolve(TrainConfig(), "lightgcn")
    assert without.negatives.kind == "model" and without.negatives.candidates == "auto"
    assert resolve(TrainConfig(), "lightgcn", pairs, 400).negatives.candidates == auto_candidates(pairs, 400)


def test_a_family_on_a_bottom_resolves_as_its_bottom():
    cfg = load_config(None, ["model.family=mmoe", "model.mmoe.bottom=lightgcn"])
    assert resolve_run(cfg).lr == FAMILIES["lightgcn"].recipe["lr"]


def test_the_loop_and_the_search_read_the_same_values(small_network):
    from recsys.config import DataConfig, EvalConfig
    from recsys.data.loaders import with_split
    from recsys.graph.build import build_graph
    from recsys.models.lightgcn import LightGCN
    from recsys.search.space import configured_params
    from recsys.train import fit

    data = with_split(small_network, DataConfig()).indexed()
    model = LightGCN(data.n_users, data.n_items, dim=8, layers=1)
    result = fit(model, build_graph(data), data, TrainConfig(epochs=1, progress=False), EvalConfig(ks=[20]))
    expected = resolve(TrainConfig(epochs=1), "lightgcn", data.train, data.n_items)
    assert {k: result.recipe[k] for k in GENERIC} == expected.recipe()
    assert result.recipe["negatives.candidates"] == expected.negatives.candidates
    params = configured_params(load_config(None, ["search.family=lightgcn"]))
    assert params["train.lr"] == expected.lr and params["train.negatives.per_positive"] == 8
