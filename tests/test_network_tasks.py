"""The two tasks of the professional network, and the MMoE family through the retraining flow."""
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from recsys.config import RunConfig
from recsys.data.network_tasks import network_tasks
from recsys.data.types import IndexedData
from recsys.prepare import prepare


def test_job_click_labels_and_friendship_split_by_hand():
    # u0 viewed j0 and clicked it; u0 viewed j1 only; u1 viewed j1 and applied. Friends: u0-u1, u1-u2.
    interactions = pd.DataFrame({"user_id": ["u0", "u0", "u0", "u1", "u1"], "item_id": ["j0", "j0", "j1", "j1", "j1"],
                                 "event": ["view", "click", "view", "view", "apply"]})
    train = np.array([[0, 0], [0, 1], [1, 1]])
    social = np.array([[0, 1], [1, 0], [1, 2], [2, 1]])
    empty = np.zeros((0, 2), dtype=np.int64)
    data = IndexedData(np.array(["u0", "u1", "u2"]), np.array(["j0", "j1"]), train, empty, empty, social)
    tasks = network_tasks(interactions, data, seed=0, fractions=(1.0, 0.0, 0.0))
    rows = tasks.rows["train"]
    clicks = rows.y[~np.isnan(rows.y[:, 0])]
    np.testing.assert_array_equal(clicks[:, 0], [1, 0, 1])
    assert np.isnan(clicks[:, 1]).all()
    friends = rows.x[rows.y[:, 1] == 1]
    assert sorted(map(tuple, friends[:, :2].astype(int).tolist())) == [(0, 1), (1, 2)]
    assert (friends[:, 2] == 1).all()
    # a negative is never a friend nor the member themself
    for u, v, _ in rows.x[rows.y[:, 1] == 0].astype(int):
        assert u != v and (min(u, v), max(u, v)) not in {(0, 1), (1, 2)}


def test_held_out_friendships_never_reach_the_graph(small_network):
    cfg = RunConfig.model_validate({"model": {"family": "mmoe"}, "graph": {"social_edges": True},
                                    "features": {"text": False}})
    p = prepare(small_network, cfg)
    held = np.concatenate([r.x[r.y[:, 1] == 1][:, :2] for k, r in p.tasks.rows.items() if k != "train"]).astype(int)
    assert len(held) > 0
    src, dst = p.graph.g.edges(etype="friend")
    in_graph = set(zip(src.tolist(), dst.tolist()))
    assert not any((u, v) in in_graph or (v, u) in in_graph for u, v in held)
    assert len(in_graph) == len(p.tasks.train_social)


@pytest.mark.usefixtures("small_network")
def test_mmoe_family_through_the_flow_and_its_warm_start(tmp_path, small_network):
    from flows.cli import prepare_prefect
    from flows.retrain import retrain_flow
    from recsys.config import load_config
    from recsys.data.loaders import save_files

    files = save_files(small_network, tmp_path / "data")
    prepare_prefect(tmp_path)
    cfg = load_config(None, [
        "data.source=files", f"data.interactions={files['interactions']}", f"data.users={files['users']}",
        f"data.items={files['items']}", f"data.social={files['social']}", "model.family=mmoe",
        "graph.social_edges=true", "features.text=false", "train.epochs=4", "model.dim=16", "model.mmoe.epochs=4",
        "train.progress=false", f"stores.root={tmp_path / 'store'}"])
    out = retrain_flow(cfg)
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    run = client.get_run(out["run_id"])
    for task in ("job_click", "friend_request"):
        assert 0.5 < run.data.metrics[f"test_auc_{task}"] <= 1.0
    assert {a.path for a in client.list_artifacts(out["run_id"], "plots")} >= {"plots/gate_utilisation.png"}
    assert out["version"] == "1" and out["promoted"]  # the bottom's embeddings serve retrieval as usual

    # the next retrain starts warm: the bottom from the champion's, and the MMoE head from the champion's head
    again = client.get_run(retrain_flow(cfg)["run_id"]).data.params
    assert again["start"] == "champion" and again["start_version"] == "1"
    assert again["start_stages"] == "head0"


def test_friend_ranking_metrics_by_hand():
    # A head that scores (u, v) by v's index: member 2 ranks first for everyone, then 1, then 0.
    import torch

    from recsys.data.network_tasks import NetworkTasks
    from recsys.data.tabular import Rows
    from recsys.multitask import friend_ranking

    class ByIndex(torch.nn.Module):
        user_x = torch.zeros(3, 0)
        head_tasks = 2

        def forward(self, rows):
            return torch.stack([torch.zeros(len(rows)), rows[:, 1]], dim=1)

    # held-out friendship 0-1; training friendship 0-2 masked. For 0: candidates {1} (2 and self
    # masked) -> hit at rank 1. For 1: candidates 2, 0 -> friend 0 at rank 2.
    x = np.array([[0, 1, 1]], dtype=np.float32)
    tasks = NetworkTasks({"test": Rows(x, np.array([[np.nan, 1.0]], dtype=np.float32))},
                         np.array([[0, 2], [2, 0]]))
    out = friend_ranking(ByIndex(), tasks, ks=[1, 2])
    assert out["recall@1"] == pytest.approx(0.5) and out["recall@2"] == pytest.approx(1.0)
    assert out["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 2)


def test_friend_ranking_ranks_a_seeded_sample_of_members():
    # Six members, held-out friendships for members 0-5 (pairs 0-1, 2-3, 4-5): max_users=2 scores
    # 2 members against all 6 (12 head rows); the sample of all of them equals no sample.
    import torch

    from recsys.data.network_tasks import NetworkTasks
    from recsys.data.tabular import Rows
    from recsys.multitask import friend_ranking

    class ByIndex(torch.nn.Module):
        user_x = torch.zeros(6, 0)
        head_tasks = 2
        rows_scored = 0

        def forward(self, rows):
            ByIndex.rows_scored += len(rows)
            return torch.stack([torch.zeros(len(rows)), rows[:, 1]], dim=1)

    x = np.array([[0, 1, 1], [2, 3, 1], [4, 5, 1]], dtype=np.float32)
    tasks = NetworkTasks({"test": Rows(x, np.array([[np.nan, 1.0]] * 3, dtype=np.float32))}, np.zeros((0, 2), int))
    model = ByIndex()
    full = friend_ranking(model, tasks, ks=[2])
    assert ByIndex.rows_scored == 6 * 6
    ByIndex.rows_scored = 0
    assert friend_ranking(model, tasks, ks=[2], max_users=6) == full
    ByIndex.rows_scored = 0
    friend_ranking(model, tasks, ks=[2], max_users=2, sample_seed=3)
    assert ByIndex.rows_scored == 2 * 6
