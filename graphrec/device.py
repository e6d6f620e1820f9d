"""Where tensors go: the one rule that turns a --device option into a torch device."""
from __future__ import annotations

import torch

from graphrec.errors import InputError


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks the GPU when one is visible; asking for CUDA without one is an input error, not a fallback.

    device: "auto", "cpu", "cuda" or "cuda:N" (case and surrounding spaces ignored).
    """
    d = (device or "auto").strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU is visible to torch (use --device cpu or auto)")
        try:
            return torch.device(d)
        except RuntimeError:
            pass
    raise InputError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
