"""The layout of a workspace's model/ folder: the one module that names its files and reads or writes them.

    model/embeddings.safetensors         "user" [U, d+1], "item" [I, d+1] float32: score = user . item
    model/embeddings_select.safetensors  the same, from the selection phase (trained on train only); kept when
                                         the final model was refit on train+valid, for fitting on validation
    model/model.safetensors              the final parameters (GraphRec.state_dict())
    model/model.json                     scoring rule, settings, selected epoch, architecture, feature identity
    model/history.json                   one row per epoch (losses, validation metrics, seconds)
    model/epoch-N.safetensors            selection-phase checkpoints (parameters, Adam state, loop state in the
    model/refit-epoch-N.safetensors      metadata), refit-phase checkpoints; best.safetensors: the best epoch
    model/ranker.json, ranker.safetensors  the hybrid ranker (graphrec.rank): its fitted blend and tensors
    model/updates.json                   the log of live updates (graphrec.update)

The folder is switched as a whole, never file by file: `run_train` writes a new one in WS/.training/model/
(`prepare_training`; checkpoints there let a killed run resume) and switches it in with its config record;
the ranker is written into a hard-linked copy switched in by `Workspace.new_stage`; an update stages a copy
(`copy_model`) for its journal. A reader finds the old folder or the new one, never a mix.

Stages ask this module for what they need (`read_embeddings`, `read_model`, `read_ranker`, ...) instead of
opening the files themselves, so a change of layout is a change here. It needs no torch: reading an export's
embeddings or a ranker does not import the training stack (checkpoint tensors are written by graphrec.train
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

from graphrec.data.dataset import Dataset
from graphrec.errors import InputError
from graphrec.io import file_sha256, link_files, read_json, read_tensors, write_json, write_tensors
from graphrec.workspace import Workspace

EMBEDDINGS = "embeddings.safetensors"
SELECT_EMBEDDINGS = "embeddings_select.safetensors"
PARAMETERS = "model.safetensors"
MODEL_JSON = "model.json"
HISTORY = "history.json"
BEST = "best.safetensors"
RANKER_JSON = "ranker.json"
RANKER_TENSORS = "ranker.safetensors"
UPDATE_LOG = "updates.json"


def model_dir(ws: Workspace, create: bool = False) -> Path:
    """The model/ folder (created on request)."""
    d = ws.stage_dir("model")
    if create:
        d.mkdir(parents=True, exist_ok=True)
    return d


TRAINING = ".training"  # WS/.training/: the workspace-shaped folder a training run writes its model/ in


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


# -- embeddings --------------------------------------------------------------------------------------
def write_embeddings(ws: Workspace, user: np.ndarray, item: np.ndarray, select: bool = False) -> str:
    """Write the exported embeddings (or the selection-phase ones); returns the file's sha256."""
    path = model_dir(ws, create=True) / (SELECT_EMBEDDINGS if select else EMBEDDINGS)
    write_tensors(path, {"user": np.asarray(user, np.float32), "item": np.asarray(item, np.float32)})
    return file_sha256(path)


def embeddings_path(ws: Workspace) -> Path:
    """Where the exported embeddings are (for messages; read them with `read_embeddings`)."""
    return model_dir(ws) / EMBEDDINGS


def drop_select_embeddings(ws: Workspace) -> None:
    (model_dir(ws) / SELECT_EMBEDDINGS).unlink(missing_ok=True)


def has_select_embeddings(ws: Workspace) -> bool:
    return (model_dir(ws) / SELECT_EMBEDDINGS).exists()


def embeddings_sha256(ws: Workspace) -> str:
    """sha256 of model/embeddings.safetensors: what a fitted ranker records to recognise its embeddings."""
    return file_sha256(model_dir(ws) / EMBEDDINGS)


def read_embeddings(ws: Workspace, ds: Dataset, select: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(user [U, d], item [I, d], model.json) checked against the dataset; `select` reads the selection-phase
    embeddings instead of the final ones."""
    d = ws.require("model")
    path = d / (SELECT_EMBEDDINGS if select else EMBEDDINGS)
    t = read_tensors(path)
    meta = read_json(d / MODEL_JSON)
    if meta.get("scoring", "dot") != "dot":
        raise InputError(f"unsupported scoring rule {meta.get('scoring')!r} (expected 'dot')", file=d / MODEL_JSON)
    for name, n in (("user", ds.n_users), ("item", ds.n_items)):
        if name not in t or t[name].ndim != 2 or t[name].shape[0] != n:
            shape = None if name not in t else tuple(t[name].shape)
            raise InputError(f"tensor {name!r} should be [{n}, dim] for this dataset, found {shape}; re-run "
                             "`graphrec train`", file=path)
    if t["user"].shape[1] != t["item"].shape[1]:
        raise InputError("user and item embeddings differ in dimension", file=path)
    return t["user"].astype(np.float32), t["item"].astype(np.float32), meta


# -- the final model ---------------------------------------------------------------------------------
def write_model(ws: Workspace, parameters: dict[str, np.ndarray], meta: dict[str, Any],
                history: list[dict[str, Any]]) -> None:
    """The final parameters (name -> array, as GraphRec.state_dict() names them), model.json and history.json."""
    d = model_dir(ws, create=True)
    write_tensors(d / PARAMETERS, parameters)
    write_json(d / HISTORY, history)
    write_json(d / MODEL_JSON, meta)


def read_history(ws: Workspace) -> list[dict[str, Any]] | None:
    """model/history.json, or None when the model has none."""
    path = model_dir(ws) / HISTORY
    return read_json(path) if path.exists() else None


def parameters_sha256(ws: Workspace) -> str:
    return file_sha256(model_dir(ws) / PARAMETERS)


def read_model(ws: Workspace) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(model.json, parameters, user embeddings, item embeddings) of the final model, as stored."""
    d = ws.require("model")
    emb = read_tensors(d / EMBEDDINGS)
    return read_json(d / MODEL_JSON), read_tensors(d / PARAMETERS), emb["user"], emb["item"]


# -- checkpoints -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoints:
    """The epoch checkpoints of one training phase ("select" or "refit") in a model/ folder."""

    directory: Path
    phase: str

    def path(self, epoch: int) -> Path:
        return self.directory / (f"epoch-{epoch}.safetensors" if self.phase == "select"
                                 else f"refit-epoch-{epoch}.safetensors")

    @property
    def best(self) -> Path:
        return self.directory / BEST

    def latest(self) -> tuple[int, Path] | None:
        """(epoch, path) of the newest checkpoint of this phase, or None."""
        pat = re.compile(r"epoch-(\d+)\.safetensors" if self.phase == "select" else r"refit-epoch-(\d+)\.safetensors")
        found = [(int(m.group(1)), p) for p in self.directory.glob("*epoch-*.safetensors") if (m := pat.fullmatch(p.name))]
        return max(found) if found else None

    def prune(self, epoch: int, keep: int) -> None:
        """Delete this phase's checkpoints older than the `keep` newest up to `epoch`."""
        for old in range(epoch - keep, 0, -1):
            p = self.path(old)
            if not p.exists():
                break
            p.unlink()


# -- ranker and update log ---------------------------------------------------------------------------
def write_ranker(ws: Workspace, tensors: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """The ranker's two files, switched in with the rest of model/ in one step."""
    with ws.new_stage("model", keep=True) as d:
        write_tensors(d / RANKER_TENSORS, tensors)
        write_json(d / RANKER_JSON, info)


def read_ranker(ws: Workspace) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(tensors, info) of the saved ranker, or None when there is none or it was fitted for other embeddings."""
    d = ws.require("model")
    if not (d / RANKER_JSON).exists() or not (d / RANKER_TENSORS).exists():
        return None
    info = read_json(d / RANKER_JSON)
    if info.get("embeddings_sha256") != embeddings_sha256(ws):
        return None
    return read_tensors(d / RANKER_TENSORS), info


def read_ranker_info(ws: Workspace) -> dict[str, Any]:
    return read_json(ws.require("model") / RANKER_JSON)


def read_update_log(ws: Workspace) -> dict[str, Any] | None:
    path = model_dir(ws) / UPDATE_LOG
    return read_json(path) if path.exists() else None


def write_update_log(ws: Workspace, log: dict[str, Any]) -> None:
    write_json(model_dir(ws, create=True) / UPDATE_LOG, log)

