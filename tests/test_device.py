"""compute.device: resolved once, refused with exit 2 where the machine lacks it, and the same
training and ranking wherever the tensors live. The CUDA comparisons skip without a GPU; on the
CPU the same code path runs with device=cpu."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.config import DataConfig, EvalConfig, TrainConfig, load_config
from recsys.config_base import ConfigError
from recsys.data.loaders import with_split
from recsys.device import embed_on, resolve_device
from recsys.graph.build import build_graph
from recsys.models.gcn import GCN
from recsys.models.lightgcn import LightGCN
from recsys.models.mf import MF
from recsys.models.pinsage import PinSage
from recsys.models.sage import AGGREGATORS, GraphSAGE, SAGELayer
from recsys.train import evaluate_model, fit

ROOT = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none here)")


@pytest.fixture(scope="module")
def prepared(small_network):
    data = with_split(small_network, DataConfig()).indexed()
    return data, build_graph(data)


def test_auto_is_the_cpu_without_cuda_and_cuda_with_it(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_cuda_on_a_machine_without_it_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="compute.device=cuda, but torch sees no CUDA device.*auto or cpu"):
        resolve_device("cuda")


def test_a_device_name_that_is_none_of_them_names_the_key():
    with pytest.raises(ConfigError, match="compute.device.*auto, cpu, cuda or cuda:N"):
        load_config(None, ["compute.device=gpu"])
    assert load_config(None, ["compute.device=cuda:1"]).compute.device == "cuda:1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal cannot happen")
def test_retrain_asked_for_cuda_without_one_exits_2_before_anything_starts(tmp_path, capsys):
    from flows.cli import main

    assert main(["retrain", "--set", f"stores.root={tmp_path}", "--set", "compute.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert "compute.device=cuda" in err and "no CUDA device" in err and "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was touched


def test_fit_leaves_the_model_on_the_cpu_and_embed_on_restores_its_mode(prepared):
    data, graph = prepared
    model = LightGCN(data.n_users, data.n_items, dim=8, layers=1)
    fit(model, graph, data, TrainConfig(epochs=1, batch_size=512, progress=False), EvalConfig(ks=[20]),
        device=torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in model.parameters())
    model.train()
    users, items = embed_on(model, graph, torch.device("cpu"))
    assert model.training and not users.requires_grad and users.shape == (data.n_users, 8)


def test_no_module_moves_tensors_to_a_gpu_by_hand():
    """Placement goes through compute.device (recsys/device.py), never a stray .cuda() call."""
    stray = [f"{path.relative_to(ROOT)}:{n}" for folder in ("recsys", "flows", "deploy", "validation")
             for path in (ROOT / folder).rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\.cuda\(\)", line)]
    assert not stray, stray


@CUDA
@pytest.mark.parametrize("family", [LightGCN, MF, GCN, GraphSAGE, PinSage])
def test_training_on_cuda_follows_the_cpu(prepared, family):
    """The same seeds, negatives and steps on both devices: the first epoch's loss agrees to float
    rounding (the products sum in another order), and so does the ranking after it."""
    data, graph = prepared
    cfg = TrainConfig(epochs=1, batch_size=256, lr=0.01, progress=False)
    out = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = family(data.n_users, data.n_items, dim=8)
        result = fit(model, graph, data, cfg, EvalConfig(ks=[20]), device=torch.device(device))
        out[device] = (result.history[0]["loss"],
                       evaluate_model(model, graph, data, "test", EvalConfig(ks=[20]), device=torch.device(device)))
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-3)
    assert out["cuda"][1]["recall@20"] == pytest.approx(out["cpu"][1]["recall@20"], abs=0.02)


@CUDA
def test_full_ranking_on_cuda_equals_the_cpu_ranking(prepared):
    from recsys.metrics import evaluate

    data, _ = prepared
    rng = np.random.default_rng(0)
    users = rng.standard_normal((data.n_users, 16)).astype(np.float32)
    items = rng.standard_normal((data.n_items, 16)).astype(np.float32)
    args = (data.test, data.seen_before("test"), [10, 20])
    cpu = evaluate(users, items, *args)
    gpu = evaluate(torch.from_numpy(users).cuda(0), torch.from_numpy(items).cuda(0), *args)
    assert gpu == pytest.approx(cpu, abs=1e-9)


@pytest.mark.parametrize("social", [False, True])
def test_the_edge_list_graph_gives_build_graphs_operator(small_network, social):
    """pairs_graph (no DGL) and build_graph propagate over the same normalised adjacency."""
    from recsys.graph.build import pairs_graph

    data = with_split(small_network, DataConfig()).indexed()
    for self_loops in (False, True):
        a = build_graph(data, social_edges=social).norm_adj(self_loops).matrix
        b = pairs_graph(data, social_edges=social).norm_adj(self_loops).matrix
        assert torch.equal(a.crow_indices(), b.crow_indices()) and torch.equal(a.col_indices(), b.col_indices())
        assert torch.equal(a.values(), b.values())


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_sage_aggregation_in_torch_equals_dgls(prepared, aggregator):
    """The torch aggregation (what runs on a GPU) gives DGL's reducers' vectors and gradients."""
    import dgl

    _, graph = prepared
    torch.manual_seed(0)
    dgl.seed(0)
    layer = SAGELayer(8, 8, aggregator)
    seeds = torch.arange(0, graph.n_nodes, 7)
    src_nodes, _, (block,) = dgl.dataloading.NeighborSampler([5]).sample(graph.homogeneous(), seeds)
    h = torch.randn(len(src_nodes), 8)
    out = {}
    for use_dgl in (True, False):
        x = h.clone().requires_grad_()
        y = layer(block, x, use_dgl=use_dgl)
        y.pow(2).sum().backward()
        out[use_dgl] = (y.detach(), x.grad)
    torch.testing.assert_close(out[False][0], out[True][0])
    torch.testing.assert_close(out[False][1], out[True][1])


def _head_rows():
    from recsys.data.tabular import Rows

    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 4)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0], axis=1).astype(np.float32)
    return Rows(x[:500], y[:500]), Rows(x[500:], y[500:])


def _fit_head_on(device):
    from recsys.models.mmoe import MMoE
    from recsys.multitask import fit_head

    torch.manual_seed(0)
    model = MMoE(d_in=4, n_tasks=2, n_experts=2, expert_dim=3)
    result = fit_head(model, *_head_rows(), epochs=2, batch_size=64, lr=0.01, device=device)
    return model, [h["loss"] for h in result.history]


@CUDA
def test_mmoe_heads_on_cuda_follow_the_cpu():
    cpu, gpu = _fit_head_on(torch.device("cpu")), _fit_head_on(torch.device("cuda"))
    assert gpu[1] == pytest.approx(cpu[1], rel=1e-4)
    assert all(p.device.type == "cpu" for p in gpu[0].parameters())  # back on the CPU after training


@CUDA
def test_the_llm_prefix_on_cuda_follows_the_cpu():
    from recsys.llm_fit import fit_prefix
    from recsys.models.llm import PrefixEncoder, load_frozen_minilm

    tokenizer, bert = load_frozen_minilm()
    texts = [f"member {k}" for k in range(8)]
    items = torch.nn.functional.normalize(torch.randn(5, 384, generator=torch.Generator().manual_seed(0)), dim=-1)
    pairs = np.array([[u, u % 5] for u in range(8)])
    losses = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = PrefixEncoder(4, tokens=1, max_tokens=8, tokenizer=tokenizer, transformer=bert)
        history = fit_prefix(model, torch.ones(8, 4), texts, items, pairs, epochs=2, batch_size=4, negatives=3,
                             device=torch.device(device))
        losses[device] = [h["loss"] for h in history]
        model.to("cpu")
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-3)


@CUDA
@pytest.mark.parametrize("kind", ["uniform", "popularity", "in_batch", "model", "ppr"])
def test_samplers_on_cuda_draw_what_the_cpu_draws(prepared, kind):
    """Ids are drawn on the host and checked, scored and picked on the device: the same seed gives
    the same negatives on both (the model sampler scores with a fixed function of the ids here)."""
    from recsys.config import NegativesConfig
    from recsys.negatives import build_sampler

    data, _ = prepared
    batch = data.train[np.random.default_rng(0).permutation(len(data.train))[:2000]]
    scores = lambda users, items: ((users[:, None] * 31 + items * 17) % 101).float()  # noqa: E731
    out = {}
    for device in ("cpu", "cuda"):
        negatives = NegativesConfig(kind=kind, curriculum=False, max_hard=2, temperature=None, candidates=8)
        sampler = build_sampler(negatives, data.n_users, data.n_items, data.train, seed=4).to(device)
        draws = sampler.sample(batch[:, 0], batch[:, 1], scores)
        assert draws.device.type == device
        out[device] = draws.cpu()
    assert torch.equal(out["cpu"], out["cuda"])
