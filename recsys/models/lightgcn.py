"""LightGCN (He et al., SIGIR 2020), as in the paper.

No weight matrices, no nonlinearity: E(k+1) = D^-1/2 A D^-1/2 E(k), and the final embedding is
the mean of layers 0..K. The only parameters are the layer-0 ID embeddings. Training uses BPR with
L2 on the batch's layer-0 embeddings (the paper's eq. 15); see recsys/train.py.
"""
from __future__ import annotations

import torch
from torch import nn

from recsys.graph.build import RecGraph
from recsys.graph.propagation import BatchRows, SpMM, propagate
from recsys.models.base import RecModel, l2


class LightGCN(RecModel):
    """Plain LightGCN by default. With `transform`, a weight matrix and ReLU per layer come back:
    E(k+1) = ReLU(A E(k) W_k), the final embedding still the mean over layers. With node features
    (`user_features` / `item_features` given; implies `transform`), layer 0 is the ID embedding
    concatenated with a linear projection of the features. Output width: dim, or 2 * dim with features."""

    def __init__(self, n_users: int, n_items: int, *, dim: int = 64, layers: int = 3,
                 user_features: torch.Tensor | None = None, item_features: torch.Tensor | None = None,
                 transform: bool = False):
        super().__init__()
        self.n_users, self.n_items, self.layers = n_users, n_items, layers
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        self.with_features = user_features is not None or item_features is not None
        if self.with_features:
            self.user_proj = nn.Linear(user_features.shape[1], dim) if user_features is not None else None
            self.item_proj = nn.Linear(item_features.shape[1], dim) if item_features is not None else None
        self.transform = transform or self.with_features
        if self.transform:
            width = 2 * dim if self.with_features else dim
            self.weights = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    @classmethod
    def from_config(cls, cfg, graph: RecGraph, seed: int = 0) -> "LightGCN":
        """cfg: the model section (dim, layers, lightgcn options)."""
        use = cfg.lightgcn.use_features
        if use and graph.user_features is None and graph.item_features is None:
            raise ValueError("model.lightgcn.use_features=true, but the data has no node features")
        return cls(graph.n_users, graph.n_items, dim=cfg.dim, layers=cfg.layers,
                   user_features=graph.user_features if use else None,
                   item_features=graph.item_features if use else None, transform=cfg.lightgcn.transform)

    def _layer0(self, graph: RecGraph) -> torch.Tensor:
        ids = torch.cat([self.user_emb.weight, self.item_emb.weight])
        if not self.with_features:
            return ids
        parts = []
        for proj, feats, n in ((self.user_proj, graph.user_features, self.n_users),
                               (self.item_proj, graph.item_features, self.n_items)):
            parts.append(proj(feats) if proj is not None else torch.zeros(n, ids.shape[1], device=ids.device))
        return torch.cat([ids, torch.cat(parts)], dim=1)

    def encode(self, graph: RecGraph, part=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings after K propagation steps over the whole graph (of `part`'s
        columns only, for a training worker that holds them: recsys/dist.py)."""
        e0 = self._layer0(graph) if part is None else torch.cat([part.of(self.user_emb.weight),
                                                                  part.of(self.item_emb.weight)])
        if not self.transform:
            out = propagate(graph.norm_adj(), e0, self.layers)
        else:
            x, total = e0, e0
            for w in self.weights:
                x = torch.relu(w(SpMM.apply(graph.norm_adj(), x)))
                total = total + x
            out = total / (self.layers + 1)
        return out[: self.n_users], out[self.n_users:]

    def batch_loss(self, graph, users, pos, neg, edge_ids=None, part=None):
        """The objective + L2 on layer 0 (the paper's eq. 15), with final embeddings computed only at
        the batch's rows (see BatchRows); on `part`'s columns of the ID tables when given."""
        if self.transform:
            return super().batch_loss(graph, users, pos, neg, edge_ids)
        b, k = neg.shape
        rows = torch.cat([users, pos + self.n_users, neg.reshape(-1) + self.n_users])
        uniq, inverse = torch.unique(rows, return_inverse=True)
        tables = (self.user_emb.weight, self.item_emb.weight)
        final, first = BatchRows.apply(*(tables if part is None else map(part.of, tables)), uniq,
                                       graph.row_products(), self.layers)
        out = []
        for t in (final[inverse], first[inverse]):
            u, p, n = t.split([b, b, b * k])
            out.append((u, p, n.reshape(b, k, -1)))
        if part is not None:
            return self.part_losses(*out[0], l2(*out[1]), part)
        return self.ranking_loss(*out[0]), l2(*out[1])

    def split_columns(self) -> tuple[str, ...]:
        """The ID tables, without weight matrices (which mix the columns) or cosine scores."""
        return () if self.transform or self.cosine else ("user_emb.weight", "item_emb.weight")

    def regularised(self, users, pos, neg) -> list[torch.Tensor]:
        """The paper's L2 is on the batch's layer-0 (ID) embeddings."""
        return [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]
