"""Device choice, mixed precision and progress bars shared by the neural encoders."""
from __future__ import annotations

import contextlib
import sys
from typing import ContextManager

import torch
from tqdm.auto import tqdm

from graphrec.errors import InputError


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks the GPU when one is visible; asking for CUDA without one is an input error, not a fallback."""
    d = (device or "auto").strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU is visible to torch (use --device cpu or auto)")
        return torch.device(d)
    raise InputError(f"--device {device!r}: expected auto, cpu or cuda[:N]")


def precision_for(device: torch.device) -> str:
    """bf16 where the GPU supports it, else fp16 on GPU; fp32 on CPU, where autocast gains little."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device: torch.device, precision: str) -> ContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def progress(total: int, desc: str, enabled: bool = True) -> tqdm:
    """A progress bar counting items, with items/s."""
    return tqdm(total=total, desc=desc, unit="item", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                disable=not enabled or total == 0, leave=False)
