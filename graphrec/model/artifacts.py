"""The layout of a workspace's model/ folder: the one module that names its files and reads or writes them.

    model/embeddings.safetensors         "user" [U, d+1], "item" [I, d+1] float32: score = user . item
    model/embeddings_select.safetensors  the same, from the selection phase (trained on train only); kept when
                                         the final model was refit on train+valid, for fitting on validation
    model/model.safetensors              the final parameters (GraphRec.state_dict())
    model/model.json                     scoring rule, settings, selected epoch, architecture, feature identity
    model/history.json                   one row per epoch (losses, validation metrics, seconds)
    model/epoch-N.safetensors            selection-phase checkpoints (parameters, Adam state, loop state in the
    model/refit-epoch-N.safetensors      metadata), refit-phase checkpoints; best.safetensors: the best epoch
    model/ranker.json, ranker.safetensors  the hybrid ranker (graphrec.stages.rank): its fitted blend and tensors
    model/updates.json                   the log of live updates (graphrec.stages.update)

The folder is switched as a whole, never file by file: `run_train` writes a new one in WS/.training/model/
(`prepare_training`; checkpoints there let a killed run resume) and switches it in with its config record;
the ranker is written into a hard-linked copy switched in by `Workspace.new_stage`; an update stages a copy
(`copy_model`) for its journal. A reader finds the old folder or the new one, never a mix.

Stages ask this module for what they need (`read_embeddings`, `read_model`, `read_ranker`, ...) instead of
opening the files themselves, so a change of layout is a change here. It needs no torch: reading an export's
embeddings or a ranker does not import the training stack (checkpoint tensors are written by graphrec.stages.train
at the paths `Checkpoints` names).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphrec.core.errors import InputError
from graphrec.core.io import (
    TensorSpec,
    check_json,
    check_tensors,
    file_sha256,
    link_files,
    read_json,
    read_tensors,
    write_json,
    write_tensors,
)
from graphrec.core.workspace import MAKE, Workspace
from graphrec.data.dataset import Dataset

EMBEDDINGS = "embeddings.safetensors"
SELECT_EMBEDDINGS = "embeddings_select.safetensors"
PARAMETERS = "model.safetensors"
MODEL_JSON = "model.json"
HISTORY = "history.json"
BEST = "best.safetensors"
RANKER_JSON = "ranker.json"
RANKER_TENSORS = "ranker.safetensors"
UPDATE_LOG = "updates.json"
RETRAIN = f"re-run `{MAKE['model']}`"  # what rewrites model/ whole

# What the readers below check of model/'s JSON files (they hold more: settings, validation, timings).
ARCHITECTURE = {
    "n_users": int,
    "n_items": int,
    "dim": int,
    "layers": int,
    "modality_dims": {str: int},
    "node_types": {str: int},
}
# Embeddings made elsewhere need only the scoring rule and their width ("dim"); a trained GraphRec adds the rest.
MODEL_INFO = {
    "scoring?": str,
    "dim?": int,
    "refit?": bool,
    "settings?": dict,
    "features?": dict,
    "architecture?": ARCHITECTURE,
}
EMBEDDING_TENSORS: dict[str, TensorSpec] = {
    "user": ("float32", ("users", "dim")),
    "item": ("float32", ("items", "dim")),
}
_NUMBER = (float, None)  # NaN is written as null
HISTORY_ROW = {
    "epoch": int,
    "phase?": str,
    "seconds?": _NUMBER,
    "loss?": _NUMBER,
    "bpr?": _NUMBER,
    "cold?": _NUMBER,
    "align?": _NUMBER,
}
HISTORY_FILE = (
    [HISTORY_ROW],
    {"history": [HISTORY_ROW]},
)  # a list of epochs; early versions wrapped it
RANKER_INFO = {
    "components": [str],
    "blocks?": {str: int},
    "scale": {str: float},
    "weights_warm": {str: float},
    "weights_cold": {str: float},
    "cold_offset": float,
    "new_user_weights": {str: float},
    "embeddings_sha256": str,
    "k?": int,
    "ease_dim?": int,
    "lowpass_dim?": int,
    "short_history?": int,
    "max_fit_users?": int,
    "ridge_widths?": [int],
    "group_layout?": ({"widths": [int], "columns": [int]}, None),
    "modalities?": [str],
    "fitted_with?": str,
    "private_new_user_weights?": ({str: float}, None),
}


def model_dir(ws: Workspace, create: bool = False) -> Path:
    """The model/ folder (created on request)."""
    d = ws.stage_dir("model")
    if create:
        d.mkdir(parents=True, exist_ok=True)
    return d


def prepare_training(out: Workspace, ws: Workspace, resume: bool) -> None:
    """Prepare `out` (WS/.training/), where `run_train` writes the next model/ (switched in when it finishes).
    Fresh unless `resume`: then it keeps what a killed run left there or, after a finished run, starts from
    hard links to model/'s files (its checkpoints)."""
    if not resume:
        shutil.rmtree(out.path, ignore_errors=True)
    if not model_dir(out).is_dir():
        model_dir(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=out.path))
        if resume and model_dir(ws).is_dir():
            link_files(model_dir(ws), tmp)
        os.replace(tmp, model_dir(out))


def copy_model(ws: Workspace, into: Workspace) -> None:
    """Hard links to model/'s files in `into`'s model/ folder, where a writer stages a changed model."""
    link_files(model_dir(ws), model_dir(into, create=True))


@dataclass(frozen=True)
class TrainResult:
    """What a training run wrote to model/ (graphrec.stages.train), handed on so the ranker fit need not re-read it."""

    selected_epoch: int
    validation: dict[str, float]
    history: list[dict[str, Any]]
    refit: bool
    user: (
        np.ndarray
    )  # float32 [U, d+1]: the exported embeddings (model/embeddings.safetensors)
    item: np.ndarray  # float32 [I, d+1]
    embeddings_sha256: str
    select: (
        tuple[np.ndarray, np.ndarray] | None
    )  # selection-phase (user, item) when the model was refit
    gnn_served: bool = False  # the ranker serves the GNN block (else the GNN was not refit: it did not add)
    mode: str = "evaluate"  # "serve": the dataset was not split; settings chosen on an internal split, refit on all


# -- embeddings --------------------------------------------------------------------------------------
def write_embeddings(
    ws: Workspace, user: np.ndarray, item: np.ndarray, select: bool = False
) -> str:
    """Write the exported embeddings (or the selection-phase ones); returns the file's sha256."""
    path = model_dir(ws, create=True) / (SELECT_EMBEDDINGS if select else EMBEDDINGS)
    write_tensors(
        path,
        {"user": np.asarray(user, np.float32), "item": np.asarray(item, np.float32)},
    )
    return file_sha256(path)


def embeddings_path(ws: Workspace) -> Path:
    """Where the exported embeddings are (for messages; read them with `read_embeddings`)."""
    return model_dir(ws) / EMBEDDINGS


def drop_select_embeddings(ws: Workspace) -> None:
    (model_dir(ws) / SELECT_EMBEDDINGS).unlink(missing_ok=True)


def has_select_embeddings(ws: Workspace) -> bool:
    return (model_dir(ws) / SELECT_EMBEDDINGS).exists()


def extend_select_embeddings(
    ws: Workspace, staged: Workspace, ds: Dataset, user: np.ndarray, item: np.ndarray
) -> None:
    """When `ws` keeps selection-phase embeddings (the ranker was fitted on them), stage them grown to the rows of
    the final `user` / `item` embeddings: the existing rows as they were, new users and items as in the final
    ones."""
    if not has_select_embeddings(ws):
        return
    select_user, select_item, _ = read_embeddings(ws, ds, select=True)
    write_embeddings(
        staged,
        np.concatenate([select_user, user[len(select_user) :]]),
        np.concatenate([select_item, item[len(select_item) :]]),
        select=True,
    )


def embeddings_sha256(ws: Workspace) -> str:
    """sha256 of model/embeddings.safetensors: what a fitted ranker records to recognise its embeddings."""
    return file_sha256(model_dir(ws) / EMBEDDINGS)


def read_embeddings(
    ws: Workspace, ds: Dataset, select: bool = False
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(user [U, d], item [I, d], model.json) checked against the dataset; `select` reads the selection-phase
    embeddings instead of the final ones."""
    d = ws.require("model")
    path = d / (SELECT_EMBEDDINGS if select else EMBEDDINGS)
    meta = _model_info(d)
    t = read_tensors(path)
    _check_embeddings(t, path, meta, {"users": ds.n_users, "items": ds.n_items})
    return t["user"], t["item"], meta


def _model_info(d: Path) -> dict[str, Any]:
    """model.json, checked (MODEL_INFO, and a scoring rule graphrec serves)."""
    meta = check_json(read_json(d / MODEL_JSON), MODEL_INFO, d / MODEL_JSON, RETRAIN)
    if meta.get("scoring", "dot") != "dot":
        raise InputError(
            f"unsupported scoring rule {meta.get('scoring')!r} (expected 'dot')",
            file=d / MODEL_JSON,
        )
    return meta


def _check_embeddings(
    t: dict[str, np.ndarray], path: Path, meta: dict[str, Any], sizes: dict[str, int]
) -> None:
    """A row per user and per item, all of the width model.json gives."""
    width = check_tensors(t, EMBEDDING_TENSORS, path, RETRAIN, sizes)["dim"]
    if width != meta.get("dim", width):
        raise InputError(
            f"embeddings are {width} wide, model.json's 'dim' says {meta['dim']}: {RETRAIN}",
            file=path,
        )
    for name in (
        "user",
        "item",
    ):  # training never writes them (it stops on divergence); a NaN row ranks nothing
        if not np.isfinite(t[name]).all():
            raise InputError(
                f"tensor '{name}' holds NaN or infinite values: {RETRAIN}", file=path
            )


# -- the final model ---------------------------------------------------------------------------------
def write_model(
    ws: Workspace,
    parameters: dict[str, np.ndarray],
    meta: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    """The final parameters (name -> array, as GraphRec.state_dict() names them), model.json and history.json."""
    d = model_dir(ws, create=True)
    write_tensors(d / PARAMETERS, parameters)
    write_json(d / HISTORY, history)
    write_json(d / MODEL_JSON, meta)


def read_history(ws: Workspace) -> list[dict[str, Any]] | dict[str, Any] | None:
    """model/history.json (HISTORY_FILE), or None when the model has none."""
    path = model_dir(ws) / HISTORY
    return (
        check_json(read_json(path), HISTORY_FILE, path, RETRAIN)
        if path.exists()
        else None
    )


def parameters_sha256(ws: Workspace) -> str:
    return file_sha256(model_dir(ws) / PARAMETERS)


def read_model(
    ws: Workspace,
) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(model.json, parameters, user embeddings, item embeddings) of the final model, as stored; the parameters
    are those `parameter_shapes` names for model.json's architecture (a strict load_state_dict takes them)."""
    d = ws.require("model")
    meta = check_json(
        _model_info(d), {"architecture": ARCHITECTURE}, d / MODEL_JSON, RETRAIN
    )
    shapes = parameter_shapes(meta["architecture"])
    params = read_tensors(d / PARAMETERS)
    check_tensors(
        params,
        {name: ("float32", shape) for name, shape in shapes.items()},
        d / PARAMETERS,
        RETRAIN,
    )
    emb = read_tensors(d / EMBEDDINGS)
    # rows: of the dataset the embeddings were made for, which an update grows past the architecture's counts;
    # width: the model's dimension and the bias column
    _check_embeddings(
        emb, d / EMBEDDINGS, meta, {"dim": meta["architecture"]["dim"] + 1}
    )
    return meta, {name: params[name] for name in shapes}, emb["user"], emb["item"]


def parameter_shapes(architecture: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """name -> shape of the parameters graphrec.model.gnn.GraphRec makes for `architecture` (model.json's; tests check
    that the two agree), so that model.safetensors is checked without importing torch."""
    dim = architecture["dim"]
    shapes = {
        "user_id": (architecture["n_users"], dim),
        "item_id": (architecture["n_items"], dim),
    }
    # GraphRec keeps one table per node type and one projection per modality, each in name order
    shapes.update(
        {
            f"attr.{k}": (n, dim)
            for k, (_, n) in enumerate(sorted(architecture["node_types"].items()))
        }
    )
    shapes.update(
        {
            f"proj.{k}": (n, dim)
            for k, (_, n) in enumerate(sorted(architecture["modality_dims"].items()))
        }
    )
    return {**shapes, "transfer": (dim, dim), "bias_w": (dim,)}


# -- checkpoints -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoints:
    """The epoch checkpoints of one training phase ("select" or "refit") in a model/ folder."""

    directory: Path
    phase: str

    def path(self, epoch: int) -> Path:
        return self.directory / (
            f"epoch-{epoch}.safetensors"
            if self.phase == "select"
            else f"refit-epoch-{epoch}.safetensors"
        )

    @property
    def best(self) -> Path:
        return self.directory / BEST

    def latest(self) -> tuple[int, Path] | None:
        """(epoch, path) of the newest checkpoint of this phase, or None."""
        pat = re.compile(
            r"epoch-(\d+)\.safetensors"
            if self.phase == "select"
            else r"refit-epoch-(\d+)\.safetensors"
        )
        found = [
            (int(m.group(1)), p)
            for p in self.directory.glob("*epoch-*.safetensors")
            if (m := pat.fullmatch(p.name))
        ]
        return max(found) if found else None

    def prune(self, epoch: int, keep: int) -> None:
        """Delete this phase's checkpoints older than the `keep` newest up to `epoch`."""
        for old in range(epoch - keep, 0, -1):
            p = self.path(old)
            if not p.exists():
                break
            p.unlink()


# -- ranker and update log ---------------------------------------------------------------------------
def write_ranker(
    staged: Workspace, tensors: dict[str, np.ndarray], info: dict[str, Any]
) -> None:
    """The ranker's two files, into the model/ folder a writer stages (WS/.training, an update's staging
    folder): they are switched in with the rest of that model/ in one step, never written into a live one."""
    d = model_dir(staged, create=True)
    write_tensors(d / RANKER_TENSORS, tensors)
    write_json(d / RANKER_JSON, info)


def read_ranker(
    ws: Workspace, n_items: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(tensors, info) of the saved ranker for a dataset of `n_items` items, or None when there is none or it was
    fitted for other embeddings."""
    d = ws.require("model")
    if not (d / RANKER_JSON).exists() or not (d / RANKER_TENSORS).exists():
        return None
    info = _ranker_info(d)
    if info["embeddings_sha256"] != embeddings_sha256(ws):
        return None
    path = d / RANKER_TENSORS
    t = read_tensors(path)
    spec: dict[str, TensorSpec] = {
        "ease_user": ("float32", ("items", "ease_dim")),
        "ease_item": ("float32", ("items", "ease_dim")),
        "pop": ("float32", ("items",)),
        "warm": ("uint8", ("items",)),
        "group_items?": ("float32", ("items", "values")),
    }
    if info.get("lowpass_dim"):
        spec.update(
            {
                "lowpass_user": ("float32", ("items", "lowpass_dim")),
                "lowpass_item": ("float32", ("items", "lowpass_dim")),
            }
        )
    ridge = "ridge" in info["components"]
    if ridge:  # ridge_columns came later: the loader refits a ranker without them
        spec.update(
            {
                "ridge": ("float32", ("used", "ease_dim")),
                "ridge_mean": ("float32", ("used",)),
                "ridge_target_mean": ("float32", ("ease_dim",)),
                "ridge_columns?": ("int64", ("used",)),
            }
        )
    if (
        "cpop" in info["components"]
    ):  # the cold items' popularity map (a content map to one number)
        spec.update(
            {
                "cold_pop": ("float32", ("pop_used", 1)),
                "cold_pop_mean": ("float32", ("pop_used",)),
                "cold_pop_target_mean": ("float32", (1,)),
                "cold_pop_columns": ("int64", ("pop_used",)),
            }
        )
    sizes = {"items": n_items}
    if "ease_dim" in info:
        sizes["ease_dim"] = info["ease_dim"]
    check_tensors(t, spec, path, RETRAIN, sizes)
    layout = info.get("group_layout")
    if "group_items" in t and layout is None:
        raise InputError(
            f"'group_layout' is missing (the group block's columns): {RETRAIN}",
            file=d / RANKER_JSON,
        )
    # Column indices into content the loader rebuilds, block by block, with the recorded widths
    if ridge and "ridge_columns" in t:
        _check_within(
            t["ridge_columns"],
            sum(info["ridge_widths"]),
            "tensor 'ridge_columns'",
            path,
        )
    if "cpop" in info["components"]:
        if not ridge:
            raise InputError(
                f"component 'cpop' needs the 'ridge' component's content: {RETRAIN}",
                file=d / RANKER_JSON,
            )
        _check_within(
            t["cold_pop_columns"],
            sum(info["ridge_widths"]),
            "tensor 'cold_pop_columns'",
            path,
        )
    if layout is not None:
        _check_within(
            layout["columns"],
            sum(layout["widths"]),
            "'group_layout.columns'",
            d / RANKER_JSON,
        )
    return t, info


def _check_within(
    indices: np.ndarray | list[int], n: int, what: str, path: Path
) -> None:
    indices = np.asarray(indices, np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= n):
        raise InputError(
            f"{what} points outside the {n} content columns its widths give: {RETRAIN}",
            file=path,
        )


def _ranker_info(d: Path) -> dict[str, Any]:
    """ranker.json, checked (RANKER_INFO, a scale for each component, the widths the ridge component needs)."""
    path = d / RANKER_JSON
    info = check_json(read_json(path), RANKER_INFO, path, RETRAIN)
    unscaled = [c for c in info["components"] if c not in info["scale"]]
    if unscaled:
        raise InputError(
            f"'scale' lacks component {unscaled[0]!r}: {RETRAIN}", file=path
        )
    # keys the fit writes with a part of the ranker, and its loader reads whenever that part is there
    needed = {
        "ridge_widths": "ridge" in info["components"],
        "short_history": bool(info["new_user_weights"]),
    }
    missing = [key for key, used in needed.items() if used and key not in info]
    if missing:
        raise InputError(f"'{missing[0]}' is missing: {RETRAIN}", file=path)
    return info


def read_ranker_info(ws: Workspace) -> dict[str, Any]:
    return _ranker_info(ws.require("model"))


def read_update_log(ws: Workspace) -> dict[str, Any] | None:
    path = model_dir(ws) / UPDATE_LOG
    return read_json(path) if path.exists() else None


def write_update_log(ws: Workspace, log: dict[str, Any]) -> None:
    write_json(model_dir(ws, create=True) / UPDATE_LOG, log)
