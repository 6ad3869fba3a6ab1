"""Model families. Each is a RecModel (a torch Module) with `embed(graph) -> (user_emb, item_emb)`
and `from_config(cfg, graph, seed)`; recsys/families.py lists them."""
from __future__ import annotations


def build_model(cfg, graph, seed: int = 0):
    """cfg: recsys.config.ModelConfig; graph: the RecGraph it will train on (sizes, features).
    The seed fixes the initial weights, so a rerun on the same data trains the same model."""
    from recsys.families import family

    return family(cfg.family).build(cfg, graph, seed)
