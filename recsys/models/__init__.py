"""Model families. Each is a torch Module with `embed(graph) -> (user_emb, item_emb)`."""
from __future__ import annotations


def build_model(family: str, n_users: int, n_items: int, **params):
    if family == "lightgcn":
        from recsys.models.lightgcn import LightGCN

        return LightGCN(n_users, n_items, **params)
    raise ValueError(f"unknown model family {family!r}; available: lightgcn")
