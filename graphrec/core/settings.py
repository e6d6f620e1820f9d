"""The settings of the stages that take many (`graphrec encode`, `graphrec train` and its ranker), as frozen or
plain dataclasses with their defaults and checks: the one place each default is written. The stages read them,
the command line takes its options' defaults from them (a test compares), and config.json records them. Light on
purpose (no torch): the command line imports this module to build its options.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from graphrec.core.errors import InputError
from graphrec.core.memory import check_fits


# -- split ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitSettings:
    """How `graphrec data split` holds parts out (its options; dataset.json's `split` records them). valid / test:
    per-user shares (< 1) or counts; cold_items / cold_users: shares held out whole; cold_user_context: the
    first interactions of each cold user given as context; cold_by: item, interaction or time (new items)."""

    method: str = "random"
    valid: float = 0.1
    test: float = 0.1
    cold_items: float = 0.2
    cold_users: float = 0.0
    cold_user_context: int = 0
    cold_by: str = "item"
    seed: int = 0


# -- encode ---------------------------------------------------------------------------------------------
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_ST_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_PIXELS = (
    40_000_000  # larger images are refused unread (decompression bombs)
)


@dataclass(frozen=True)
class EncodeSettings:
    """How `run_encode` encodes (the options of `graphrec encode`; recorded in config.json as they are)."""

    clip_model: str = DEFAULT_CLIP_MODEL
    clip_pretrained: str | None = None
    clip_checkpoint: str | Path | None = None
    st_model: str = DEFAULT_ST_MODEL
    precomputed: Sequence[str] = ()  # NAME=FILE[,IDS]
    text_columns: Sequence[str] | None = None
    batch_size: int = 64
    text_batch_size: int = 256
    device: str = "auto"
    num_workers: int | None = None
    lexical_dim: int = 128
    max_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EncodeSettings:
        """The settings a features record holds (the inverse of `record`)."""
        return cls(**{f.name: record[f.name] for f in fields(cls)})

    def record(self, modalities: list[str], resolved_device: str) -> dict[str, Any]:
        """The settings as config.json's features record holds them."""
        return {
            "modalities": modalities,
            "clip_model": self.clip_model,
            "clip_pretrained": self.clip_pretrained,
            "clip_checkpoint": None
            if self.clip_checkpoint is None
            else str(self.clip_checkpoint),
            "st_model": self.st_model,
            "precomputed": list(self.precomputed),
            "text_columns": list(self.text_columns) if self.text_columns else None,
            "batch_size": self.batch_size,
            "text_batch_size": self.text_batch_size,
            "device": self.device,
            "resolved_device": resolved_device,
            "num_workers": self.num_workers,
            "lexical_dim": self.lexical_dim,
            "max_pixels": self.max_pixels,
            "seed": self.seed,
        }


# -- train ----------------------------------------------------------------------------------------------
# Settings that do not change the result: a resumed run may differ in them.
_RUNTIME = ("device", "progress")


@dataclass
class TrainSettings:
    epochs: int = 60  # maximum epochs of the selection phase
    dim: int = 64
    layers: int = 3
    lr: float | None = None  # None: auto_lr(batch_size), 0.005 at the smallest batch
    batch_size: int | None = (
        None  # None: auto_batch(train interactions): 2048, or a power of two, <= 64 an epoch
    )
    reg: float = 1e-4  # L2 on the batch's layer-0 rows (LightGCN)
    weight_decay: float = 1e-5  # on projections and attribute tables
    cold_weight: float = 0.5  # BPR through the content path (DropoutNet)
    align_weight: float = 1.0  # content -> collaborative distillation (ALDI)
    patience: int = 5
    k: int = 20
    seed: int = 0
    refit: bool = True
    gnn: bool = True  # False: no GNN epochs; the ranker serves its closed-form blend (graph filter, content maps)
    mode: str = "full"  # "full" propagation per batch, or "sampled" neighbourhoods
    fanouts: tuple[int, ...] = (15, 10, 5)
    keep_checkpoints: int = 2
    device: str = "auto"
    progress: bool = True

    def check(self) -> None:
        """One line for the first setting out of range, before anything is read or written."""
        flag = lambda name: f"--{name.replace('_', '-')}"  # noqa: E731
        for name in ("epochs", "dim", "batch_size", "k", "keep_checkpoints"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(
                    f"{flag(name)} must be at least 1 (got {getattr(self, name)})"
                )
        if self.lr is not None and not (
            0.0 < self.lr <= 1.0
        ):  # also refuses NaN, which fails every comparison
            raise InputError(f"--lr must be a number in (0, 1] (got {self.lr})")
        for name in ("reg", "weight_decay", "cold_weight", "align_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise InputError(
                    f"{flag(name)} must be a finite number >= 0 (got {value})"
                )
        if not 0 <= self.seed < 2**32:
            raise InputError(f"--seed must be in 0 .. 2^32-1 (got {self.seed})")
        if self.layers < 0 or self.patience < 0:
            raise InputError("--layers and --patience must not be negative")
        if self.mode not in ("full", "sampled"):
            raise InputError(f"--mode must be 'full' or 'sampled' (got {self.mode!r})")
        if self.mode == "sampled" and len(self.fanouts) != self.layers:
            raise InputError(
                f"--fanouts needs one value per layer ({self.layers}), got {list(self.fanouts)}"
            )

    def resolved(self, n_train: int) -> TrainSettings:
        """The settings with the automatic batch size and learning rate decided for `n_train` interactions."""
        batch = self.batch_size if self.batch_size is not None else auto_batch(n_train)
        return dataclasses.replace(
            self,
            batch_size=batch,
            lr=self.lr if self.lr is not None else auto_lr(batch),
        )

    def result_settings(self) -> dict[str, Any]:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
            if k not in _RUNTIME
        }


MIN_BATCH = 2048
MAX_BATCHES_PER_EPOCH = 64
BASE_LR, MAX_LR = 5e-3, 2e-2


def auto_batch(n_train: int) -> int:
    """The default batch: the largest power of two with at least 32 batches an epoch, and at least MIN_BATCH
    triples, so an epoch is at most MAX_BATCHES_PER_EPOCH batches once the data is large. A batch costs one
    propagation over the whole graph plus its triples (full mode), so an epoch costs a bounded number of
    propagations whatever the data's size: MovieLens latest-small (66k training pairs) keeps the former default
    2048; MovieLens-1M (590k) gets 16,384; 20M interactions 524,288."""
    return max(
        MIN_BATCH,
        1 << max(0, (n_train // (MAX_BATCHES_PER_EPOCH // 2)).bit_length() - 1),
    )


def auto_lr(batch_size: int) -> float:
    """The default learning rate for a batch size: BASE_LR at MIN_BATCH, growing with the square root of the
    batch (fewer, less noisy steps take larger ones), at most MAX_LR. (2048, 0.005) and (16384, 0.02) scored
    alike on latest-small (BENCHMARKS.md, GNN alone)."""
    return float(min(MAX_LR, BASE_LR * (max(batch_size, MIN_BATCH) / MIN_BATCH) ** 0.5))


# -- the ranker's fit (part of train) ---------------------------------------------------------------------
EASE_DIM = 1024  # at most rank(X) <= min(n_users, n_items) are used
LOWPASS_DIM = 256  # the ideal low-pass filter's singular vectors (GF-CF's k)
MAX_FIT_USERS = 3000


@dataclass(frozen=True)
class RankSettings:
    """How the ranker is fitted (by `graphrec train`, after the GNN, before its model/ is switched in).

    k: the cut-off of the validation NDCG the blend maximises. ease_lambda: fixed, or None to choose from
    EASE_LAMBDAS on validation. ease_dim: dimensions of the low-rank EASE block; at most min(users, items) are
    used, so the default is cut to the data, while a larger explicit value is refused. lowpass_dim: singular
    vectors of the ideal low-pass graph filter (0: no low-pass block), cut to the data as ease_dim.
    refit: refit the collaborative parts on train+valid after selection (False: they stay fitted on train, as the
    embeddings do under `graphrec train --no-refit`). max_fit_users: at most this many users sampled per
    validation task of the blend (fewer once users x candidates passes metrics.VALIDATION_CELLS).
    keep_gnn: serve the GNN block even when the closed-form blend without it scores as well on validation
    (by default it is served only when it adds, and `graphrec train` refits the GNN only then). gnn: False leaves
    the GNN's block out of the blend whatever it scores (`graphrec train --no-gnn`, which trains no GNN)."""

    k: int = 20
    ease_lambda: float | None = None
    ease_dim: int = EASE_DIM
    lowpass_dim: int = LOWPASS_DIM
    refit: bool = True
    max_fit_users: int = MAX_FIT_USERS
    keep_gnn: bool = False
    gnn: bool = True

    def check(self, n_users: int, n_items: int) -> None:
        """One line for a setting out of range or one whose EASE block cannot fit in memory, before any work."""
        if self.keep_gnn and not self.gnn:
            raise InputError("--keep-gnn and --no-gnn contradict each other: give one")
        for flag, value in (
            ("--ease-dim", self.ease_dim),
            ("--k", self.k),
            ("max_fit_users", self.max_fit_users),
        ):
            if value < 1:
                raise InputError(f"{flag} must be at least 1 (got {value})")
        if self.k > n_items:
            raise InputError(
                f"--k {self.k} is more than the {n_items} items of the catalogue"
            )
        if self.lowpass_dim < 0:
            raise InputError(
                f"--lowpass-dim must be 0 (no low-pass block) or more (got {self.lowpass_dim})"
            )
        rank = min(n_users, n_items)
        for flag, value, default in (
            ("--ease-dim", self.ease_dim, EASE_DIM),
            ("--lowpass-dim", self.lowpass_dim, LOWPASS_DIM),
        ):
            if value > max(default, rank):
                raise InputError(
                    f"{flag} {value} is more than the {rank} dimensions the interactions have "
                    f"(min of users and items): give at most {rank}"
                )
        if self.ease_lambda is not None and not (
            math.isfinite(self.ease_lambda) and self.ease_lambda > 0
        ):
            raise InputError(
                f"ease_lambda must be a positive finite number (got {self.ease_lambda})"
            )
        # the SVD's float64 basis and the user / item factors, a few copies of each at a time
        check_fits(
            n_items * min(self.ease_dim, rank) * 8 * 6,
            f"a {self.ease_dim}-dimensional EASE block",
            "--ease-dim",
        )
        check_fits(
            n_items * min(self.lowpass_dim, rank) * 8 * 6,
            f"a {self.lowpass_dim}-dimensional low-pass block",
            "--lowpass-dim",
        )
