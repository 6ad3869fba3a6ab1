"""From validated data to what a model trains on: split, index, features, cold-start edges, graph."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from recsys.config import RunConfig
from recsys.data.loaders import with_split
from recsys.data.types import IndexedData, RecData
from recsys.families import family, load
from recsys.features import FeatureEncoder, infer_spec
from recsys.graph.build import SIMILAR_ITEM, SIMILAR_USER, RecGraph, build_graph
from recsys.graph.cold_start import attribute_edges, cold_nodes, similarity_edges
from recsys.progress import announced
from recsys.text import TextEncoder


@dataclass
class Prepared:
    data: RecData  # with its split
    indexed: IndexedData
    graph: RecGraph
    user_encoder: Optional[FeatureEncoder]
    item_encoder: Optional[FeatureEncoder]
    cold_users: np.ndarray  # boolean masks: no training interactions
    cold_items: np.ndarray
    tasks: Optional[object] = None  # a family's own labelled tasks (mmoe: recsys.data.network_tasks)


def needs_features(cfg: RunConfig) -> bool:
    """Only compute features (text encoding is the slow part) when something will read them."""
    return cfg.features.enabled and (family(cfg.model.family).reads_features(cfg.model) or cfg.graph.cold_start.enabled)


def node_features(frame, id_col: str, cfg: RunConfig, text: Optional[TextEncoder],
                  encoder: Optional[FeatureEncoder] = None):
    """(encoder, matrix) for an id table, or (None, None) when it has no usable feature columns.
    A given (already fitted) encoder is applied as it is, as serving a trained model requires."""
    if encoder is not None:
        return encoder, encoder.transform(frame.reindex(columns=[id_col, *encoder.spec.columns()]), text)
    if not needs_features(cfg):
        return None, None
    spec = infer_spec(frame, id_col, cfg.features.max_categories)
    if not cfg.features.text:
        spec.text = []
    if not spec.columns():
        return None, None
    encoder = FeatureEncoder(spec, cfg.features.max_categories).fit(frame)
    return encoder, encoder.transform(frame, text)


def trained_on(indexed: IndexedData, *splits: str) -> IndexedData:
    """`indexed` with the named held-out splits moved into train (left empty)."""
    from dataclasses import replace

    moved = {s: indexed.split(s)[:0] for s in splits}
    return replace(indexed, train=np.concatenate([indexed.train, *(indexed.split(s) for s in splits)]), **moved)


def prepare(data: RecData, cfg: RunConfig, encoders: tuple = (None, None), serving: bool = False) -> Prepared:
    """`serving`: every interaction is a graph edge (no held-out splits), for embedding with a
    trained model; `encoders`: that model's fitted (user, item) feature encoders."""
    data = with_split(data, cfg.data)
    indexed = data.indexed()
    if serving:
        indexed = trained_on(indexed, "valid", "test")
    tasks = None
    extra = family(cfg.model.family).prepare
    if extra and not serving:  # labelled tasks of the family's own (mmoe: held-out friendships leave the graph)
        indexed, tasks = load(extra)(data, indexed, cfg)
    wants_text = any(e is not None and e.spec.text for e in encoders) or (cfg.features.text and needs_features(cfg))
    text = TextEncoder(cfg.stores.text_cache()) if wants_text else None
    with announced(f"node features of {len(data.users)} users and {len(data.items)} items"
                   + (" (text through the sentence encoder)" if text else "")):
        user_enc, user_x = node_features(data.users, "user_id", cfg, text, encoders[0])
        item_enc, item_x = node_features(data.items, "item_id", cfg, text, encoders[1])
    return assemble(data, indexed, cfg, user_enc, user_x, item_enc, item_x, tasks)


def assemble(data: RecData, indexed: IndexedData, cfg: RunConfig, user_enc, user_x, item_enc, item_x,
             tasks=None) -> Prepared:
    """The graph over `indexed.train`: interactions, friendships, cold-start edges, node features."""
    cold_users = cold_nodes(indexed.n_users, indexed.train[:, 0])
    cold_items = cold_nodes(indexed.n_items, indexed.train[:, 1])
    edges = {}
    cs = cfg.graph.cold_start
    if cs.enabled:
        columns = cs.user_attributes if cs.user_attributes is not None else (
            user_enc.spec.categorical if user_enc else [])
        columns = [c for c in columns if c in data.users.columns]
        activity = np.bincount(indexed.train[:, 0], minlength=indexed.n_users)
        edges[SIMILAR_USER] = attribute_edges(data.users[columns].reset_index(drop=True), cold_users, activity, cs.k,
                                              candidates=cs.candidates, max_combination=cs.max_combination)
        if item_x is not None and item_x.shape[1] > 0:
            edges[SIMILAR_ITEM] = similarity_edges(item_x, cold_items, cs.k, exact_below=cs.exact_below)
    graph = build_graph(indexed, cfg.graph.social_edges, edges, user_x, item_x)
    return Prepared(data, indexed, graph, user_enc, item_enc, cold_users, cold_items, tasks)


def with_validation_trained(prepared: Prepared, cfg: RunConfig) -> Prepared:
    """The same data with the validation pairs moved into training (none held out), its graph rebuilt
    over them: what a refit (train.refit) trains on."""
    merged = trained_on(prepared.indexed, "valid")
    features = [None if f is None else f.cpu().numpy() for f in (prepared.graph.user_features,
                                                                  prepared.graph.item_features)]
    return assemble(prepared.data, merged, cfg, prepared.user_encoder, features[0], prepared.item_encoder,
                    features[1], prepared.tasks)
