"""GNN + language model: the neighbourhood written as bounded text, the GNN embedding as a soft
prompt for the frozen MiniLM (only the projection trains; the transformer's weights never move),
and both as the `llm` family through the real flow and registry."""
import numpy as np
import pandas as pd
import pytest
import torch

from recsys.llm_fit import fit_prefix
from recsys.models.llm import PrefixEncoder, graph_texts, load_frozen_minilm


@pytest.fixture(scope="module")
def minilm():
    return load_frozen_minilm()


def test_graph_as_text_names_friends_and_latest_jobs_within_bounds():
    users = pd.DataFrame({"user_id": ["a", "b", "c"], "title": ["Nurse", "Data Scientist", "Accountant"],
                          "company": ["Carewell", "Novalabs", None]})
    items = pd.DataFrame({"item_id": ["j1", "j2", "j3"], "title": ["Senior Nurse", "ML Engineer", "Controller"]})
    interactions = np.array([[0, 0], [1, 1], [0, 2], [0, 0]])  # a: j1, then j3, then j1 again
    social = np.array([[0, 1], [1, 2]])
    texts = graph_texts(users, items, interactions, social, max_friends=5, max_items=8)
    assert texts[0] == "Member: Nurse. Carewell. Friends: Data Scientist. Jobs engaged with: Senior Nurse; Controller."
    assert texts[2] == "Member: Accountant. Friends: Data Scientist."
    short = graph_texts(users, items, interactions, social, max_friends=1, max_items=1, max_chars=40)
    assert all(len(t) <= 40 for t in short) and "Controller" not in short[0]


def test_only_the_projection_trains_and_the_prefix_matters(minilm):
    tokenizer, bert = minilm
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    torch.manual_seed(0)
    model = PrefixEncoder(8, tokens=2, max_tokens=16, tokenizer=tokenizer, transformer=bert)
    assert set(model.state_dict()) == {"proj.weight", "proj.bias"}
    assert not any(p.requires_grad for p in bert.parameters())
    gnn = torch.randn(12, 8)
    texts = [f"member {k}" for k in range(12)]
    items = torch.nn.functional.normalize(torch.randn(6, 384), dim=-1)
    pairs = np.array([[u, u % 6] for u in range(12)])

    def own_rank() -> float:
        scores = model.encode(gnn, texts) @ items.T
        return float((scores > scores[torch.arange(12), torch.arange(12) % 6].unsqueeze(1)).sum(1).float().mean())

    start = own_rank()
    history = fit_prefix(model, gnn, texts, items, pairs, epochs=30, lr=0.02, batch_size=12, negatives=4)
    assert history[-1]["loss"] < history[0]["loss"]
    assert own_rank() < start  # each member's own job moved up
    for k, v in bert.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in bert.parameters())
    same_text = model.encode(torch.randn(2, 8), ["member 0", "member 0"])
    assert not torch.allclose(same_text[0], same_text[1])  # the soft tokens change what the transformer reads


def test_a_step_reads_each_member_once_with_all_their_jobs(minilm):
    tokenizer, bert = minilm
    torch.manual_seed(0)
    model = PrefixEncoder(4, tokens=1, max_tokens=8, tokenizer=tokenizer, transformer=bert)
    read = []
    forward = model.forward
    model.forward = lambda gnn, texts: (read.append(list(texts)), forward(gnn, texts))[1]
    pairs = np.array([[0, 0], [0, 1], [0, 2], [2, 3], [0, 1], [3, 0], [3, 4]])  # member 1 has no jobs; (0, 1) twice
    texts = ["member a", "member b", "member c", "member d"]
    items = torch.nn.functional.normalize(torch.randn(5, 384), dim=-1)
    history = fit_prefix(model, torch.randn(4, 4), texts, items, pairs, epochs=2, batch_size=2, negatives=3)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    assert [len(batch) for batch in read] == [2, 1, 2, 1]  # 3 members with jobs, 2 a step: 7 pairs, 4 reads
    for epoch in (read[:2], read[2:]):
        assert sorted(t for batch in epoch for t in batch) == ["member a", "member c", "member d"]
    read.clear()  # members_per_epoch: an epoch reads a fresh draw of that many members, whatever the network
    fit_prefix(model, torch.randn(4, 4), texts, items, pairs, epochs=3, batch_size=2, negatives=3, members_per_epoch=2)
    assert [len(batch) for batch in read] == [2, 2, 2]
    drawn = [sorted(batch) for batch in read]
    assert all(set(d) <= {"member a", "member c", "member d"} for d in drawn) and len(set(map(tuple, drawn))) > 1


@pytest.mark.parametrize("mode", ["text", "prefix"])
def test_llm_family_through_the_flow(tmp_path, mode):
    from mlflow.tracking import MlflowClient

    from deploy.snapshot import Snapshot
    from flows.cli import main as cli_main
    from flows.cli import prepare_prefect
    from recsys.config import load_config

    prepare_prefect(tmp_path)
    sets = [f"stores.root={tmp_path}", "data.synthetic.n_users=200", "data.synthetic.n_items=100",
            "data.synthetic.n_universities=4", "data.synthetic.n_companies=8", "data.synthetic.mean_interactions=6",
            "model.family=llm",
            f"model.llm.mode={mode}", "model.llm.epochs=1", "model.llm.batch_size=512", "model.llm.max_tokens=16",
            "model.llm.negatives=64", "model.sage.fanouts=[5, 5]", "model.dim=16", "features.text=false",
            "train.epochs=1", "train.progress=false"]
    argv = ["retrain"]
    for item in sets:
        argv += ["--set", item]
    assert cli_main(argv) == 0
    cfg = load_config(None, sets)
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    version = client.get_model_version(cfg.stores.registered_model, "1")
    assert version.tags["graphrec.family"] == "llm" and version.tags["promotion.decision"] == "promoted"
    run = client.get_run(version.run_id)
    assert run.data.metrics["test_recall_at_20"] > 0
    if mode == "prefix":
        assert "prefix_loss" in run.data.metrics
    snap = Snapshot.open(cfg.stores.resolved_snapshots())
    assert snap.manifest["counts"]["dim"] == 384
    assert len(snap.recommend("u000001", k=5)) == 5
