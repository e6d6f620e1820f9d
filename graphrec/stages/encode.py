"""The encode stage: content vectors per item and modality, so an item with no interactions still has a place.

Modalities: clip_image, clip_text (open_clip), st_text (sentence-transformers), lexical (TF-IDF + SVD),
precomputed_<name> (a user's file). Each is written with graphrec.core.feature_store.save_features; WS/features/ holds
exactly the modalities of the last run, plus logs/encode.json (counts, skipped images and why).

Cache: a modality's JSON keeps the encoder identity and one content hash per item (sha256 of the text, or of
the image file's bytes). A re-run with the same identity copies the vectors of items whose hash is
unchanged and encodes only new or changed items, so the result equals a fresh run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graphrec.core.device import resolve_device
from graphrec.core.errors import InputError
from graphrec.core.feature_store import (
    Features,
    check_finite,
    load_features,
    save_features,
)
from graphrec.core.io import file_sha256, read_json, read_tensors, write_json
from graphrec.core.settings import EncodeSettings
from graphrec.core.workspace import Workspace, writes
from graphrec.data.dataset import Dataset
from graphrec.model.encoders.clip import ClipEncoder, load_clip
from graphrec.model.encoders.images import hash_files, image_paths
from graphrec.model.encoders.lexical import lexical_features, lexical_fold_in
from graphrec.model.encoders.precomputed import parse_spec, read_precomputed
from graphrec.model.encoders.sentence import load_sentence_model

NEURAL = ("clip_image", "clip_text", "st_text")
# in a sub-folder: features/*.json are the modalities' own files
LOG = Path("logs") / "encode.json"
ALIASES = {
    "image": "clip_image",
    "text": "clip_text",
    "st": "st_text",
    "sentence": "st_text",
    "tfidf": "lexical",
}


@dataclass
class ModalityReport:
    modality: str
    dim: int
    present: int  # items with content (encoded now, reused, or listed as bad)
    missing: int  # items without this kind of content: mask 0
    encoded: int = 0
    reused: int = 0
    bad: list[dict[str, str]] = field(default_factory=list)
    random_weights: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def items_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EncodeResult:
    path: Path
    reports: dict[str, ModalityReport]
    device: str


def resolve_modalities(
    modalities: Sequence[str] | None,
    has_images: bool,
    precomputed: Sequence[str],
    has_text: bool = True,
) -> list[str]:
    """Full modality names. The default is clip_image (with an image column), clip_text and lexical (with text);
    with --precomputed vectors it is those alone (a user who brings vectors need not fetch CLIP weights;
    `--modalities lexical,precomputed_NAME` combines them)."""
    pre = [f"precomputed_{n}" for n in precomputed]
    if not modalities:
        if pre:
            return pre
        return (["clip_image"] if has_images else []) + (
            ["clip_text", "lexical"] if has_text else []
        )
    names = []
    for m in modalities:
        m = ALIASES.get(m.strip().lower(), m.strip().lower())
        if m not in NEURAL + ("lexical",) and m not in pre:
            raise InputError(
                f"--modalities: unknown modality {m!r} (known: image, text, st_text, lexical, "
                "and precomputed_<name> for each --precomputed NAME=FILE)"
            )
        if m == "clip_image" and not has_images:
            raise InputError(
                "--modalities clip_image: the dataset has no image column (import with --image-column)"
            )
        if m in ("clip_text", "st_text", "lexical") and not has_text:
            raise InputError(
                f"--modalities {m}: the dataset has no text columns (import with --text-columns "
                "or pass --text-columns)"
            )
        names.append(m)
    return list(dict.fromkeys(names + pre))


def item_texts(ds: Dataset, columns: Sequence[str] | None = None) -> np.ndarray:
    """One text per item: the text columns' non-empty values joined by '. ', multi-value '|' shown as ', '."""
    cols = list(columns) if columns else list(ds.schema.text_columns)
    for c in cols:
        if c not in ds.items.columns:
            raise InputError(
                "text column not in the items table",
                file="dataset/items.parquet",
                column=c,
            )
    out = pd.Series([""] * ds.n_items, dtype=object)
    for c in cols:
        part = (
            ds.items[c]
            .fillna("")
            .astype(str)
            .str.replace(ds.schema.sep, ", ", regex=False)
            .str.strip()
        )
        part = part.astype(object).reset_index(drop=True)
        both = (out != "") & (part != "")
        out = (out + np.where(both, ". ", "") + part).astype(object)
    return out.to_numpy(dtype=object)


@writes
def run_encode(
    workspace: Workspace | str | Path,
    modalities: Sequence[str] | None = None,
    settings: EncodeSettings | None = None,
    *,
    progress: bool = True,
    **overrides: Any,
) -> EncodeResult:
    """Encode every item's content into WS/features/: the `graphrec encode` stage.

    One set of vectors per modality (see the module doc); WS/features/ then holds exactly the
    modalities of this run, plus logs/encode.json. An item whose content is unchanged since the last
    run with the same encoder reuses its vectors (the content-hash cache). Runs under the workspace
    lock; the settings are checked before any encoding, and the features are written in one switch.

    Args:
        workspace: The workspace (or its folder); its dataset/ is encoded.
        modalities: The modalities to encode: clip_image (alias image), clip_text (text), st_text
            (st, sentence), lexical (tfidf), precomputed_<name>. None: clip_image (with an image
            column), clip_text and lexical (with text); with precomputed vectors, those alone.
        settings: The `EncodeSettings`; None: the defaults.
        progress: Show progress bars.
        **overrides: `EncodeSettings` fields as keywords, applied over `settings` (`precomputed`
            holds NAME=FILE[,IDS]).

    Returns:
        The `EncodeResult`: the features folder, each modality's report (dimensions, items encoded,
        reused and bad, notes) and the device used.

    Raises:
        InputError: On bad input: an unknown modality or one the dataset has no content for, a
            setting out of range, an unreadable precomputed file, or vectors that are not finite.
        TypeError: When an override names no `EncodeSettings` field.

    Example::

        from graphrec.stages.encode import run_encode

        result = run_encode("ws", ["image", "lexical"], batch_size=128, device="cuda")
    """
    chosen = replace(settings or EncodeSettings(), **overrides)
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    ids_file = ws.stage_dir("dataset") / "ids.json"
    item_ids: list[str] = read_json(ids_file)["items"]
    _check_encode_settings(chosen)
    specs = {
        name: (path, ids) for name, path, ids in map(parse_spec, chosen.precomputed)
    }
    names = resolve_modalities(
        modalities,
        bool(ds.schema.image_column),
        list(specs),
        bool(chosen.text_columns or ds.schema.text_columns),
    )
    run = _EncodeRun(chosen, ds, item_ids, specs, ws.stage_dir("features"), progress)
    encoded = {name: run.encode(name) for name in names}
    _write_features(ws, encoded, run.device)
    ws.record(
        "features",
        chosen.record(names, run.device),
        inputs={"dataset_ids_sha256": file_sha256(ids_file), "items": len(item_ids)},
    )
    reports = {name: report for name, (_, report) in encoded.items()}
    return EncodeResult(ws.stage_dir("features"), reports, run.device)


def _check_encode_settings(settings: EncodeSettings) -> None:
    """`check_settings` over the fields of `settings` that it checks."""
    check_settings(
        batch_size=settings.batch_size,
        text_batch_size=settings.text_batch_size,
        num_workers=settings.num_workers,
        lexical_dim=settings.lexical_dim,
        max_pixels=settings.max_pixels,
        seed=settings.seed,
        device=settings.device,
    )


def _write_features(
    ws: Workspace,
    encoded: dict[str, tuple[Features, ModalityReport]],
    device: str,
) -> None:
    """Replace WS/features/ with these modalities and the run's log, in one switch."""
    with ws.new_stage("features") as tmp:
        for features, _ in encoded.values():
            save_features(tmp, features)
        write_json(
            tmp / LOG,
            {
                "device": device,
                "modalities": {
                    name: {
                        **asdict(report),
                        "items_per_s": round(report.items_per_s, 1),
                    }
                    for name, (_, report) in encoded.items()
                },
            },
        )


def _text_hashes(texts: np.ndarray) -> list[str]:
    """The cache's content hash of each text: sha256 of its UTF-8 bytes, "" for an item without text."""
    return [hashlib.sha256(t.encode("utf-8")).hexdigest() if t else "" for t in texts]


class _EncodeRun:
    """One `run_encode` call's inputs, and its encoders once loaded (CLIP serves both of its modalities)."""

    def __init__(
        self,
        settings: EncodeSettings,
        ds: Dataset,
        item_ids: list[str],
        specs: dict[str, tuple[Path, Any]],
        features_dir: Path,
        progress: bool,
    ):
        self.settings, self.ds, self.item_ids = settings, ds, item_ids
        self.specs, self.progress = specs, progress
        self.texts = item_texts(ds, settings.text_columns)
        self.previous = _previous(features_dir)  # the cache: the last run's modalities
        self.text_hashes = _text_hashes(self.texts)
        self.clip: ClipEncoder | None = None
        self.device = "cpu"  # lexical and precomputed features are numpy work; a neural encoder says its own

    def encode(self, name: str) -> tuple[Features, ModalityReport]:
        """One modality's features and report, checked finite before anything is written."""
        t0 = time.perf_counter()
        features, report = self._features(name)
        if name == "clip_image" and report.missing:
            report.notes.append(
                f"clip_image: {report.missing} of {len(self.item_ids)} items have no image (mask 0)"
            )
        lexical_dim = self.settings.lexical_dim
        if name == "lexical" and report.dim < lexical_dim:  # said, not silently clamped
            report.notes.append(
                f"lexical: {report.dim} dimensions, fewer than --lexical-dim {lexical_dim}: there "
                f"are no more than items with words or distinct words ({features.meta.get('vocabulary')})"
            )
        report.seconds = time.perf_counter() - t0
        features.meta = {**summary(features.meta["identity"]), **features.meta}
        features.meta.update(
            encoded=report.encoded,
            reused=report.reused,
            missing=report.missing,
            bad_count=len(report.bad),
            bad=report.bad,
        )
        # before anything is written: features/ keeps the last good run
        _check_finite(features)
        return features, report

    def _features(self, name: str) -> tuple[Features, ModalityReport]:
        """One modality's features and report from its encoder (cached rows reused where the encoder allows)."""
        if name == "clip_text":
            return self._clip_text()
        if name == "clip_image":
            return self._clip_image()
        if name == "st_text":
            return self._st_text()
        if name == "lexical":
            settings = self.settings
            return _lexical(
                self.item_ids,
                self.texts,
                self.text_hashes,
                settings.lexical_dim,
                settings.seed,
                self.previous.get(name),
            )
        return self._precomputed(name)

    def _clip_text(self) -> tuple[Features, ModalityReport]:
        """clip_text: the CLIP text tower over each item's text."""
        clip = self._clip()
        return _cached(
            "clip_text",
            self.item_ids,
            self.text_hashes,
            clip.text_identity(),
            self.previous.get("clip_text"),
            clip.dim,
            _text_encoder(
                clip.encode_texts,
                self.texts,
                self.settings.text_batch_size,
                self.progress,
            ),
        )

    def _clip_image(self) -> tuple[Features, ModalityReport]:
        """clip_image: the CLIP image tower over each item's image file (bad files listed with the reason)."""
        settings, schema = self.settings, self.ds.schema
        clip = self._clip()
        paths = image_paths(
            self.ds.items[schema.image_column].fillna("").astype(str).to_numpy(),
            schema.images_dir,
        )
        encode = _image_encoder(
            clip,
            paths,
            settings.batch_size,
            settings.num_workers,
            settings.max_pixels,
            self.progress,
        )
        return _cached(
            "clip_image",
            self.item_ids,
            hash_files(paths),
            clip.image_identity(settings.max_pixels),
            self.previous.get("clip_image"),
            clip.dim,
            encode,
            {i: path for i, path in enumerate(paths) if path},
        )

    def _st_text(self) -> tuple[Features, ModalityReport]:
        """st_text: a sentence-transformers model over each item's text."""
        settings = self.settings
        sentence_model = load_sentence_model(settings.st_model, settings.device)
        self.device = str(sentence_model.device)
        encode = _text_encoder(
            sentence_model.encode_texts,
            self.texts,
            settings.text_batch_size,
            self.progress,
        )
        return _cached(
            "st_text",
            self.item_ids,
            self.text_hashes,
            sentence_model.identity,
            self.previous.get("st_text"),
            sentence_model.dim,
            encode,
        )

    def _clip(self) -> ClipEncoder:
        """The CLIP encoder, loaded on first use (both CLIP modalities share it)."""
        if self.clip is None:
            self.clip = load_clip(
                self.settings.clip_model,
                self.settings.clip_pretrained,
                self.settings.clip_checkpoint,
                self.settings.device,
                seed=self.settings.seed,
            )
            self.device = str(self.clip.device)
        return self.clip

    def _precomputed(self, name: str) -> tuple[Features, ModalityReport]:
        """precomputed_<name>: the user's vector file, in dataset order (ids it does not know are noted)."""
        path, ids = self.specs[name.removeprefix("precomputed_")]
        values, mask, file_info = read_precomputed(path, self.item_ids, ids)
        features = Features(
            name,
            values,
            mask,
            {
                "identity": {"encoder": "precomputed", **file_info},
                "random_weights": False,
                "item_ids": self.item_ids,
            },
        )
        report = ModalityReport(
            name,
            features.dim,
            int(mask.sum()),
            int((~mask).sum()),
            encoded=int(mask.sum()),
        )
        if file_info["unknown_ids"]:
            report.notes.append(
                f"{file_info['unknown_ids']} ids in {Path(path).name} are not dataset items "
                f"(e.g. {', '.join(file_info['unknown_id_examples'][:5])})"
            )
        return features, report


def check_settings(
    *,
    batch_size: int,
    text_batch_size: int,
    num_workers: int | None,
    lexical_dim: int,
    max_pixels: int,
    seed: int,
    device: str,
) -> None:
    """Every setting checked before any encoder loads or any file is read, so a typo costs nothing and names
    its flag (a negative --lexical-dim would otherwise reach numpy's slicing as a traceback, and 0 would be
    reported as "no item has any text")."""
    for flag, value in (
        ("--batch-size", batch_size),
        ("--text-batch-size", text_batch_size),
        ("--lexical-dim", lexical_dim),
        ("max_pixels", max_pixels),
    ):
        if value < 1:
            raise InputError(f"{flag} must be at least 1 (got {value})")
    limit = max_workers()
    if num_workers is not None and not 0 <= num_workers <= limit:
        raise InputError(
            f"--num-workers must be from 0 to {limit} (2 per CPU here; got {num_workers})"
        )
    if seed < 0:
        raise InputError(f"seed must be 0 or more (got {seed})")
    resolve_device(device)  # a misspelt --device stops here, whichever encoders run


def max_workers() -> int:
    """Image-decoding processes beyond two per CPU only add memory and start-up time (each is a full process)."""
    return 2 * (os.cpu_count() or 1)


def _workers_here(recorded: int | None) -> int | None:
    """A recorded --num-workers cut to this machine's limit: an update on a smaller machine than the encode's
    still runs (the worker count changes speed, never the vectors)."""
    return None if recorded is None else min(int(recorded), max_workers())


def _check_finite(f: Features) -> None:
    """An encoder that yields NaN or infinity (damaged weights, an overflow under fp16) stops the run with one line
    naming the modality and its weights, before any modality is written."""
    check_finite(
        f.values,
        f"modality {f.modality}: the encoder ({f.meta.get('weights', 'no weights')}) produced",
        f.meta["item_ids"],
        "nothing was written: check the model and its weights",
    )


def summary(identity: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys a report shows: which model, which weights (tag, checkpoint, random or none)."""
    if identity.get("random_weights"):
        weights = f"RANDOM (seed {identity.get('seed', 0)})"
    elif identity.get("checkpoint"):
        weights = f"checkpoint {identity['checkpoint']}"
    elif identity.get("pretrained"):
        weights = f"pretrained {identity['pretrained']}"
    elif identity.get("encoder") == "sentence-transformers":
        sha = identity.get("weights_sha256")
        weights = identity["model"] + (f" (sha256 {sha[:12]})" if sha else "")
    elif identity.get("encoder") == "precomputed":
        weights = f"file {identity['file']}"
    else:
        weights = "none (no learned weights)"
    return {
        "encoder": identity.get("encoder"),
        "model": identity.get("model", identity.get("method")),
        "pretrained": identity.get("pretrained"),
        "checkpoint": identity.get("checkpoint"),
        "checkpoint_sha256": identity.get("checkpoint_sha256"),
        "weights": weights,
    }


# -- cache --------------------------------------------------------------------------------------------
# vectors, ok, bad (position in the batch, reason)
Encoded = tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]


def _cached(
    name: str,
    item_ids: list[str],
    hashes: list[str],
    identity: dict[str, Any],
    prev: dict | None,
    dim: int,
    encode: Callable[[np.ndarray], Encoded],
    files: dict[int, str] | None = None,
) -> tuple[Features, ModalityReport]:
    """Reuse rows of `prev` whose identity and content hash match; encode the rest that have content."""
    # compare as it will read back from JSON
    identity = json.loads(json.dumps(identity, default=str))
    has_content = np.asarray(hashes, dtype=object) != ""
    rows = _reused_rows(item_ids, hashes, has_content, identity, prev, dim)
    todo = np.flatnonzero(has_content & ~rows.reused)
    if len(todo):
        vectors, ok, new_bad = encode(todo)
        rows.values[todo[ok]] = vectors[ok]
        rows.mask[todo[ok]] = True
        rows.bad.update({int(todo[pos]): reason for pos, reason in new_bad})
    random_weights = bool(identity.get("random_weights", False))
    meta = {
        "identity": identity,
        "random_weights": random_weights,
        "item_ids": item_ids,
        "content_hashes": hashes,
    }
    report = ModalityReport(
        name,
        dim,
        int(has_content.sum()),
        int((~has_content).sum()),
        encoded=len(todo),
        reused=int(rows.reused.sum()),
        bad=_bad_list(item_ids, rows.bad, files),
        random_weights=random_weights,
    )
    return Features(name, rows.values, rows.mask, meta), report


@dataclass
class _Rows:
    """A modality's rows as the cache leaves them: vectors, mask, which were copied on, and bad ones' reasons."""

    values: np.ndarray  # [n, dim] float32, zeros where not (yet) encoded
    mask: np.ndarray  # [n] bool: the row holds a vector
    reused: np.ndarray  # [n] bool: copied from the last run
    bad: dict[int, str]  # row -> why its content could not be encoded


def _reused_rows(
    item_ids: list[str],
    hashes: list[str],
    has_content: np.ndarray,
    identity: dict[str, Any],
    prev: dict | None,
    dim: int,
) -> _Rows:
    """The rows of `prev` that can be copied on (same encoder identity and dimension, same content hash), with
    the reasons of those that were bad then (bad content stays bad: it is not retried)."""
    n = len(item_ids)
    rows = _Rows(
        np.zeros((n, dim), dtype=np.float32),
        np.zeros(n, dtype=bool),
        np.zeros(n, dtype=bool),
        {},
    )
    if (
        prev is None
        or prev["meta"].get("identity") != identity
        or prev["values"].shape[1] != dim
    ):
        return rows
    pos = pd.Index(prev["meta"]["item_ids"]).get_indexer(pd.Index(item_ids))
    old_hashes = np.asarray(prev["meta"]["content_hashes"], dtype=object)
    reused = has_content & (pos >= 0)
    reused[reused] = old_hashes[pos[reused]] == np.asarray(hashes, dtype=object)[reused]
    rows.reused = reused
    rows.values[reused] = prev["values"][pos[reused]]
    rows.mask[reused] = prev["mask"][pos[reused]]
    old_bad = {b["item_id"]: b["reason"] for b in prev["meta"].get("bad", [])}
    rows.bad.update(
        {
            int(i): old_bad[item_ids[i]]
            for i in np.flatnonzero(reused & ~rows.mask)
            if item_ids[i] in old_bad
        }
    )
    return rows


def _bad_list(
    item_ids: list[str], bad: dict[int, str], files: dict[int, str] | None
) -> list[dict[str, str]]:
    """The bad rows as the report and the modality's JSON list them: in item order, with their file if any."""
    return [
        {
            "item_id": item_ids[i],
            **({"file": files[i]} if files else {}),
            "reason": bad[i],
        }
        for i in sorted(bad)
    ]


def _text_encoder(
    encode_texts: Callable[[list[str], int, bool], np.ndarray],
    texts: np.ndarray,
    batch_size: int,
    progress: bool,
) -> Callable[[np.ndarray], Encoded]:
    """`_cached`'s encode for a text modality: `encode_texts` (an encoder's) over the texts of the rows asked."""

    def encode(idx: np.ndarray) -> Encoded:
        return (
            encode_texts(texts[idx].tolist(), batch_size, progress),
            np.ones(len(idx), dtype=bool),
            [],
        )

    return encode


def _image_encoder(
    clip: ClipEncoder,
    paths: list[str | None],
    batch_size: int,
    num_workers: int | None,
    max_pixels: int,
    progress: bool,
) -> Callable[[np.ndarray], Encoded]:
    """`_cached`'s encode for clip_image: the image files of the rows asked."""

    def encode(idx: np.ndarray) -> Encoded:
        return clip.encode_images(
            [paths[i] for i in idx], batch_size, num_workers, max_pixels, progress
        )

    return encode


_LEXICAL_META = (
    "identity",
    "random_weights",
    "item_ids",
    "content_hashes",
    "vocabulary",
    "explained",
)  # what a lexical modality's JSON keeps of its own (the rest is the run's summary)


def _lexical_identity(hashes: list[str], dim: int, seed: int) -> dict[str, Any]:
    """The lexical modality's identity: its settings and the whole corpus (any changed text changes the basis)."""
    return {
        "encoder": "lexical",
        "method": "tfidf-sublinear+svd",
        "dim": dim,
        "min_df": 1,
        "seed": seed,
        "corpus_sha256": hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
    }


def _lexical(
    item_ids: list[str],
    texts: np.ndarray,
    hashes: list[str],
    dim: int,
    seed: int,
    prev: dict | None,
) -> tuple[Features, ModalityReport]:
    """Recomputed as a whole (its basis depends on every text) unless no text and no setting changed."""
    identity = _lexical_identity(hashes, dim, seed)
    has_text = np.asarray(hashes, dtype=object) != ""
    with_text, without_text = int(has_text.sum()), int((~has_text).sum())
    if (
        prev is not None
        and prev["meta"].get("identity") == identity
        and prev["meta"].get("item_ids") == item_ids
    ):
        meta = {key: prev["meta"][key] for key in _LEXICAL_META}
        features = Features("lexical", prev["values"], prev["mask"], meta)
        return features, ModalityReport(
            "lexical", features.dim, with_text, without_text, reused=with_text
        )
    values, mask, fitted = lexical_features(texts.tolist(), dim=dim, seed=seed)
    if values.shape[1] == 0:
        raise InputError(
            "modality lexical: no item has any text (check the text columns)"
        )
    meta = {
        "identity": identity,
        "random_weights": False,
        "item_ids": item_ids,
        "content_hashes": hashes,
        "vocabulary": fitted["vocabulary"],
        "explained": fitted["explained"],
    }
    return Features("lexical", values, mask, meta), ModalityReport(
        "lexical", values.shape[1], with_text, without_text, encoded=with_text
    )


def _previous(directory: Path) -> dict[str, dict]:
    """The last run's modalities (values, mask, meta) for the cache; damaged files just are not reused."""
    out: dict[str, dict] = {}
    if not directory.is_dir():
        return out
    for p in directory.glob("*.safetensors"):
        try:
            t = read_tensors(p)
            meta = read_json(p.with_suffix(".json"))
            if _reusable(t, meta):
                out[p.stem] = {
                    "values": t["values"],
                    "mask": t["mask"].astype(bool),
                    "meta": meta,
                }
        except (InputError, KeyError, TypeError):
            continue
    return out


def _reusable(t: dict[str, np.ndarray], meta: Any) -> bool:
    """Rows can be copied on only from a well-formed file of finite vectors: a file holding NaN (planted, or
    written before features were checked) is re-encoded, never carried into the next run."""
    values, mask = t["values"], t["mask"]
    return (
        isinstance(meta, dict)
        and values.ndim == 2
        and mask.ndim == 1
        and values.dtype.kind == "f"
        and len(meta.get("item_ids", []))
        == len(meta.get("content_hashes", []))
        == len(mask)
        == len(values)
        and bool(np.isfinite(values).all())
    )


def encode_new_items(
    ws: Workspace,
    sws: Workspace,
    old: Dataset,
    grown: Dataset,
    progress: bool,
    notes: list[str],
) -> dict[str, int]:
    """The encode stage's own update step: encode the items of `grown` past `old` into the staged workspace
    `sws` (whose features/ starts as a copy of `ws`'s) with the settings `ws` recorded. The neural modalities
    go through run_encode's content-hash cache; the lexical modality keeps its trained basis and folds the new
    texts into it (a re-fit would change every item's vector). Returns modality -> items encoded."""
    record = ws.stage_record("features")
    rec = record.settings if record else None
    if rec is None:
        raise InputError(
            "features/ has no recorded encode settings: re-run `graphrec encode`",
            file=ws.path,
        )
    names = list(rec["modalities"])
    neural = [m for m in names if m != "lexical"]
    encoded: dict[str, int] = {}
    if neural:
        encoded.update(_encode_neural(sws, neural, rec, progress, notes))
    if "lexical" in names:
        encoded["lexical"] = _fold_in_lexical(ws, sws, old, grown, rec["text_columns"])
    log_path = sws.stage_dir("features") / "encode_log.json"
    write_json(
        log_path,
        {**(read_json(log_path) if log_path.exists() else {}), "update": encoded},
    )
    sws.record(
        "features",
        rec,
        inputs={
            "dataset_ids_sha256": file_sha256(sws.stage_dir("dataset") / "ids.json"),
            "items": grown.n_items,
        },
    )
    return encoded


def _encode_neural(
    sws: Workspace,
    modalities: list[str],
    rec: dict[str, Any],
    progress: bool,
    notes: list[str],
) -> dict[str, int]:
    """run_encode of the staged workspace with the recorded settings (its cache re-encodes the new items alone);
    modality -> items encoded, the reports' notes added to `notes`."""
    recorded = EncodeSettings.from_record(rec)
    result = run_encode(
        sws,
        modalities,
        replace(recorded, num_workers=_workers_here(recorded.num_workers)),
        progress=progress,
    )
    for report in result.reports.values():
        notes += report.notes
    return {name: report.encoded for name, report in result.reports.items()}


def _fold_in_lexical(
    ws: Workspace,
    sws: Workspace,
    old: Dataset,
    grown: Dataset,
    text_columns: list[str] | None,
) -> int:
    """Stage the lexical modality grown by the new items' texts folded into its basis; the items folded in.
    The model was trained on the old basis: old vectors stay as they are."""
    prev = load_features(ws, ["lexical"])["lexical"]
    n_old = old.n_items
    basis_items = int(prev.meta.get("basis_items", n_old))
    texts = item_texts(grown, text_columns)
    values, mask = lexical_fold_in(
        texts[:basis_items].tolist(),
        texts[n_old:].tolist(),
        dim=int(prev.meta["identity"]["dim"]),
        seed=int(prev.meta["identity"]["seed"]),
    )
    if values.shape[1] != prev.dim:
        raise InputError(
            "lexical features do not match their recorded basis: re-run `graphrec encode`",
            file=ws.stage_dir("features") / "lexical.json",
        )
    hashes = _text_hashes(texts[n_old:])
    save_features(
        sws.stage_dir("features"),
        Features(
            "lexical",
            np.concatenate([prev.values, values]),
            np.concatenate([prev.mask, mask]),
            _folded_meta(prev, grown, hashes, basis_items),
        ),
    )
    return len(hashes)


def _folded_meta(
    prev: Features, grown: Dataset, hashes: list[str], basis_items: int
) -> dict[str, Any]:
    """The lexical modality's meta after a fold-in: every item's id and hash, the basis' size, how many were
    folded in so far (modality and dim are save_features' own keys)."""
    meta = {
        **prev.meta,
        "item_ids": grown.item_ids.tolist(),
        "content_hashes": list(prev.meta["content_hashes"]) + hashes,
        "basis_items": basis_items,
        "folded_in": int(prev.meta.get("folded_in", 0)) + len(hashes),
    }
    return {k: v for k, v in meta.items() if k not in ("modality", "dim")}
