"""Multi-task heads: MMoE's gates, its experts, and the masked multi-task loss."""
import math

import numpy as np
import torch

from recsys.data.tabular import Rows
from recsys.models.mmoe import MMoE, build_head
from recsys.multitask import fit_head, gate_utilisation, predict, task_aucs, task_losses


def test_gates_are_distributions_over_experts():
    torch.manual_seed(0)
    model = MMoE(d_in=5, n_tasks=3, n_experts=4, expert_dim=6, expert_hidden=(7,))
    x = torch.randn(32, 5)
    gates = model.gate_weights(x)
    assert gates.shape == (32, 3, 4)
    torch.testing.assert_close(gates.sum(-1), torch.ones(32, 3))
    assert model(x).shape == (32, 3)


def test_fused_experts_compute_each_expert_mlp():
    torch.manual_seed(0)
    model = MMoE(d_in=3, n_tasks=1, n_experts=2, expert_dim=4, expert_hidden=(5,))
    bank = model.experts
    x = torch.randn(6, 3)
    out = bank(x)
    for e in range(2):
        w1, b1 = bank.first.weight[e * 5:(e + 1) * 5], bank.first.bias[e * 5:(e + 1) * 5]
        h = torch.relu(x @ w1.T + b1)
        expected = torch.relu(h @ bank.weights[0][e] + bank.biases[0][e])
        torch.testing.assert_close(out[:, e], expected)


def test_unlabelled_rows_do_not_count_for_a_task():
    logits = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    y = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    losses = task_losses(logits, y)
    # task 0: both rows, BCE(0, 1) = BCE(0, 0) = log 2; task 1: only row 2, BCE(0, 1) = log 2
    torch.testing.assert_close(losses, torch.tensor([math.log(2), math.log(2)]))


def test_gates_specialise_when_tasks_need_different_experts():
    # Task 0 is the sign of x0, task 1 the sign of x1, and each expert is a single ReLU unit, so no
    # expert can carry both directions. Trained, the two tasks' gates pick different experts for
    # many inputs (total-variation distance between the two gate distributions near 1), which the
    # untrained gates do not.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0], axis=1).astype(np.float32)
    rows = Rows(x, y)
    torch.manual_seed(0)
    model = MMoE(d_in=2, n_tasks=2, n_experts=2, expert_dim=1, tower_hidden=())

    def disagreement() -> torch.Tensor:
        with torch.no_grad():
            g = model.gate_weights(torch.from_numpy(x))
        return 0.5 * (g[:, 0] - g[:, 1]).abs().sum(-1)

    before = disagreement()
    fit_head(model, rows.take(np.arange(3000)), rows.take(np.arange(3000, 4000)), epochs=30, lr=0.02,
             batch_size=128, patience=30)
    assert min(task_aucs(predict(model, x[3000:]), y[3000:])) > 0.95
    tv = disagreement()
    assert tv.mean() > 0.3 > before.mean() and (tv > 0.8).float().mean() > 0.2 > (before > 0.8).float().mean()
    np.testing.assert_allclose(gate_utilisation(model, x).sum(1), 1.0, rtol=1e-5)


def test_single_task_baseline_is_one_model_per_task():
    models = build_head("single_task", 10, 3)
    assert len(models) == 3 and all(m(torch.zeros(2, 10)).shape == (2, 1) for m in models)
