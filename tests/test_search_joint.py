"""A joint study (search.families): the graph filter and LightGCN compete for one validation figure,
through the real search flow (Optuna on SQLite, MLflow, the retrain of the best)."""
import optuna
import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main as cli_main
from recsys.config import ConfigError, load_config
from recsys.search.space import objective_name
from tests.search_setup import cli_args, sets, study


def test_a_joint_study_draws_the_family_first_and_registers_the_best_of_either(tmp_path):
    root = tmp_path / "store"
    code = cli_main(["search", "--trials", "2", *cli_args(root, "train.epochs=2", "search.family=lightgcn",
                                                          "search.families=[filter,lightgcn]",
                                                          "model.filter.rank=64", "model.filter.ideal_rank=32",
                                                          "train.eval_every=1")])
    assert code == 0
    s = study(root, "graphrec-filter+lightgcn")
    done = [t for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 2
    families = [t.params["model.family"] for t in done]
    # trial 0 is the recipe (search.family), trial 1 the other family at the configured values
    assert families[:2] == ["lightgcn", "filter"]
    assert done[1].params["model.filter.degree_power"] == 0.4  # the configuration's own value
    for t in done:  # each trial drew only its own family's space
        own = {k.split(".")[1] for k in t.params if k.startswith("model.") and k != "model.family"}
        assert own <= ({"filter"} if t.params["model.family"] == "filter" else {"layers", "dim"}), t.params
    cfg = load_config(None, sets(root))
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    best = max(done, key=lambda t: t.value)
    version = client.get_latest_versions(cfg.stores.registered_model)[0]
    assert client.get_run(version.run_id).data.params["model.family"] == best.params["model.family"]


def test_a_joint_study_is_refused_where_it_cannot_compare_or_prepare_once(tmp_path):
    with pytest.raises(ConfigError, match="search.family .* must be one of them"):
        load_config(None, sets(tmp_path, "search.family=mf", "search.families=[filter,lightgcn]"))
    with pytest.raises(ConfigError, match="no search space for llm"):
        load_config(None, sets(tmp_path, "search.families=[lightgcn,llm]"))
    mixed = load_config(None, sets(tmp_path, "search.family=lightgcn", "search.families=[lightgcn,mmoe]"))
    with pytest.raises(ConfigError, match="maximise different figures"):
        objective_name(mixed)
