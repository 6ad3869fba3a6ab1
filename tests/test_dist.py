"""Training on several workers (recsys/dist.py) is the same mathematics as on one: W workers end at
the parameters one worker reaches with the whole batches, to float tolerance, whether they split
the ID tables by columns (LightGCN, MF: each worker trains its columns on whole batches; GCN: its
columns of the tables and of every layer's output, each layer's input gathered) or split
every batch (GraphSAGE: each takes 1/W of it, DDP over sampled neighbourhoods; the MMoE heads; the LLM
prefix, each reading its share of a batch's members).
The workers are real processes in a gloo group (torch.multiprocessing), ended when the test ends."""
from __future__ import annotations

import os
import time
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

FAMILIES = ("lightgcn", "mf", "gcn", "sage")
# LightGCN with the hard-negative sampler (partial scores summed) and an average (joined after each epoch),
# MF with the row-wise L2 term (on the worker's columns), GCN (its weights split by rows) like LightGCN
VARIANTS = {"lightgcn": {"negatives": {"kind": "model", "candidates": 4, "refresh_every": 2}, "average": 0.9},
            "mf": {"l2_form": "row"},
            "gcn": {"negatives": {"kind": "model", "candidates": 4, "refresh_every": 2}, "average": 0.9}}


def _setting():
    from recsys.config import DataConfig, EvalConfig, TrainConfig
    from recsys.data.loaders import with_split
    from recsys.data.synthetic import generate

    data = with_split(generate(n_users=120, n_items=80, n_universities=3, n_companies=4, mean_interactions=8,
                               seed=3), DataConfig()).indexed()
    cfg = TrainConfig(epochs=2, batch_size=256, max_steps_per_epoch=None, lr=0.01, l2=1e-3, average=None,
                      negatives={"kind": "uniform", "per_positive": 2}, eval_every=2, progress=False)
    return data, cfg, EvalConfig(ks=[20])


def _model(family, data, graph):
    """LightGCN and MF (split by columns), GraphSAGE (DDP over sampled neighbourhoods: fan-outs above every
    degree, so each worker samples exactly what one worker samples for the same nodes)."""
    from recsys.models.gcn import GCN
    from recsys.models.lightgcn import LightGCN
    from recsys.models.mf import MF
    from recsys.models.sage import GraphSAGE

    torch.manual_seed(0)
    build = {"lightgcn": lambda: LightGCN(data.n_users, data.n_items, dim=8, layers=3),
             "mf": lambda: MF(data.n_users, data.n_items, dim=8),
             "gcn": lambda: GCN(data.n_users, data.n_items, dim=8, layers=2),
             "sage": lambda: GraphSAGE(data.n_users, data.n_items, dim=8, fanouts=(1000, 1000))}
    return build[family]()


def _train(rank: int, world: int, folder: str) -> None:
    """One worker of `world` (world 1: alone) training each family in turn; rank 0 saves each trained
    state and its figures."""
    import torch.distributed as torch_dist

    from recsys.dist import Worker, training_as
    from recsys.graph.build import build_graph
    from recsys.llm_fit import fit_prefix
    from recsys.multitask import fit_head
    from recsys.train import fit

    torch.set_num_threads(1)
    data, cfg, eval_cfg = _setting()
    graph = build_graph(data)
    worker = None
    if world > 1:
        torch_dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=rank, world_size=world)
        worker = Worker.current()
    for family in FAMILIES:
        model = _model(family, data, graph)
        update = dict(VARIANTS.get(family, {}))
        if "negatives" in update:
            update["negatives"] = cfg.negatives.model_copy(update=update["negatives"])
        result = fit(model, graph, data, cfg.model_copy(update=update), eval_cfg, worker=worker)
        if rank == 0:
            torch.save({"state": model.state_dict(), "history": result.history}, f"{folder}/{family}-{world}.pt")
        if family in ("lightgcn", "gcn") and worker is not None:  # each worker killed after epoch 1, started again
            memory = _Memory(fail_after=1)  # from its checkpoint: whole tables, moments and average
            with pytest.raises(RuntimeError, match="the worker died"):
                fit(_model(family, data, graph), graph, data, cfg.model_copy(update=update), eval_cfg,
                    worker=worker, checkpoint=memory)
            again = _model(family, data, graph)
            fit(again, graph, data, cfg.model_copy(update=update), eval_cfg, worker=worker, checkpoint=memory)
            if rank == 0:
                torch.save({"state": again.state_dict()}, f"{folder}/{family}-resumed.pt")
    heads = _heads()
    with training_as(worker) if worker is not None else nullcontext():
        result = fit_head(heads, *_rows(), epochs=2, batch_size=64, seed=0)
    if rank == 0:
        torch.save({"state": heads.state_dict(), "history": result.history}, f"{folder}/heads-{world}.pt")
    prefix, inputs = _prefix()
    with training_as(worker) if worker is not None else nullcontext():
        history = fit_prefix(prefix, *inputs, epochs=2, batch_size=8, negatives=5, seed=0)
    if rank == 0:
        torch.save({"state": prefix.state_dict(), "history": history}, f"{folder}/prefix-{world}.pt")
    if world > 1:  # ended before the interpreter: gloo's threads left to its exit can abort it (std::terminate)
        torch_dist.barrier()
        torch_dist.destroy_process_group()
        os._exit(0)  # nor is the interpreter's teardown waited for: with gloo's threads it has hung once


def _spawn(fn, args: tuple, nprocs: int, bound: float = 1800) -> None:
    """`fn` in `nprocs` spawned workers, waited for up to `bound` seconds (a bound on a hang, not a
    deadline on speed); every worker is ended when this returns or raises."""
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    started = time.monotonic()
    try:
        while not context.join(timeout=5):
            if time.monotonic() - started > bound:
                pytest.fail(f"the {nprocs} workers had not ended after {bound:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(10)


def _prefix():
    """The LLM family's soft-prompt prefix over a small frozen BERT of random weights (the real tokenizer),
    and its inputs: GNN vectors and a text per member, job vectors, (member, job) pairs."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from recsys.models.llm import PrefixEncoder
    from recsys.text import model_path

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path()))
    bert = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32)).eval().requires_grad_(False)
    rng = np.random.default_rng(2)
    pairs = np.stack([rng.integers(0, 30, 120), rng.integers(0, 40, 120)], 1)
    texts = [f"member {i} studied {['maths', 'art', 'law'][i % 3]}" for i in range(30)]
    jobs = torch.nn.functional.normalize(torch.randn(40, 16), dim=-1)
    return PrefixEncoder(8, tokens=2, tokenizer=tokenizer, transformer=bert), (torch.randn(30, 8), texts, jobs, pairs)


def _heads():
    """MMoE heads over 6 inputs for 2 tasks (recsys/multitask.py trains them, each worker its share)."""
    from recsys.models.mmoe import MMoE

    torch.manual_seed(0)
    return MMoE(6, 2, n_experts=3, expert_dim=4)


def _rows():
    """(train, valid) rows with labels missing for some tasks, so a share's labelled counts differ."""
    from recsys.data.tabular import Rows

    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, :2] + rng.normal(size=(400, 2)) > 0).astype(np.float32)
    y[rng.random((400, 2)) < 0.3] = np.nan
    return Rows(x[:300], y[:300]), Rows(x[300:], y[300:])


def test_two_workers_reach_one_workers_parameters(tmp_path):
    _train(0, 1, str(tmp_path))
    _spawn(_train, (2, str(tmp_path)), nprocs=2)
    for family in ("lightgcn", "gcn"):  # split by columns, from a checkpoint
        resumed = torch.load(tmp_path / f"{family}-resumed.pt")["state"]
        for name, value in torch.load(tmp_path / f"{family}-1.pt")["state"].items():
            assert torch.allclose(value, resumed[name], atol=1e-5), (family, name)
    for family in (*FAMILIES, "heads", "prefix"):
        one = torch.load(tmp_path / f"{family}-1.pt")
        two = torch.load(tmp_path / f"{family}-2.pt")
        for name, value in one["state"].items():
            assert torch.allclose(value, two["state"][name], atol=1e-5), (family, name)
        if family == "prefix":  # no validation split: the loss per epoch
            assert [h["loss"] for h in one["history"]] == pytest.approx([h["loss"] for h in two["history"]], rel=1e-5)
            continue
        key = "valid_mean_auc" if family == "heads" else "valid_ndcg@20"
        assert one["history"][-1][key] == pytest.approx(two["history"][-1][key], abs=1e-6)
        assert one["history"][-1]["loss"] == pytest.approx(two["history"][-1]["loss"], rel=1e-5)
        last = two["history"][-1]
        assert last["collective_seconds"] > 0 and last["bytes_sent"] > 0, family
        assert np.isfinite([h["loss"] for h in two["history"]]).all(), family
    # MF split by columns, an epoch: per step the sum of the batch's B (1 + k) partial scores and its L2 term
    # (a ring all-reduce of 2 workers sends the size once, float32); after the epoch each worker sends its
    # 4 of the 8 columns of the n rows of the tables and of Adam's two moments of them
    data, cfg, _ = _setting()
    n, pairs, b = data.n_users + data.n_items, len(data.train), cfg.batch_size
    batches = [b] * (pairs // b) + ([pairs % b] if pairs % b else [])
    epoch = sum((1 + 2) * size + 1 for size in batches) * 4 + 3 * n * 4 * 4
    assert torch.load(tmp_path / "mf-2.pt")["history"][-1]["bytes_sent"] == epoch


class _Memory:
    """A LoopCheckpoint in memory that fails the loop (as a killed worker would) after `fail_after` epochs."""

    def __init__(self, fail_after=None):
        self.kept, self.fail_after = {}, fail_after

    def load(self, stage):
        return self.kept.get(stage)

    def due(self):
        return True

    def save(self, stage, state):
        self.kept[stage] = state
        if self.fail_after is not None and state["epoch"] == self.fail_after and not state["done"]:
            self.fail_after = None
            raise RuntimeError("the worker died")


def test_a_loop_started_again_goes_on_from_its_last_epoch_to_the_uninterrupted_runs_parameters():
    from recsys.graph.build import build_graph
    from recsys.train import fit

    data, cfg, eval_cfg = _setting()
    cfg = cfg.model_copy(update={"epochs": 4, "eval_every": 1, "average": 0.9, "negatives": cfg.negatives.model_copy(
        update={"kind": "model", "candidates": 4, "refresh_every": 100})})  # the hard negatives' scores resume too
    graph = build_graph(data)
    whole = _model("lightgcn", data, graph)
    fit(whole, graph, data, cfg, eval_cfg)
    memory = _Memory(fail_after=2)
    resumed = _model("lightgcn", data, graph)
    with pytest.raises(RuntimeError, match="the worker died"):
        fit(resumed, graph, data, cfg, eval_cfg, checkpoint=memory)
    again = _model("lightgcn", data, graph)  # a fresh process builds the model anew
    result = fit(again, graph, data, cfg, eval_cfg, checkpoint=memory)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    for name, value in whole.state_dict().items():
        assert torch.allclose(value, again.state_dict()[name], atol=1e-6), name
    finished = _model("lightgcn", data, graph)  # a finished stage is not trained again
    assert fit(finished, graph, data, cfg, eval_cfg, checkpoint=memory).epochs_run == 4
    assert all(torch.equal(v, finished.state_dict()[k]) for k, v in again.state_dict().items())
