"""Serving-time embeddings from a registered inductive model, without retraining.

The refresh builds today's graph (every interaction an edge, today's users and items, their
features through the model's own fitted encoders), loads the trained weights and runs the
model's layer-wise, chunked inference over it: users and items that joined after training get
vectors from their features and edges like everyone else.
"""
from __future__ import annotations

import numpy as np
import torch

from recsys.config import ModelConfig, RunConfig
from recsys.data.types import IndexedData, RecData
from recsys.device import embed_on, resolve_device
from recsys.inductive import Bundle
from recsys.models import build_model
from recsys.prepare import prepare


class ReembedError(ValueError):
    """Today's data does not fit the model (a feature it needs is gone)."""


def reembed(bundle: Bundle, data: RecData, cfg: RunConfig,
            map_chunks=None) -> tuple[IndexedData, np.ndarray, np.ndarray]:
    """(today's ids, user vectors, item vectors) for every user and item of `data`. `map_chunks`
    runs the layer-wise chunks elsewhere (GraphSAGE; see GraphSAGE.encode)."""
    if bundle.item_features is not None and bundle.item_encoder is None:
        raise ReembedError("this model version was registered without its item feature encoder; "
                           "retrain it once to re-embed new items")
    model_cfg = ModelConfig.model_validate(bundle.model_cfg)
    cfg = cfg.model_copy(update={"model": model_cfg})
    prepared = prepare(data, cfg, encoders=(bundle.user_encoder, bundle.item_encoder), serving=True)
    model = build_model(model_cfg, prepared.graph)
    try:
        model.load_state_dict(bundle.state_dict)
    except RuntimeError as exc:
        raise ReembedError(f"today's features do not fit the trained model: {str(exc).splitlines()[0]}") from None
    if map_chunks is not None and hasattr(model, "layer_chunk"):  # the chunks run on Dask's (CPU) workers
        users, items = embed_on(model, prepared.graph, torch.device("cpu"), map_chunks=map_chunks)
    else:
        users, items = embed_on(model, prepared.graph, resolve_device(cfg.compute.device))
    return prepared.indexed, users.cpu().numpy(), items.cpu().numpy()
