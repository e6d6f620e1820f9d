"""The feature store: one content matrix per modality, in dataset item-index order, with a presence mask.

    features/<modality>.safetensors   "values" float32 [n_items, dim], "mask" uint8 [n_items] (1 = content present)
    features/<modality>.json          encoder identity (model, weights tag or checkpoint hash, preprocessing,
                                      "random_weights"), item ids in row order, per-item content hashes
Rows whose mask is 0 carry zeros that mean "no content", never content; consumers must use the mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from graphrec.core.errors import InputError
from graphrec.core.io import (
    TensorSpec,
    check_tensors,
    read_json,
    read_tensors,
    write_json,
    write_tensors,
)
from graphrec.core.records import Record
from graphrec.core.workspace import MAKE, Workspace

REENCODE = f"re-run `{MAKE['features']}`"
# What load_features checks of the two files (the module docstring describes them); the .json holds more
# (the encoder's identity and settings), read by the encoder that wrote it.


@dataclass(frozen=True)
class FeaturesRecord(Record):
    """features/<modality>.json as the store checks it: the items' ids in row order, the width, and the
    encoder's identity; `about` keeps the rest the encoder recorded (settings, report, cache hashes)."""

    item_ids: list[str]
    dim: int | None = None
    modality: str | None = None
    random_weights: bool | None = None
    identity: dict[str, Any] | None = None
    content_hashes: list[str] | None = None
    about: dict[str, Any] = field(default_factory=dict)
    rest: ClassVar[str | None] = "about"


@dataclass(frozen=True)
class _ItemIds(Record):
    """The items of dataset/ids.json (graphrec.data.dataset owns the file), to check features against."""

    items: list[str]


FEATURES_TENSORS: dict[str, TensorSpec] = {
    "values": ("float32", ("items", "dim")),
    "mask": ("uint8", ("items",)),
}


@dataclass
class Features:
    modality: str
    values: np.ndarray  # float32 [n_items, dim]
    mask: np.ndarray  # bool [n_items]
    meta: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


def unit_rows(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows scaled to unit L2 norm, float32 [n, d]; present, bool [n]): the one masked row normalisation.

    A row is present when its mask is set and it is not all zero (NaN counts as zero); absent rows are zero,
    so modalities of different scales enter alike and "no content" never looks like content. Each row is divided
    by its largest magnitude first: float32 squares overflow from 2e19 on, and a user's vectors of that scale would
    otherwise become zeros flagged present."""
    v = np.nan_to_num(np.asarray(values, np.float32))
    peak = (
        np.abs(v).max(axis=1, keepdims=True)
        if v.shape[1]
        else np.zeros((len(v), 1), np.float32)
    )
    v = v / np.maximum(peak, np.finfo(np.float32).tiny)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    present = np.asarray(mask, bool) & (norm[:, 0] > 0)
    return np.where(present[:, None], v / np.maximum(norm, 1e-12), 0.0).astype(
        np.float32
    ), present


def save_features(directory: str | Path, feats: Features) -> None:
    """Write one modality (values + mask, then its JSON), each file atomically. An encoder that produced NaN or
    infinite values (a damaged checkpoint, an overflow) stops here with one line: features/ never holds them."""
    directory = Path(directory)
    check_finite(
        feats.values,
        f"the {feats.modality} encoder produced",
        feats.meta.get("item_ids"),
        "nothing was written: check the encoder and its weights",
    )
    write_tensors(
        directory / f"{feats.modality}.safetensors",
        {
            "values": feats.values.astype(np.float32),
            "mask": feats.mask.astype(np.uint8),
        },
    )
    write_json(
        directory / f"{feats.modality}.json",
        {"modality": feats.modality, "dim": feats.dim, **feats.meta},
    )


def load_features(
    workspace: Workspace | str | Path, modalities: list[str] | None = None
) -> dict[str, Features]:
    """All (or the named) modalities of a workspace's features/ folder, checked against the dataset's item ids."""
    ws = Workspace.of(workspace)
    d = ws.require("features")
    names = _modalities(d)
    if modalities is not None:
        missing = [m for m in modalities if m not in names]
        if missing:
            raise InputError(
                f"no features for modality {missing[0]!r} (have: {', '.join(names) or 'none'})",
                file=d,
            )
        names = list(modalities)
    out = {}
    for name, meta in _records(ws, d, names).items():
        path = d / f"{name}.safetensors"
        t = read_tensors(path)
        check_tensors(
            t,
            FEATURES_TENSORS,
            path,
            REENCODE,
            {
                "items": len(meta["item_ids"]),
                **({"dim": meta["dim"]} if "dim" in meta else {}),
            },
        )
        check_finite(t["values"], f"{path} holds", meta["item_ids"], REENCODE)
        out[name] = Features(name, t["values"], t["mask"].astype(bool), meta)
    return out


def check_finite(
    values: np.ndarray, what: str, item_ids: list[str] | None, remedy: str
) -> None:
    """One line when any vector holds NaN or infinity: such a row would turn every score it enters into NaN
    (unit_rows, cosine similarities, the model's content input), so it is stopped at both ends of the store."""
    bad = (
        np.flatnonzero(~np.isfinite(values).all(axis=1))
        if values.ndim == 2
        else np.zeros(0, np.int64)
    )
    if len(bad):
        item = (
            repr(item_ids[bad[0]])
            if item_ids is not None and bad[0] < len(item_ids)
            else f"row {bad[0] + 1}"
        )
        raise InputError(
            f"{what} NaN or infinite values for {len(bad)} items ({item} first): {remedy}"
        )


def feature_records(workspace: Workspace | str | Path) -> dict[str, dict[str, Any]]:
    """modality -> its features/<modality>.json (the encoder's identity and settings), checked as load_features
    checks it, without reading the vectors."""
    ws = Workspace.of(workspace)
    d = ws.require("features")
    return _records(ws, d, _modalities(d))


def _modalities(d: Path) -> list[str]:
    return sorted(p.stem for p in d.glob("*.safetensors"))


def _records(ws: Workspace, d: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The named modalities' .json files, checked (FeaturesRecord, rows for the dataset's items), as the
    encoders wrote them."""
    ids_path = ws.stage_dir("dataset") / "ids.json"
    item_ids = _ItemIds.read(ids_path, f"re-run `{MAKE['dataset']}`").items
    out = {}
    for name in names:
        path = d / f"{name}.json"
        out[name] = read_json(path)
        FeaturesRecord.from_json(
            out[name], path, REENCODE
        )  # checks; the encoder's own keys stay as written
        if out[name]["item_ids"] != item_ids:
            raise InputError(
                f"features are for another item list than the dataset's: {REENCODE}",
                file=path,
            )
    return out
