import pytest

from recsys.config import ConfigError, RunConfig, load_config


def test_defaults_are_the_embedded_setup():
    cfg = load_config()
    assert cfg.data.source == "synthetic"
    assert cfg.stores.resolved_tracking_uri().startswith("sqlite:///")
    assert cfg.stores.resolved_tracking_uri().endswith(".graphrec/mlflow.db")


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  dim: 32\ntrain:\n  epochs: 3\n")
    cfg = load_config(path, ["train.epochs=7", "eval.ks=[5, 1]", "data.synthetic.seed=4", "train.monitor=recall@5",
                             "promotion.metric=ndcg@1"])
    assert (cfg.model.dim, cfg.train.epochs, cfg.eval.ks, cfg.data.synthetic.seed) == (32, 7, [1, 5], 4)


def test_unknown_key_names_the_key_and_what_is_allowed():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.dimm=8"])
    assert "model.dimm" in str(err.value)
    assert "dim" in str(err.value) and "layers" in str(err.value)


def test_bad_value_names_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.family=transformer"])
    assert "model.family" in str(err.value) and "lightgcn" in str(err.value)
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=-1"])


def test_corrupt_yaml_is_refused_clearly(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [dim: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_flat_params_for_logging():
    flat = RunConfig().flat()
    assert flat["model.dim"] == 64 and flat["train.batch_size"] == 2048
