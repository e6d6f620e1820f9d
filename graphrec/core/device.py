"""Where tensors go: the one rule that turns a --device option into a torch device."""

from __future__ import annotations

import re

import torch

from graphrec.core.errors import InputError

# The whole spelling is checked first, so a typo ("cdua", "cuda:x", "cuda:-1") is named as a typo on every
# machine, never reported as a missing GPU on one without CUDA or passed on to torch.
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(device: str | None = "auto") -> torch.device:
    """'auto' picks the GPU when one is visible; asking for CUDA without one, or for a GPU index that is not
    visible, is an input error, not a fallback (a later `.to()` would fail with a traceback instead).

    device: "auto", "cpu", "cuda" or "cuda:N" (case and surrounding spaces ignored; None means auto).
    """
    d = "auto" if device is None else str(device).strip().lower()
    if not _DEVICE.fullmatch(d):
        raise InputError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(
            f"--device {device}: no CUDA GPU is visible to torch (use --device cpu or auto)"
        )
    index, count = int(d.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        raise InputError(
            f"--device {device}: torch sees {count} CUDA GPU{'s' if count != 1 else ''} "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return torch.device(d)
