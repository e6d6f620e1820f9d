"""A sentence-transformers text encoder (optional extra), from a hub name or a local model folder.

Strong pretrained text matters most for cold items; all-MiniLM-L6-v2 is the default (about 90 MB).
Texts longer than the model's max_seq_length (256 word pieces for MiniLM) are truncated by the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphrec.core.device import resolve_device
from graphrec.core.errors import InputError
from graphrec.core.io import file_sha256
from graphrec.core.settings import DEFAULT_ST_MODEL
from graphrec.model.encoders.runtime import autocast, item_bar, precision_for

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class SentenceEncoder:
    model: Any
    device: torch.device
    precision: str
    identity: dict[str, Any]
    dim: int

    def encode_texts(
        self,
        texts: Sequence[str],
        batch_size: int = 128,
        progress: bool = True,
        desc: str = "st_text",
    ) -> np.ndarray:
        """L2-normalised vectors [n, dim]."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # blocks of several batches keep sentence-transformers' length sorting useful while the bar moves
        block = batch_size * 4
        with (
            item_bar(len(texts), desc, progress) as bar,
            torch.inference_mode(),
            autocast(self.device, self.precision),
        ):
            for s in range(0, len(texts), block):
                part = list(texts[s : s + block])
                out[s : s + len(part)] = self.model.encode(
                    part,
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                bar.update(len(part))
        return out


def load_sentence_model(
    name_or_path: str = DEFAULT_ST_MODEL, device: str = "auto"
) -> SentenceEncoder:
    model_class, version = _import_sentence_transformers()
    dev = resolve_device(device)
    local = Path(name_or_path).expanduser()
    identity = _model_identity(name_or_path, local, version)
    model = _load_model(model_class, name_or_path, local, dev)
    dim, max_len = _dim_and_max_length(model, name_or_path)
    precision = precision_for(dev)
    identity.update(
        max_seq_length=max_len, precision=precision, dim=dim, normalized=True
    )
    return SentenceEncoder(model, dev, precision, identity, dim)


def _import_sentence_transformers() -> tuple[Any, str]:
    """(the SentenceTransformer class, the package version); one clear error when the optional extra is missing."""
    try:
        from sentence_transformers import SentenceTransformer, __version__
    except ImportError:
        raise InputError(
            "modality st_text needs sentence-transformers: pip install 'graphrec[sentence-transformers]'"
        ) from None
    return SentenceTransformer, __version__


def _model_identity(name_or_path: str, local: Path, version: str) -> dict[str, Any]:
    """What identifies the model's vectors; a local folder is named by its real path and its weights' hash."""
    identity: dict[str, Any] = {
        "encoder": "sentence-transformers",
        "sentence_transformers_version": version,
        "model": name_or_path,
        "weights_sha256": None,
        "random_weights": False,
    }
    if local.is_dir():
        weights = next(
            (local / f for f in _WEIGHT_FILES if (local / f).is_file()), None
        )
        if weights is None:
            raise InputError(
                f"no model weights ({' or '.join(_WEIGHT_FILES)}) in this folder",
                file=local,
            )
        identity.update(model=str(local.resolve()), weights_sha256=file_sha256(weights))
    return identity


def _load_model(
    model_class: Any, name_or_path: str, local: Path, dev: torch.device
) -> Any:
    """The model in eval mode on `dev`, from the local folder or the hub; a failure is one line that says why."""
    try:
        model = model_class(
            str(local) if local.is_dir() else name_or_path, device=str(dev)
        )
    except Exception as e:  # hub, network and format errors arrive as many types
        reason = " ".join(str(e).split())[:300]
        raise InputError(
            f"could not load sentence-transformers model {name_or_path!r} ({reason}); without internet "
            "pass --st-model with a local model folder"
        ) from None
    model.eval()
    return model


def _dim_and_max_length(model: Any, name_or_path: str) -> tuple[int, int]:
    """(vector dimension, max_seq_length) of a loaded model; a model without max_seq_length is refused."""
    # renamed in v5
    get_dim = (
        getattr(model, "get_embedding_dimension", None)
        or model.get_sentence_embedding_dimension
    )
    dim = int(get_dim() or model.encode([""], convert_to_numpy=True).shape[1])
    # None where the first module is no text transformer (int(None) failed)
    max_len = model.max_seq_length
    if max_len is None:
        raise InputError(
            f"sentence-transformers model {name_or_path!r} gives no max_seq_length: st_text needs a "
            "text transformer model"
        )
    return dim, int(max_len)
