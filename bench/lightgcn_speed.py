"""LightGCN training speed on Gowalla: the reference loop's semantics vs graphrec's loop, side by side.

Both loops do the same mathematics per batch (batch 2048, one uniform negative per positive, the whole
graph re-propagated for every batch, BPR + L2 on layer-0 embeddings, Adam), the first batch's loss
checked to agree before anything is timed; how each does it: bench/README.md. Same data, sampler,
threads and process. Then the full ranking of all 29,858 test users: its time and its peak memory above
the trained model's (RSS sampled every 5 ms).

    ./dev.sh python -m bench.lightgcn_speed [--reference-batches 30]
"""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import UNIFORM_RECIPE, write_results
from bench.gowalla import load, reference_loss
from recsys import kernels
from recsys.config import EvalConfig, TrainConfig
from recsys.metrics import evaluate
from recsys.models.lightgcn import LightGCN
from recsys.negatives import UniformNegatives
from recsys.seeding import seed_everything
from recsys.train import fit

BATCH, LR, L2, DIM, LAYERS = 2048, 0.001, 1e-4, 64, 3


def reference_batch(model: LightGCN, coo: torch.Tensor, users, pos, neg) -> torch.Tensor:
    """One batch the reference's way (bench.gowalla.reference_loss)."""
    return reference_loss(model.user_emb.weight, model.item_emb.weight, coo, users, pos, neg, L2, LAYERS)


def graphrec_batch(model: LightGCN, graph, users, pos, neg) -> torch.Tensor:
    ranking, reg = model.batch_loss(graph, users, pos, neg.unsqueeze(1))
    return ranking + L2 * reg


def graphrec_epoch_seconds(graph, data) -> tuple[float, LightGCN]:
    seed_everything(0)
    model = LightGCN(data.n_users, data.n_items, dim=DIM, layers=LAYERS)
    result = fit(model, graph, data, TrainConfig(epochs=1, batch_size=BATCH, lr=LR, l2=L2, progress=False,
                                                 max_steps_per_epoch=None, average=None,
                                                 negatives=UNIFORM_RECIPE["negatives"]),
                 EvalConfig(ks=[20]))
    return result.history[0]["epoch_seconds"], model


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_during(fn):
    """(result, seconds, peak RSS above the RSS at the start in MB), RSS sampled every 5 ms."""
    base, peak, done = current_rss_mb(), [0.0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], current_rss_mb())
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    done.set()
    t.join()
    return result, seconds, max(peak[0], current_rss_mb()) - base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference-batches", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data, graph = load(explore=False)
    csr = graph.norm_adj().matrix
    coo = csr.to_sparse_coo().coalesce()
    n_batches = -(-len(data.train) // BATCH)
    sampler = UniformNegatives(data.n_items, data.train, seed=0)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(args.reference_batches):
        b = data.train[rng.integers(len(data.train), size=BATCH)]
        batches.append((torch.from_numpy(b[:, 0]), torch.from_numpy(b[:, 1]),
                        sampler.sample(b[:, 0])))

    # Same semantics: identical weights give the same loss and the same gradients either way.
    seed_everything(0)
    a = LightGCN(data.n_users, data.n_items, dim=DIM, layers=LAYERS)
    b = LightGCN(data.n_users, data.n_items, dim=DIM, layers=LAYERS)
    b.load_state_dict(a.state_dict())
    la, lb = reference_batch(a, coo, *batches[0]), graphrec_batch(b, graph, *batches[0])
    la.backward()
    lb.backward()
    assert abs(la.item() - lb.item()) < 1e-5, (la.item(), lb.item())
    assert torch.allclose(a.user_emb.weight.grad, b.user_emb.weight.grad, atol=1e-6)

    # Reference loop over a bounded number of batches, half before and half after graphrec's epoch
    # (this machine's speed drifts by +-15% over minutes), scaled to an epoch.
    seed_everything(0)
    ref = LightGCN(data.n_users, data.n_items, dim=DIM, layers=LAYERS)
    opt = torch.optim.Adam(ref.parameters(), lr=LR)

    def reference_batches(chunk) -> float:
        t0 = time.perf_counter()
        for users, pos, neg in chunk:
            loss = reference_batch(ref, coo, users, pos, neg)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    half = len(batches) // 2
    ref_seconds = reference_batches(batches[:half])

    # graphrec: one whole epoch through the training loop, with the compiled products and then
    # with torch's (MKL's) in their place, to show what each part of the loop brings.
    assert kernels.compiled() is not None, "the compiled products did not build (see the warning)"
    graphrec_epoch, ours = graphrec_epoch_seconds(graph, data)
    with kernels.torch_products():
        graphrec_torch_epoch, _ = graphrec_epoch_seconds(graph, data)

    ref_seconds += reference_batches(batches[half:])
    ref_batch_seconds = ref_seconds / len(batches)
    reference_epoch = ref_batch_seconds * n_batches

    ours.eval()
    with torch.no_grad():
        users_emb, items_emb = ours.embed(graph)
    metrics, eval_seconds, eval_extra = peak_during(
        lambda: evaluate(users_emb, items_emb, data.test, data.train, [20], chunk_size=1024))

    figures = {
        "reference_epoch_seconds": round(reference_epoch, 1),
        "reference_batch_ms": round(ref_batch_seconds * 1000, 1),
        "reference_batches_timed": len(batches),
        "graphrec_epoch_seconds": round(graphrec_epoch, 1),
        "graphrec_batch_ms": round(graphrec_epoch / n_batches * 1000, 1),
        "speedup": round(reference_epoch / graphrec_epoch, 2),
        "graphrec_torch_products_epoch_seconds": round(graphrec_torch_epoch, 1),
        "speedup_torch_products": round(reference_epoch / graphrec_torch_epoch, 2),
        "eval_seconds": round(eval_seconds, 2),
        "eval_peak_extra_mb": round(eval_extra, 1),
        "eval_users": int(len(np.unique(data.test[:, 0]))),
        "recall@20_after_one_epoch": round(metrics["recall@20"], 4),
        "batches_per_epoch": n_batches,
        "torch_threads": args.threads,
    }
    rows = [("reference semantics, s/epoch (scaled from %d batches)" % len(batches), f"{reference_epoch:.1f}"),
            ("graphrec, s/epoch (measured)", f"{graphrec_epoch:.1f}"),
            ("speedup", f"{figures['speedup']:.2f}x"),
            ("graphrec with torch's sparse products instead of the compiled ones, s/epoch",
             f"{graphrec_torch_epoch:.1f}"),
            ("speedup with torch's sparse products", f"{figures['speedup_torch_products']:.2f}x"),
            ("full evaluation of %d users (s)" % figures["eval_users"], f"{eval_seconds:.2f}"),
            ("evaluation peak above the model (MB)", f"{eval_extra:.0f}")]
    write_results("lightgcn_speed", figures, rows, "LightGCN on Gowalla: reference loop semantics vs graphrec",
                  notes="Same data, sampler, batch size, threads and process; first-batch loss and gradients "
                        "checked equal before timing.")


if __name__ == "__main__":
    main()
