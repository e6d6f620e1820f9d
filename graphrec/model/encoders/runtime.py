"""Mixed precision and progress bars shared by the neural encoders (device choice: graphrec.core.device)."""

from __future__ import annotations

import contextlib
import sys
from contextlib import AbstractContextManager

import torch
from tqdm.auto import tqdm

from graphrec.core.progress import progress_bar


def precision_for(device: torch.device) -> str:
    """bf16 where the GPU supports it, else fp16 on GPU; fp32 on CPU, where autocast gains little."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(
        device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16
    )


def item_bar(total: int, desc: str, enabled: bool = True) -> tqdm:
    """A progress bar counting items, with items/s."""
    return progress_bar(
        show=enabled and total > 0,
        total=total,
        desc=desc,
        unit="item",
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
        leave=False,
    )
