"""Model families. Each is a RecModel (a torch Module) with `embed(graph) -> (user_emb, item_emb)`."""
from __future__ import annotations

FAMILIES = ("lightgcn", "gcn", "sage", "pinsage", "mmoe", "llm")


def build_model(cfg, graph, seed: int = 0):
    """cfg: recsys.config.ModelConfig; graph: the RecGraph it will train on (sizes, features).
    The seed fixes the initial weights, so a rerun on the same data trains the same model."""
    if cfg.family == "mmoe":  # the bottom; the heads are trained on top of it (recsys/multitask.py)
        cfg = cfg.model_copy(update={"family": cfg.mmoe.bottom})
    if cfg.family == "llm":  # the GNN the prefix reads (recsys/models/llm.py)
        cfg = cfg.model_copy(update={"family": cfg.llm.bottom})
    model = _build(cfg, graph, seed)
    model.cosine = cfg.score == "cosine"
    return model


def _build(cfg, graph, seed: int):
    import torch

    torch.manual_seed(seed)
    nu, ni = graph.n_users, graph.n_items
    if cfg.family == "lightgcn":
        from recsys.models.lightgcn import LightGCN

        use = cfg.lightgcn.use_features
        if use and graph.user_features is None and graph.item_features is None:
            raise ValueError("model.lightgcn.use_features=true, but the data has no node features")
        return LightGCN(nu, ni, cfg.dim, cfg.layers, graph.user_features if use else None,
                        graph.item_features if use else None, transform=cfg.lightgcn.transform)
    if cfg.family == "gcn":
        from recsys.models.gcn import GCN

        return GCN(nu, ni, cfg.dim, cfg.layers)
    if cfg.family == "sage":
        from recsys.models.sage import GraphSAGE

        s = cfg.sage
        return GraphSAGE(nu, ni, cfg.dim, len(s.fanouts), s.aggregator, tuple(s.fanouts), graph.user_features,
                         graph.item_features, s.chunk_size, seed)
    if cfg.family == "pinsage":
        from recsys.models.pinsage import PinSage

        p = cfg.pinsage
        return PinSage(nu, ni, cfg.dim, cfg.layers, p.num_neighbors, p.num_walks, p.restart_prob,
                       p.num_traversals, p.margin, graph.item_features, seed, pooling=p.pooling)
    raise ValueError(f"unknown model family {cfg.family!r}; available: {', '.join(FAMILIES)}")
