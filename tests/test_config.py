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


def test_monitored_and_promotion_metrics_must_be_computed():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.monitor=ndcg@30"])
    assert "train.monitor='ndcg@30' is not computed; choose one of ['recall@10', 'ndcg@10'" in str(err.value)
    assert "(or add 30 to eval.ks=[10, 20])" in str(err.value)
    with pytest.raises(ConfigError, match="promotion.metric='auc' is not computed"):
        load_config(None, ["promotion.metric=auc"])
    cfg = load_config(None, ["eval.ks=[30]", "train.monitor=hit@30", "promotion.metric=precision@30"])
    assert (cfg.train.monitor, cfg.promotion.metric) == ("hit@30", "precision@30")


@pytest.mark.parametrize("name, ok", [("graphrec-recommender", True), ("team.models.rec_v2", True),
                                      ("team/rec", False), ("rec:1", False), ("''", False), ("-rec", False),
                                      ("it's", False), ("a" * 201, False)])
def test_registered_model_names(name, ok):
    if ok:
        assert load_config(None, [f"stores.registered_model={name}"]).stores.registered_model == name
    else:
        with pytest.raises(ConfigError, match="'stores.registered_model': not a usable registered-model name"):
            load_config(None, [f"stores.registered_model={name}"])


def test_yaml_with_a_byte_that_is_not_utf8_names_its_offset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"train:\n  epochs: 3  # \x96 dash\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"config file {path} is not UTF-8 text: byte 0x96 at offset 22 (line 2, column 16); "
                              "save it as UTF-8")


def test_a_store_that_cannot_be_written_is_named(tmp_path):
    cfg = load_config(None, [f"stores.root={tmp_path}/store",
                             f"stores.tracking_uri=sqlite:///{tmp_path}/missing/mlflow.db"])
    with pytest.raises(ConfigError, match=f"the folder {tmp_path}/missing does not exist"):
        cfg.stores.check_writable()
    (tmp_path / "file").write_text("x")
    cfg = load_config(None, [f"stores.root={tmp_path}/file/store"])
    with pytest.raises(ConfigError, match=f"stores.root: {tmp_path}/file is a file, not a folder"):
        cfg.stores.check_writable()
    load_config(None, [f"stores.root={tmp_path}/new/store"]).stores.check_writable()  # made later: fine
    assert not (tmp_path / "new").exists()


def test_auto_training_settings_come_from_the_familys_recipe():
    """`auto` (the default) takes LightGCN's recipe for LightGCN and the generic values for a family
    without one; a value the user sets is kept; a bad one is refused naming the key."""
    from recsys.config import GENERIC, TrainConfig
    from recsys.recipe import resolve

    lightgcn = resolve(TrainConfig(), "lightgcn").recipe()
    assert lightgcn == {"epochs": 100, "lr": 0.002, "l2": 1e-3, "average": 0.998, "negatives.kind": "model",
                        "negatives.per_positive": 8, "warm.shrink": 0.1, "warm.perturb": 0.1, "warm.lr": 3.0,
                        "warm.lr_epochs": 3, "warm.patience": 2, "warm.eval_every": 1}
    assert resolve(TrainConfig(), "sage").recipe() == GENERIC
    mine = load_config(None, ["train.lr=0.01", "train.average=null", "train.negatives.per_positive=2"]).train
    kept = resolve(mine, "lightgcn").recipe()
    assert (kept["lr"], kept["average"], kept["negatives.per_positive"], kept["l2"]) == (0.01, None, 2, 1e-3)
    for bad in ("train.lr=-1", "train.average=1.5", "train.epochs=0", "train.negatives.per_positive=0",
                "train.warm.shrink=0", "train.warm.perturb=2", "train.warm.patience=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].split(".")[-1]):
            load_config(None, [bad])
