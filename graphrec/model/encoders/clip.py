"""CLIP image and text towers over open-clip-torch, with weights that are real or loudly random.

Weights come from (a) an open_clip pretrained tag, downloaded through open_clip / the Hugging Face hub,
(b) a local checkpoint file (.safetensors, or .bin/.pt read with torch.load(weights_only=True) by open_clip's
loader), or (c) `pretrained="none"`: seeded random init, for tests only, marked `random_weights: true`.
A tag that cannot be downloaded is an InputError, never a fallback to random weights.

Long text: CLIP reads 77 tokens. With open_clip's BPE tokenizer a text is cut into consecutive
75-token chunks (at most `max_chunks`), each chunk is encoded, and the item vector is the token-count
weighted mean of the L2-normalised chunk vectors, normalised again. Other tokenizers (HF towers) truncate.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graphrec.core.device import resolve_device
from graphrec.core.errors import InputError
from graphrec.core.io import file_sha256, read_json
from graphrec.core.settings import DEFAULT_CLIP_MODEL
from graphrec.model.encoders.images import (
    DEFAULT_MAX_PIXELS,
    default_workers,
    image_batches,
)
from graphrec.model.encoders.precomputed import regular_file
from graphrec.model.encoders.runtime import autocast, item_bar, precision_for

DEFAULT_TAG = "laion2b_s34b_b79k"
# A deliberately small architecture for tests and CI (random weights only: nobody publishes weights for it).
TINY_MODEL = "graphrec-tiny"
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 64,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 16,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
    },
}


@dataclass
class ClipEncoder:
    model: Any  # an open_clip CLIP model: encode_image / encode_text (typed by open_clip, not torch.nn.Module)
    preprocess: Callable
    tokenizer: Any  # an open_clip tokenizer: called on texts; SimpleTokenizer also encodes and names its tokens
    device: torch.device
    precision: str
    identity: dict[str, Any]
    dim: int = 0
    max_chunks: int = 4

    @property
    def random_weights(self) -> bool:
        return bool(self.identity["random_weights"])

    def image_identity(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
        return {
            **self.identity,
            "tower": "image",
            "preprocess": repr(self.preprocess),
            "max_pixels": max_pixels,
        }

    def text_identity(self) -> dict[str, Any]:
        return {
            **self.identity,
            "tower": "text",
            "tokenizer": type(self.tokenizer).__name__,
            "context_length": self._context_length(),
            "long_text": f"chunk-mean, up to {self.max_chunks} chunks"
            if self._chunkable()
            else "truncate",
        }

    # -- images ------------------------------------------------------------------------------------
    def encode_images(
        self,
        paths: Sequence[str],
        batch_size: int = 64,
        num_workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: bool = True,
        desc: str = "clip_image",
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
        """(vectors [n, dim], ok [n], bad [(position, reason)]); bad files leave ok False and zeros."""
        n = len(paths)
        out = np.zeros((n, self.dim), dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        bad: list[tuple[int, str]] = []
        workers = default_workers() if num_workers is None else num_workers
        batches = image_batches(
            paths,
            self.preprocess,
            batch_size,
            workers,
            pin_memory=self.device.type == "cuda",
            max_pixels=max_pixels,
        )
        # copied back in groups: that keeps the GPU queue full instead of syncing every batch
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        with (
            item_bar(n, desc, progress) as bar,
            torch.inference_mode(),
            autocast(self.device, self.precision),
        ):
            for pos, images, failed in batches:
                bad.extend(failed)
                if len(pos):
                    f = self.model.encode_image(
                        images.to(self.device, non_blocking=True)
                    )
                    pending.append((pos, F.normalize(f.float(), dim=-1)))
                if len(pending) >= 32:
                    _copy_back(pending, out, ok)
                bar.update(len(pos) + len(failed))
            _copy_back(pending, out, ok)
        return out, ok, bad

    # -- text --------------------------------------------------------------------------------------
    def encode_texts(
        self,
        texts: Sequence[str],
        batch_size: int = 256,
        progress: bool = True,
        desc: str = "clip_text",
    ) -> np.ndarray:
        """L2-normalised vectors [n, dim] for non-empty texts (long ones chunk-averaged, see module doc)."""
        n = len(texts)
        acc = torch.zeros(n, self.dim, dtype=torch.float32, device=self.device)
        if n == 0:
            return acc.cpu().numpy()
        tokens, owner, weight = self._tokenize(texts)
        owner_d, weight_d = owner.to(self.device), weight.to(self.device)
        with (
            item_bar(n, desc, progress) as bar,
            torch.inference_mode(),
            autocast(self.device, self.precision),
        ):
            for s in range(0, len(tokens), batch_size):
                f = self.model.encode_text(
                    tokens[s : s + batch_size].to(self.device, non_blocking=True)
                )
                f = F.normalize(f.float(), dim=-1) * weight_d[s : s + batch_size, None]
                acc.index_add_(0, owner_d[s : s + batch_size], f)
                # owners are sorted: items before owner[e] have all their chunks in
                e = s + batch_size
                bar.update((int(owner[e]) if e < len(owner) else n) - bar.n)
        return F.normalize(acc, dim=-1).cpu().numpy()

    def _context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", None) or 77)

    def _chunkable(self) -> bool:
        from open_clip.tokenizer import SimpleTokenizer

        return (
            isinstance(self.tokenizer, SimpleTokenizer)
            and self.tokenizer.reduction_fn is None
        )

    def _tokenize(
        self, texts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token rows [chunks, L], the item of each chunk (sorted), and each chunk's averaging weight."""
        if not self._chunkable():
            return (
                self.tokenizer(list(texts)),
                torch.arange(len(texts)),
                torch.ones(len(texts)),
            )
        tok, L = self.tokenizer, self._context_length()
        body = L - 2
        ids = [tok.encode(t)[: body * self.max_chunks] for t in texts]
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        n_chunks = np.maximum(1, -(-lengths // body))
        owner = np.repeat(np.arange(len(texts)), n_chunks)
        first = np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
        chunk_len = np.minimum(
            body, np.repeat(lengths, n_chunks) - (np.arange(len(owner)) - first) * body
        )
        chunk_len = np.maximum(chunk_len, 0)
        flat = np.fromiter(
            (t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum())
        )
        rows = np.zeros((len(owner), L), dtype=np.int64)
        rows[:, 0] = tok.sot_token_id
        body_mask = np.arange(L)[None, :] - 1 < chunk_len[:, None]
        body_mask[:, 0] = False
        rows[body_mask] = flat  # row-major order matches the chunks' order in `flat`
        rows[np.arange(len(owner)), chunk_len + 1] = tok.eot_token_id
        weight = np.maximum(chunk_len, 1).astype(np.float32)
        return torch.from_numpy(rows), torch.from_numpy(owner), torch.from_numpy(weight)


def _copy_back(
    pending: list[tuple[torch.Tensor, torch.Tensor]], out: np.ndarray, ok: np.ndarray
) -> None:
    """Move the pending (positions, vectors) batches into `out`, marking their rows `ok`; `pending` is emptied."""
    for pos, f in pending:
        out[pos.numpy()] = f.cpu().numpy()
        ok[pos.numpy()] = True
    pending.clear()


def load_clip(
    model_name: str = DEFAULT_CLIP_MODEL,
    pretrained: str | None = None,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    max_chunks: int = 4,
) -> ClipEncoder:
    """An open_clip model ready for inference; see the module doc for where weights come from."""
    import open_clip

    open_clip.factory._MODEL_CONFIGS.setdefault(TINY_MODEL, TINY_CONFIG)
    name, arch = _architecture(open_clip, model_name)
    dev = resolve_device(device)
    if checkpoint is not None and pretrained is not None:
        raise InputError("give --clip-pretrained or --clip-checkpoint, not both")
    identity = _identity(open_clip, model_name, arch)
    weights = _weights(open_clip, name, pretrained, checkpoint, seed, identity)
    model, preprocess = _create(
        open_clip, name, weights, checkpoint, dev, seed, identity
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    precision = precision_for(dev)
    identity["precision"] = precision
    enc = ClipEncoder(
        model, preprocess, tokenizer, dev, precision, identity, max_chunks=max_chunks
    )
    with torch.inference_mode():
        enc.dim = int(model.encode_text(tokenizer([""]).to(dev)).shape[-1])
    identity["dim"] = enc.dim
    logging.getLogger(__name__).info(
        "CLIP %s on %s (%s), dim %d", model_name, dev, precision, enc.dim
    )
    return enc


def _identity(open_clip: Any, model_name: str, arch: Any) -> dict[str, Any]:
    """The encoder identity the cache compares, before the weights are chosen (`_weights` fills them in)."""
    return {
        "encoder": "open_clip",
        "open_clip_version": open_clip.__version__,
        "model": model_name,
        "architecture": arch,
        "pretrained": None,
        "checkpoint": None,
        "checkpoint_sha256": None,
        "random_weights": False,
    }


def _create(
    open_clip: Any,
    name: str,
    weights: str | None,
    checkpoint: str | Path | None,
    dev: torch.device,
    seed: int,
    identity: dict[str, Any],
) -> tuple[Any, Callable]:
    """(model, image preprocessing) built by open_clip, its own logging silenced; a failure is one InputError
    saying what could not be had."""
    kwargs: dict[str, Any] = {"pretrained_image": False, "pretrained_text": False}
    quiet = logging.root.manager.disable
    # open_clip logs its failures on the root logger; ours is the one line
    logging.disable(logging.CRITICAL)
    try:
        # seeded random init without touching the caller's RNG: the same random weights on every run, so the
        # cache stays valid
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=weights,
                device=dev,
                require_pretrained=not identity["random_weights"],
                **kwargs,
            )
    # open_clip wraps hub, network and state-dict errors in several types
    except Exception as e:
        raise _load_error(
            _short(e), name, weights, checkpoint, identity["random_weights"]
        ) from None
    finally:
        logging.disable(quiet)
    return model, preprocess


def _load_error(
    reason: str,
    name: str,
    weights: str | None,
    checkpoint: str | Path | None,
    random_weights: bool,
) -> InputError:
    """The one line for a model open_clip could not build: the checkpoint, the architecture, or the download."""
    if checkpoint is not None:
        return InputError(
            f"cannot load this checkpoint into CLIP model {name!r}: {reason}",
            file=checkpoint,
        )
    if random_weights:
        return InputError(f"cannot build CLIP model {name!r}: {reason}")
    source = f"{name}/{weights}" if weights else name
    return InputError(
        f"could not get the CLIP weights {source} ({reason}); on a machine without "
        "internet download them elsewhere and pass --clip-checkpoint PATH (.safetensors/.bin/.pt)"
    )


def _weights(
    open_clip: Any,
    name: str,
    pretrained: str | None,
    checkpoint: str | Path | None,
    seed: int,
    identity: dict[str, Any],
) -> str | None:
    """What open_clip loads the weights from (a checkpoint file, a pretrained tag, or None: random weights or
    a hub repo / folder bringing its own); `identity` records it."""
    if checkpoint is not None:
        path = regular_file(Path(checkpoint), "CLIP checkpoint file")
        identity.update(
            checkpoint=str(path.resolve()), checkpoint_sha256=file_sha256(path)
        )
        return str(path)
    if (pretrained or "").lower() == "none":
        identity.update(pretrained="none", random_weights=True, seed=seed)
        return None
    if name.startswith(("hf-hub:", "local-dir:")):
        identity["pretrained"] = (
            name  # the repo / folder brings its own weights; open_clip ignores `pretrained`
        )
        return None
    tag = pretrained or _default_tag(open_clip, name)
    known = open_clip.list_pretrained_tags_by_model(name)
    if tag not in known:
        raise InputError(
            f"no pretrained weights {tag!r} for CLIP model {name!r} "
            f"(known tags: {', '.join(known) or 'none'}); pass --clip-checkpoint PATH "
            "or --clip-pretrained none (random weights, tests only)"
        )
    identity["pretrained"] = tag
    return tag


def _architecture(open_clip: Any, model_name: str) -> tuple[str, Any]:
    """The open_clip name to build and the architecture it stands for (a built-in, a schema, or a JSON file)."""
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return model_name, model_name
    if model_name.endswith(".json"):
        path = Path(model_name)
        cfg = read_json(path)
        if not isinstance(cfg, dict) or not all(
            k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")
        ):
            raise InputError(
                "not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)",
                file=path,
            )
        open_clip.factory._MODEL_CONFIGS[path.stem] = cfg
        return path.stem, cfg
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(
            f"unknown CLIP model {model_name!r}{hint}; give an open_clip model name or a model "
            "config .json file"
        )
    return model_name, cfg


def _short(e: Exception, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _default_tag(open_clip: Any, name: str) -> str:
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not tags:
        raise InputError(
            f"CLIP model {name!r} has no published weights: pass --clip-checkpoint PATH "
            "or --clip-pretrained none (random weights, tests only)"
        )
    return DEFAULT_TAG if DEFAULT_TAG in tags else tags[0]
