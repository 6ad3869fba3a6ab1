"""MMoE, shared-bottom and single-task heads on Census-Income (KDD): the MMoE paper's check.

Tasks (Ma et al., KDD 2018, Sec. 6.3): income > 50K and marital status 'never married'. Only the
99,762-row test file is available here (the paper trains on the 199,523-row data file), so it is
split at random with seed 0 into 60% train, 20% validation, 20% test. Inputs: 7 numeric columns
(log1p, standardised) and every other column one-hot, fitted on the training rows. Each model
trains with Adam until the mean validation AUC stops improving; the test split is scored once.
Also a smoke run of the generic tabular path on the Ali-CCP sample (click / purchase).

    ./dev.sh python -m bench.census_mmoe [--seeds 3]
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from bench.common import SHARED_DATA, peak_rss_mb, write_results
from bench.heads import HEAD, KINDS, census, run_heads
from recsys.data.tabular import tabular_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="repeats with different initialisations (same split)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    frame, parts, (train, valid, test) = census()
    print(f"census: {len(frame)} rows -> {[len(i) for i in parts]}, {train.x.shape[1]} input columns; "
          f"positive rates {np.nanmean(train.y, 0).round(4).tolist()}")

    runs = [run_heads(train, valid, test, seed, args.epochs, 2) for seed in range(args.seeds)]
    head = {k: list(v) if isinstance(v, tuple) else v for k, v in HEAD.items()}
    figures: dict = {"split": "census-income.test, random 60/20/20 with seed 0", "rows": len(frame),
                     "input_columns": int(train.x.shape[1]), "seeds": args.seeds, "head": head}
    rows = []
    for kind in KINDS:
        aucs = np.array([r[kind][0] for r in runs])
        mean, std = aucs.mean(0), aucs.std(0)
        figures[f"{kind}_income_auc"] = round(float(mean[0]), 4)
        figures[f"{kind}_marital_auc"] = round(float(mean[1]), 4)
        figures[f"{kind}_income_auc_std"] = round(float(std[0]), 4)
        figures[f"{kind}_marital_auc_std"] = round(float(std[1]), 4)
        figures[f"{kind}_seconds"] = round(float(np.mean([r[kind][2] for r in runs])), 1)
        rows.append((kind, f"{mean[0]:.4f} ± {std[0]:.4f}", f"{mean[1]:.4f} ± {std[1]:.4f}",
                     f"{figures[f'{kind}_seconds']:.0f}"))
    figures["mmoe_gate_utilisation"] = np.round(runs[0]["mmoe"][3], 3).tolist()
    figures["paper_mmoe_income_auc"] = 0.9410

    # smoke test of the generic path: the Ali-CCP sample's own train/val/test files
    ccp = SHARED_DATA / "multitask-samples" / "ali-ccp"
    frames = [pd.read_csv(ccp / f"ali_ccp_{s}_sample.csv") for s in ("train", "val", "test")]
    tr, va, te = tabular_rows(frames, ["click", "purchase"])
    smoke = run_heads(tr, va, te, 0, 10, 2, batch_size=32)
    figures["ali_ccp_sample_rows"] = [len(f) for f in frames]
    figures["ali_ccp_sample_mmoe_auc"] = [round(a, 4) for a in smoke["mmoe"][0]]
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)

    write_results("census_mmoe", figures, rows, "Census-Income: test AUC per task (mean ± std over seeds)",
                  header=("model", "income > 50K", "never married", "s per run"),
                  notes=f"Split: {figures['split']}. The paper's best MMoE income AUC: 0.9410. "
                        f"Ali-CCP sample smoke run (200 rows, AUC on 50 test rows, not a benchmark): "
                        f"{figures['ali_ccp_sample_mmoe_auc']}.")


if __name__ == "__main__":
    main()
