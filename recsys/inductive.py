"""Embedding users the model has never seen, for inductive families (GraphSAGE).

A bundle holds what that takes: the model's config and weights, the training graph's edges, the
node features and the fitted feature encoders. A new user arrives with their profile columns, the
items they have interacted with and their friends (either may be empty); the bundle appends them
to the graph and runs the trained model on the grown graph. Nothing is retrained.
"""
from __future__ import annotations

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
        torch.save(self.__dict__, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Bundle":
        return cls(**torch.load(path, weights_only=False))

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
        pairs = [np.stack([np.full(len(its), u), item_pos.get_indexer([str(i) for i in its])], 1)
                 for u, its in zip(new_index, items) if len(its)]
        social = [np.stack([np.full(len(fs), u), user_pos.get_indexer([str(f) for f in fs])], 1)
                  for u, fs in zip(new_index, friends) if len(fs)]
        pairs = _known(pairs)
        social = _known(social)
        grown = IndexedData(np.append(d.user_ids, [f"__new{k}" for k in range(n_new)]), d.item_ids,
                            np.concatenate([d.train, pairs]), d.valid, d.test, np.concatenate([d.social, social]))
        user_x = self.user_features
        if user_x is not None:
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


def _known(blocks: list[np.ndarray]) -> np.ndarray:
    if not blocks:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(blocks).astype(np.int64)
    return pairs[pairs[:, 1] >= 0]  # ids the graph does not know are left out
