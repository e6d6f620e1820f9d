"""The settings of the stages that take many (split, encode, train and its ranker, quickstart).

Frozen or plain dataclasses with their defaults, their help and their checks: the one place each default is
written. The stages read them; the command line builds its options from them (`setting` gives a field the help
its option shows; graphrec.app.cli generates the options; a test compares); config.json records them. Light on
purpose (no torch): the command line imports this module to build its options.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from graphrec.core.errors import InputError
from graphrec.core.memory import check_fits


def setting(default: Any, help: str, **option: Any) -> Any:
    """A settings field with the help its command-line option shows.

    Args:
        default: the field's default (the option's too).
        help: the option's help text.
        **option: how the option is spelled where the field's type does not say it: `repeat=True` for a list
            given by repeating the option (else a list is comma-separated), `path=True` for a file, `metavar`
            for the value's placeholder in the help, `names` for the option's spellings, `envvar` for an
            environment variable that gives it.

    Returns:
        A dataclass field whose metadata holds the help and the option's spelling.
    """
    return field(default=default, metadata={"help": help, **option})


# -- split ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitSettings:
    """How `graphrec data split` holds parts out (its options; dataset.json's `split` records them)."""

    method: str = setting(
        "random", "random, or temporal (latest interactions held out)."
    )
    valid: float = setting(
        0.1, "Per-user validation share (< 1) or count (whole number >= 1)."
    )
    test: float = setting(
        0.1, "Per-user test share (< 1) or count (whole number >= 1)."
    )
    cold_items: float = setting(
        0.2, "Share of items held out with all their interactions."
    )
    cold_users: float = setting(
        0.0, "Share of users held out with all their interactions."
    )
    cold_user_context: int = setting(
        0, "First N interactions of each cold user given as context."
    )
    cold_by: str = setting(
        "item",
        "Cold items: random, to cold_valid/cold_test by item ('item') or by interaction "
        "('interaction'); or 'time': the items first seen last (new items; the earlier half "
        "selects, the newest half is the test).",
    )
    seed: int = setting(0, "Random seed.")


# -- encode ---------------------------------------------------------------------------------------------
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_ST_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_PIXELS = (
    40_000_000  # larger images are refused unread (decompression bombs)
)


@dataclass(frozen=True)
class EncodeSettings:
    """How `run_encode` encodes (the options of `graphrec encode`; recorded in config.json as they are)."""

    clip_model: str = setting(
        DEFAULT_CLIP_MODEL,
        "open_clip model name, 'hf-hub:ORG/REPO', or a model config .json.",
    )
    clip_pretrained: str | None = setting(
        None,
        "open_clip pretrained tag (default: laion2b_s34b_b79k), or 'none' for random "
        "weights (tests only).",
    )
    clip_checkpoint: str | Path | None = setting(
        None, "Local CLIP weights file (.safetensors/.bin/.pt).", path=True
    )
    st_model: str = setting(
        DEFAULT_ST_MODEL,
        "sentence-transformers hub name or local model folder (modality st_text).",
    )
    precomputed: Sequence[str] = setting(
        (),
        "NAME=FILE[,IDS]: .npy (+ id list) or .parquet keyed by item_id; repeatable.",
        repeat=True,
        metavar="NAME=FILE[,IDS]",
    )
    text_columns: Sequence[str] | None = setting(
        None, "Item columns forming the text, comma-separated (default: the dataset's)."
    )
    batch_size: int = setting(64, "Images per batch.")
    text_batch_size: int = setting(256, "Texts per batch.")
    device: str = setting("auto", "auto, cpu or cuda[:N].")
    num_workers: int | None = setting(
        None, "Image decoding worker processes (default: min(4, CPUs))."
    )
    lexical_dim: int = setting(128, "Dimension of the lexical (TF-IDF + SVD) vectors.")
    max_pixels: int = setting(
        DEFAULT_MAX_PIXELS,
        "Images of more pixels are refused unread (decompression bombs).",
    )
    seed: int = setting(0, "Seed of the lexical SVD and of random-init encoders.")

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


# -- build ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildSettings:
    """How `graphrec build` builds the knowledge graph (its options; config.json records them)."""

    item_knn: int | None = setting(
        None,
        "Item-item kNN edges per content modality (default: 10 when features exist, "
        "else 0; 0 = none).",
    )
    knn_modalities: Sequence[str] | None = setting(
        None, "Comma-separated modalities for kNN edges (default: all)."
    )
    triples: str | Path | None = setting(
        None,
        "External triples: 'head relation tail' lines (KGAT/KGCN kg.txt) or a "
        "CSV/Parquet with head,relation,tail.",
        path=True,
    )
    entity_map: str | Path | None = setting(
        None,
        "Item -> entity map for --triples ('item_id entity_id' lines, KGAT "
        "item_list.txt, or CSV item_id,entity).",
        path=True,
    )


# -- train ----------------------------------------------------------------------------------------------
# Settings that do not change the result: a resumed run may differ in them.
_RUNTIME = ("device", "progress")


@dataclass
class TrainSettings:
    """How `graphrec train` trains the GNN (its options; model.json records them)."""

    epochs: int = setting(
        60, "Maximum epochs of the selection phase (early stopping on validation)."
    )
    dim: int = setting(64, "Embedding dimension.")
    layers: int = setting(3, "Propagation layers.")
    # None: auto_lr(batch_size)
    lr: float | None = setting(
        None,
        "Adam learning rate (default: 0.005 at batch 2048, growing with the square root "
        "of the batch size, at most 0.02).",
    )
    # None: auto_batch(train interactions)
    batch_size: int | None = setting(
        None,
        "Triples (user, positive, negative) per step (default: 2048, or a power of two "
        "giving 32 to 64 steps an epoch).",
    )
    reg: float = setting(1e-4, "L2 on the batch's layer-0 embeddings (LightGCN).")
    weight_decay: float = setting(
        1e-5, "Weight decay of the modality projections and attribute tables."
    )
    cold_weight: float = setting(
        0.5, "Weight of BPR through the content path (cold-start training, DropoutNet)."
    )
    align_weight: float = setting(
        1.0, "Weight of the content -> collaborative alignment (ALDI)."
    )
    patience: int = setting(5, "Epochs without validation improvement before stopping.")
    k: int = setting(20, "Cut-off of the validation NDCG@K.")
    seed: int = setting(0, "Random seed (runs on CPU are deterministic).")
    refit: bool = setting(
        True,
        "Refit on train+valid after selection: the ranker's graph filter always, the GNN "
        "for the selected epochs when the ranker serves it.",
    )
    gnn: bool = setting(
        True,
        "--no-gnn: train no GNN; serve the closed-form blend (graph filter, content maps) "
        "alone: for CPU catalogues where the GNN's epochs do not fit.",
    )
    mode: str = setting(
        "full", "'full' graph propagation per step, or 'sampled' neighbourhoods."
    )
    fanouts: tuple[int, ...] = setting(
        (15, 10, 5), "Neighbours sampled per layer in --mode sampled."
    )
    keep_checkpoints: int = setting(
        2, "Selection-phase checkpoints kept in model/ (for --resume)."
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    progress: bool = True

    def check(self) -> None:
        """One line for the first setting out of range, before anything is read or written."""
        flag = lambda name: f"--{name.replace('_', '-')}"  # noqa: E731
        for name in ("epochs", "dim", "batch_size", "k", "keep_checkpoints"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(
                    f"{flag(name)} must be at least 1 (got {getattr(self, name)})"
                )
        # also refuses NaN, which fails every comparison
        if self.lr is not None and not (0.0 < self.lr <= 1.0):
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
        """The settings that shape the result, as model.json records them (device and progress aside)."""
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
            if k not in _RUNTIME
        }


MIN_BATCH = 2048
MAX_BATCHES_PER_EPOCH = 64
BASE_LR, MAX_LR = 5e-3, 2e-2


def auto_batch(n_train: int) -> int:
    """The default batch size for `n_train` training interactions.

    The largest power of two with at least 32 batches an epoch, and at least MIN_BATCH triples, so an epoch
    is at most MAX_BATCHES_PER_EPOCH batches once the data is large. A batch costs one propagation over the
    whole graph plus its triples (full mode), so an epoch costs a bounded number of propagations whatever the
    data's size: MovieLens latest-small (66k training pairs) keeps the former default 2048; MovieLens-1M
    (590k) gets 16,384; 20M interactions 524,288.
    """
    return max(
        MIN_BATCH,
        1 << max(0, (n_train // (MAX_BATCHES_PER_EPOCH // 2)).bit_length() - 1),
    )


def auto_lr(batch_size: int) -> float:
    """The default learning rate for a batch size.

    BASE_LR at MIN_BATCH, growing with the square root of the batch (fewer, less noisy steps take larger
    ones), at most MAX_LR. (2048, 0.005) and (16384, 0.02) scored alike on latest-small (BENCHMARKS.md,
    GNN alone).
    """
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
    the GNN's block out of the blend whatever it scores (`graphrec train --no-gnn`, which trains no GNN).
    """

    k: int = 20
    ease_lambda: float | None = setting(
        None, "The ranker's EASE regularisation (default: chosen on validation)."
    )
    ease_dim: int = setting(
        EASE_DIM,
        "Dimensions of the ranker's low-rank EASE block (the default is cut to "
        "min(users, items)); the ranker is fitted on validation before model/ is "
        "switched in.",
    )
    lowpass_dim: int = setting(
        LOWPASS_DIM,
        "Singular vectors of the ranker's ideal low-pass graph filter block (GF-CF's; "
        "0: none; the default is cut to min(users, items)).",
    )
    refit: bool = True
    max_fit_users: int = setting(
        MAX_FIT_USERS, "Users sampled per validation task of the ranker's fit."
    )
    keep_gnn: bool = setting(
        False,
        "Serve the GNN block even when the closed-form blend without it scores as well "
        "on validation (by default it is served only when it adds).",
    )
    gnn: bool = True

    def check(self, n_users: int, n_items: int) -> None:
        """One line for a setting out of range or one whose EASE block cannot fit in memory, before any work."""
        if self.keep_gnn and not self.gnn:
            raise InputError("--keep-gnn and --no-gnn contradict each other: give one")
        for flag, value in (
            ("--ease-dim", self.ease_dim),
            ("--k", self.k),
            ("--max-fit-users", self.max_fit_users),
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
        if self.ease_lambda is not None and not (
            math.isfinite(self.ease_lambda) and self.ease_lambda > 0
        ):
            raise InputError(
                f"--ease-lambda must be a positive finite number (got {self.ease_lambda})"
            )
        self._check_blocks(min(n_users, n_items), n_items)

    def _check_blocks(self, rank: int, n_items: int) -> None:
        """The EASE and low-pass blocks within the interactions' rank and the memory there is."""
        for flag, value, default in (
            ("--ease-dim", self.ease_dim, EASE_DIM),
            ("--lowpass-dim", self.lowpass_dim, LOWPASS_DIM),
        ):
            if value > max(default, rank):
                raise InputError(
                    f"{flag} {value} is more than the {rank} dimensions the interactions have "
                    f"(min of users and items): give at most {rank}"
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


# -- quickstart -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuickstartSettings:
    """What `graphrec quickstart` runs: a synthetic shop through every stage.

    The split takes SplitSettings' defaults and also holds cold users out (with context), so the
    report shows every task; training takes TrainSettings' defaults but for `epochs`.
    """

    n_users: int = setting(300, "Synthetic users.", names=("--n-users", "--users"))
    n_items: int = setting(400, "Synthetic items.", names=("--n-items", "--items"))
    n_interactions: int = setting(
        15000, "Synthetic interactions.", names=("--n-interactions", "--interactions")
    )
    seed: int = setting(0, "Seed of data, split and training.")
    epochs: int = setting(
        TrainSettings.epochs, "Maximum training epochs (early stopping on validation)."
    )
    modalities: tuple[str, ...] = setting(
        ("lexical",),
        "Encoders, comma-separated, e.g. lexical,clip_image,clip_text (CLIP needs weights).",
    )
    clip_pretrained: str | None = setting(
        None, "open_clip pretrained tag when CLIP modalities are asked for."
    )
    cold_users: float = 0.1
    cold_user_context: int = 3
    item_knn: int = 10


# -- evaluate and export --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluateSettings:
    """What `graphrec evaluate` measures and shows (its options; config.json records them)."""

    ks: tuple[int, ...] = setting(
        (10, 20, 50), "Comma-separated cut-offs K.", names=("--ks", "--k")
    )
    examples: int = setting(
        3, "Users shown with example recommendations in the report."
    )


@dataclass(frozen=True)
class ExportSettings:
    """What `graphrec export` writes besides the vectors (its options)."""

    formats: tuple[str, ...] = setting(
        ("parquet",),
        "Comma-separated: parquet, npy, faiss (each holds its own copy of the item "
        "vectors: name only those a reader needs).",
        names=("--format",),
    )
    pseudonymize: str | None = setting(
        None,
        "Secret salt: user ids become HMAC-SHA256 pseudonyms (the environment variable "
        "keeps it out of the process list).",
        envvar="GRAPHREC_SALT",
    )
    private: bool = setting(
        False,
        "User vectors from the users' interactions alone, without the paths that carry "
        "their attributes (docs/export.md, 'What a user vector reveals').",
    )
