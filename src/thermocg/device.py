"""Which torch device a stage computes on (``[run] device``)."""

from __future__ import annotations

from thermocg.errors import ConfigError


def pick_device(name: str = "auto"):
    """``auto``: the GPU when torch sees one, else the CPU; ``cuda`` without a GPU is an error.

    Returns a ``torch.device``.
    """
    import torch

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device = 'cuda' but torch sees no GPU; use device = 'cpu' or 'auto'")
        return torch.device("cuda")
    return torch.device("cpu")
