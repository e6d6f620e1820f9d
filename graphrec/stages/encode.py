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
LOG = (
    Path("logs") / "encode.json"
)  # in a sub-folder: features/*.json are the modalities' own files
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
    show_progress: bool = True,
    **overrides: Any,
) -> EncodeResult:
    """Encode every item's content into WS/features/ (see module doc). settings / overrides: `EncodeSettings`, or
    its fields as keywords (`precomputed` holds NAME=FILE[,IDS])."""
    s = replace(settings or EncodeSettings(), **overrides)
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    ids_file = ws.stage_dir("dataset") / "ids.json"
    item_ids: list[str] = read_json(ids_file)["items"]
    check_settings(
        batch_size=s.batch_size,
        text_batch_size=s.text_batch_size,
        num_workers=s.num_workers,
        lexical_dim=s.lexical_dim,
        max_pixels=s.max_pixels,
        seed=s.seed,
        device=s.device,
    )
    specs = {name: (path, ids) for name, path, ids in map(parse_spec, s.precomputed)}
    names = resolve_modalities(
        modalities,
        bool(ds.schema.image_column),
        list(specs),
        bool(s.text_columns or ds.schema.text_columns),
    )
    texts = item_texts(ds, s.text_columns)
    run = _EncodeRun(
        s,
        ds,
        item_ids,
        specs,
        _previous(ws.stage_dir("features")),
        texts,
        [hashlib.sha256(t.encode("utf-8")).hexdigest() if t else "" for t in texts],
        show_progress,
    )
    feats: dict[str, Features] = {}
    reports: dict[str, ModalityReport] = {}
    for name in names:
        feats[name], reports[name] = run.encode(name)
    target = ws.stage_dir("features")
    with ws.new_stage("features") as tmp:
        for f in feats.values():
            save_features(tmp, f)
        write_json(
            tmp / LOG,
            {
                "device": run.device,
                "modalities": {
                    k: {**asdict(r), "items_per_s": round(r.items_per_s, 1)}
                    for k, r in reports.items()
                },
            },
        )
    ws.record(
        "features",
        s.record(names, run.device),
        inputs={"dataset_ids_sha256": file_sha256(ids_file), "items": len(item_ids)},
    )
    return EncodeResult(target, reports, run.device)


class _EncodeRun:
    """One `run_encode` call's inputs, and its encoders once loaded (CLIP serves both of its modalities)."""

    def __init__(
        self,
        s: EncodeSettings,
        ds: Dataset,
        item_ids: list[str],
        specs: dict[str, tuple[Path, Any]],
        previous: dict[str, dict],
        texts: np.ndarray,
        text_hashes: list[str],
        show_progress: bool,
    ):
        self.s, self.ds, self.item_ids, self.specs, self.previous = (
            s,
            ds,
            item_ids,
            specs,
            previous,
        )
        self.texts, self.text_hashes, self.show_progress = (
            texts,
            text_hashes,
            show_progress,
        )
        self.clip: ClipEncoder | None = None
        self.device = "cpu"  # lexical and precomputed features are numpy work; a neural encoder says its own

    def encode(self, name: str) -> tuple[Features, ModalityReport]:
        """One modality's features and report, checked finite before anything is written."""
        t0 = time.perf_counter()
        f, rep = self._features(name)
        if name == "clip_image" and rep.missing:
            rep.notes.append(
                f"clip_image: {rep.missing} of {len(self.item_ids)} items have no image (mask 0)"
            )
        if (
            name == "lexical" and rep.dim < self.s.lexical_dim
        ):  # said, not silently clamped
            rep.notes.append(
                f"lexical: {rep.dim} dimensions, fewer than --lexical-dim {self.s.lexical_dim}: there "
                f"are no more than items with words or distinct words ({f.meta.get('vocabulary')})"
            )
        rep.seconds = time.perf_counter() - t0
        f.meta = {**summary(f.meta["identity"]), **f.meta}
        f.meta.update(
            encoded=rep.encoded,
            reused=rep.reused,
            missing=rep.missing,
            bad_count=len(rep.bad),
            bad=rep.bad,
        )
        _check_finite(
            f
        )  # before anything is written: features/ keeps the last good run
        return f, rep

    def _features(self, name: str) -> tuple[Features, ModalityReport]:
        s, prev = self.s, self.previous.get(name)
        if name in ("clip_image", "clip_text"):
            clip = self._clip()
            if name == "clip_text":
                return _cached(
                    name,
                    self.item_ids,
                    self.text_hashes,
                    clip.text_identity(),
                    prev,
                    clip.dim,
                    _text_encoder(
                        clip.encode_texts,
                        self.texts,
                        s.text_batch_size,
                        self.show_progress,
                    ),
                )
            paths = image_paths(
                self.ds.items[self.ds.schema.image_column]
                .fillna("")
                .astype(str)
                .to_numpy(),
                self.ds.schema.images_dir,
            )
            return _cached(
                name,
                self.item_ids,
                hash_files(paths),
                clip.image_identity(s.max_pixels),
                prev,
                clip.dim,
                _image_encoder(
                    clip,
                    paths,
                    s.batch_size,
                    s.num_workers,
                    s.max_pixels,
                    self.show_progress,
                ),
                {i: p for i, p in enumerate(paths) if p},
            )
        if name == "st_text":
            st = load_sentence_model(s.st_model, s.device)
            self.device = str(st.device)
            return _cached(
                name,
                self.item_ids,
                self.text_hashes,
                st.identity,
                prev,
                st.dim,
                _text_encoder(
                    st.encode_texts, self.texts, s.text_batch_size, self.show_progress
                ),
            )
        if name == "lexical":
            return _lexical(
                self.item_ids, self.texts, self.text_hashes, s.lexical_dim, s.seed, prev
            )
        return self._precomputed(name)

    def _clip(self) -> ClipEncoder:
        if self.clip is None:
            self.clip = load_clip(
                self.s.clip_model,
                self.s.clip_pretrained,
                self.s.clip_checkpoint,
                self.s.device,
                seed=self.s.seed,
            )
            self.device = str(self.clip.device)
        return self.clip

    def _precomputed(self, name: str) -> tuple[Features, ModalityReport]:
        path, ids = self.specs[name.removeprefix("precomputed_")]
        values, mask, info = read_precomputed(path, self.item_ids, ids)
        f = Features(
            name,
            values,
            mask,
            {
                "identity": {"encoder": "precomputed", **info},
                "random_weights": False,
                "item_ids": self.item_ids,
            },
        )
        rep = ModalityReport(
            name, f.dim, int(mask.sum()), int((~mask).sum()), encoded=int(mask.sum())
        )
        if info["unknown_ids"]:
            rep.notes.append(
                f"{info['unknown_ids']} ids in {Path(path).name} are not dataset items "
                f"(e.g. {', '.join(info['unknown_id_examples'][:5])})"
            )
        return f, rep


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
Encoded = tuple[
    np.ndarray, np.ndarray, list[tuple[int, str]]
]  # vectors, ok, bad (position in the batch, reason)


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
    identity = json.loads(
        json.dumps(identity, default=str)
    )  # compare as it will read back from JSON
    n = len(item_ids)
    h = np.asarray(hashes, dtype=object)
    has = h != ""
    values = np.zeros((n, dim), dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    bad: dict[int, str] = {}
    reused = np.zeros(n, dtype=bool)
    if (
        prev is not None
        and prev["meta"].get("identity") == identity
        and prev["values"].shape[1] == dim
    ):
        pos = pd.Index(prev["meta"]["item_ids"]).get_indexer(pd.Index(item_ids))
        old_h = np.asarray(prev["meta"]["content_hashes"], dtype=object)
        reused = has & (pos >= 0)
        reused[reused] = old_h[pos[reused]] == h[reused]
        values[reused] = prev["values"][pos[reused]]
        mask[reused] = prev["mask"][pos[reused]]
        old_bad = {b["item_id"]: b["reason"] for b in prev["meta"].get("bad", [])}
        bad.update(
            {
                int(i): old_bad[item_ids[i]]
                for i in np.flatnonzero(reused & ~mask)
                if item_ids[i] in old_bad
            }
        )
    todo = np.flatnonzero(has & ~reused)
    if len(todo):
        vec, ok, new_bad = encode(todo)
        values[todo[ok]] = vec[ok]
        mask[todo[ok]] = True
        bad.update({int(todo[p]): r for p, r in new_bad})
    bad_list = [
        {
            "item_id": item_ids[i],
            **({"file": files[i]} if files else {}),
            "reason": bad[i],
        }
        for i in sorted(bad)
    ]
    random_weights = bool(identity.get("random_weights", False))
    meta = {
        "identity": identity,
        "random_weights": random_weights,
        "item_ids": item_ids,
        "content_hashes": hashes,
    }
    rep = ModalityReport(
        name,
        dim,
        int(has.sum()),
        int((~has).sum()),
        encoded=len(todo),
        reused=int(reused.sum()),
        bad=bad_list,
        random_weights=random_weights,
    )
    return Features(name, values, mask, meta), rep


def _text_encoder(
    encode_texts: Callable[[list[str], int, bool], np.ndarray],
    texts: np.ndarray,
    batch_size: int,
    show_progress: bool,
) -> Callable[[np.ndarray], Encoded]:
    """`_cached`'s encode for a text modality: `encode_texts` (an encoder's) over the texts of the rows asked."""

    def encode(idx: np.ndarray) -> Encoded:
        return (
            encode_texts(texts[idx].tolist(), batch_size, show_progress),
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
    show_progress: bool,
) -> Callable[[np.ndarray], Encoded]:
    """`_cached`'s encode for clip_image: the image files of the rows asked."""

    def encode(idx: np.ndarray) -> Encoded:
        return clip.encode_images(
            [paths[i] for i in idx], batch_size, num_workers, max_pixels, show_progress
        )

    return encode


def _lexical(
    item_ids: list[str],
    texts: np.ndarray,
    hashes: list[str],
    dim: int,
    seed: int,
    prev: dict | None,
) -> tuple[Features, ModalityReport]:
    """Recomputed as a whole (its basis depends on every text) unless no text and no setting changed."""
    identity = {
        "encoder": "lexical",
        "method": "tfidf-sublinear+svd",
        "dim": dim,
        "min_df": 1,
        "seed": seed,
        "corpus_sha256": hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
    }
    has = np.asarray(hashes, dtype=object) != ""
    if (
        prev is not None
        and prev["meta"].get("identity") == identity
        and prev["meta"].get("item_ids") == item_ids
    ):
        f = Features(
            "lexical",
            prev["values"],
            prev["mask"],
            {
                k: prev["meta"][k]
                for k in (
                    "identity",
                    "random_weights",
                    "item_ids",
                    "content_hashes",
                    "vocabulary",
                    "explained",
                )
            },
        )
        return f, ModalityReport(
            "lexical", f.dim, int(has.sum()), int((~has).sum()), reused=int(has.sum())
        )
    values, mask, info = lexical_features(texts.tolist(), dim=dim, seed=seed)
    if values.shape[1] == 0:
        raise InputError(
            "modality lexical: no item has any text (check the text columns)"
        )
    meta = {
        "identity": identity,
        "random_weights": False,
        "item_ids": item_ids,
        "content_hashes": hashes,
        "vocabulary": info["vocabulary"],
        "explained": info["explained"],
    }
    return Features("lexical", values, mask, meta), ModalityReport(
        "lexical",
        values.shape[1],
        int(has.sum()),
        int((~has).sum()),
        encoded=int(has.sum()),
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
        recorded = EncodeSettings.from_record(rec)
        res = run_encode(
            sws,
            neural,
            replace(recorded, num_workers=_workers_here(recorded.num_workers)),
            show_progress=progress,
        )
        encoded.update({m: r.encoded for m, r in res.reports.items()})
        for rep in res.reports.values():
            notes += rep.notes
    if "lexical" in names:
        # The model was trained on the old basis: new texts are folded into it, old vectors stay as they are.
        prev = load_features(ws, ["lexical"])["lexical"]
        n_old = old.n_items
        basis_items = int(prev.meta.get("basis_items", n_old))
        texts = item_texts(grown, rec["text_columns"])
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
        hashes = [
            hashlib.sha256(t.encode("utf-8")).hexdigest() if t else ""
            for t in texts[n_old:]
        ]
        meta = {
            **prev.meta,
            "item_ids": grown.item_ids.tolist(),
            "content_hashes": list(prev.meta["content_hashes"]) + hashes,
            "basis_items": basis_items,
            "folded_in": int(prev.meta.get("folded_in", 0)) + len(hashes),
        }
        meta = {k: v for k, v in meta.items() if k not in ("modality", "dim")}
        save_features(
            sws.stage_dir("features"),
            Features(
                "lexical",
                np.concatenate([prev.values, values]),
                np.concatenate([prev.mask, mask]),
                meta,
            ),
        )
        encoded["lexical"] = len(hashes)
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
