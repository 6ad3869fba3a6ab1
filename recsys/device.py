"""Where the layer mathematics runs: `compute.device` (auto | cpu | cuda | cuda:N).

DGL builds graphs and samples neighbourhoods on the CPU (its PyPI wheels have no CUDA); the
products, losses, optimiser steps, scoring and ranking run in torch on the resolved device. A
trained model leaves `fit` on the CPU again, so registering, serving and the CPU-only tools that
read it never meet a CUDA tensor; the refresh and evaluation move it to the device for their
forward pass and bring the vectors back.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from recsys.config_base import ConfigError

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(name: str = "auto") -> torch.device:
    """auto: the first CUDA device when torch sees one, else the CPU. Asking for CUDA on a machine
    without one is a ConfigError (exit 2), not a silent fall-back to hours on the CPU."""
    if not DEVICE.fullmatch(name):
        raise ConfigError(f"compute.device={name!r}: choose auto, cpu, cuda or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"compute.device={name}, but torch sees no CUDA device on this machine "
                              f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
                              "use compute.device=auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"compute.device={name}, but this machine has {torch.cuda.device_count()} "
                              "CUDA device(s), numbered from 0")
    return indexed(device)


def indexed(device: torch.device) -> torch.device:
    """cuda as cuda:N (the current device), so that one device has one name (tensors report theirs so)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def describe(device: torch.device) -> str:
    """The device's name for the run's record, e.g. 'cuda:0 (NVIDIA H200)' or 'cpu'."""
    device = indexed(device)
    return str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})"


def to_device(array, device: torch.device) -> torch.Tensor:
    """A numpy array or tensor on `device`; from pinned host memory without blocking when CUDA."""
    t = torch.as_tensor(array)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@contextmanager
def placed(model, device: torch.device) -> Iterator:
    """The model on `device` for the block, and back where it was afterwards (pass or fail)."""
    home = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)


def embed_on(model, graph, device: Optional[torch.device] = None, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's (user, item) vectors without gradients, computed on `device` (where the model is
    when None) and left there. The model goes back where it was, in the mode it was in."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    training = model.training
    with placed(model, device):
        model.eval()
        try:
            with torch.no_grad():
                return model.embed(graph.to(device), **options)
        finally:
            model.train(training)
