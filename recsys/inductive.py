"""Embedding users the model has never seen, for inductive families (GraphSAGE).

A bundle holds what that takes: the model's config and weights, the training graph's edges, the
node features and the fitted feature encoders. A new user arrives with their profile columns, the
items they have interacted with and their friends (either may be empty); the bundle appends them
to the graph and runs the trained model on the grown graph. Nothing is retrained.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from recsys.config import ModelConfig
from recsys.data.types import IndexedData
from recsys.features import FeatureEncoder
from recsys.graph.build import build_graph
from recsys.models import build_model

FORMAT = 1
CONFIG, TENSORS, GRAPH = "bundle.json", "tensors.pt", "graph.npz"
_PAIRS = ("train", "valid", "test", "social")


@dataclass
class Bundle:
    model_cfg: dict
    state_dict: dict
    data: IndexedData
    use_social: bool
    user_features: Optional[torch.Tensor]
    item_features: Optional[torch.Tensor]
    user_encoder: Optional[FeatureEncoder]
    item_encoder: Optional[FeatureEncoder] = None  # bundles registered before the refresh re-embedded lack it

    def save(self, path: str | Path) -> Path:
        """A folder of plain data: tensors in a dict of tensors (read back with torch's weights-only
        loader), ids and edges as .npz, config and encoders as JSON. Nothing in it needs unpickling
        to read, so loading a stored bundle runs no code from the store."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"state_dict": dict(self.state_dict)}
        for name in ("user_features", "item_features"):
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name)
        torch.save(tensors, path / TENSORS)
        d = self.data
        np.savez(path / GRAPH, user_ids=np.asarray(d.user_ids).astype(str), item_ids=np.asarray(d.item_ids).astype(str),
                 **{name: np.asarray(getattr(d, name), dtype=np.int64).reshape(-1, 2) for name in _PAIRS})
        plain = {"format": FORMAT, "model_cfg": self.model_cfg, "use_social": bool(self.use_social),
                 "user_encoder": self.user_encoder.to_plain() if self.user_encoder is not None else None,
                 "item_encoder": self.item_encoder.to_plain() if self.item_encoder is not None else None}
        (path / CONFIG).write_text(json.dumps(plain, indent=1, default=_jsonable))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Bundle":
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"{path} is a bundle in the old single-file pickle format, which is not read "
                             "(unpickling would run code from the store); retrain to register this model again")
        plain = json.loads((path / CONFIG).read_text())
        tensors = torch.load(path / TENSORS, map_location="cpu", weights_only=True)
        with np.load(path / GRAPH, allow_pickle=False) as z:
            data = IndexedData(z["user_ids"], z["item_ids"], *(z[name] for name in _PAIRS))
        encoder = {side: FeatureEncoder.from_plain(plain[side]) if plain[side] is not None else None
                   for side in ("user_encoder", "item_encoder")}
        return cls(plain["model_cfg"], tensors["state_dict"], data, plain["use_social"],
                   tensors.get("user_features"), tensors.get("item_features"), **encoder)

    def embed_new_users(
        self,
        profiles: pd.DataFrame,
        items: list[list[str]],
        friends: list[list[str]],
        text_encoder=None,
    ) -> np.ndarray:
        """Vectors for new users: profiles has the users table's feature columns (missing ones
        count as missing values); items / friends list known item / user ids per new user."""
        d, n_new = self.data, len(profiles)
        new_index = np.arange(d.n_users, d.n_users + n_new)
        item_pos = pd.Index(d.item_ids)
        user_pos = pd.Index(d.user_ids)
        pairs = _known([np.stack([np.full(len(its), u), item_pos.get_indexer([str(i) for i in its])], 1)
                        for u, its in zip(new_index, items) if len(its)])
        social = _known([np.stack([np.full(len(fs), u), user_pos.get_indexer([str(f) for f in fs])], 1)
                         for u, fs in zip(new_index, friends) if len(fs)])
        grown = IndexedData(np.append(d.user_ids, [f"__new{k}" for k in range(n_new)]), d.item_ids,
                            np.concatenate([d.train, pairs]), d.valid, d.test, np.concatenate([d.social, social]))
        user_x = self.user_features
        if user_x is not None and self.user_encoder is not None:
            frame = profiles.reindex(columns=self.user_encoder.spec.columns())
            new_x = torch.as_tensor(self.user_encoder.transform(frame, text_encoder))
            user_x = torch.cat([user_x, new_x])
        graph = build_graph(grown, self.use_social, None, user_x, self.item_features)
        model = build_model(ModelConfig.model_validate(self.model_cfg), graph)
        model.load_state_dict(self.state_dict)
        model.eval()
        with torch.no_grad():
            users, _ = model.embed(graph)
        return users[d.n_users:].numpy()


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, set, np.ndarray)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a bundle's config is not plain data")


def _known(blocks: list[np.ndarray]) -> np.ndarray:
    if not blocks:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(blocks).astype(np.int64)
    return pairs[pairs[:, 1] >= 0]  # ids the graph does not know are left out
