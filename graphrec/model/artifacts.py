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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from graphrec.core.errors import InputError
from graphrec.core.io import (
    TensorSpec,
    check_tensors,
    file_sha256,
    link_files,
    read_json,
    read_tensors,
    write_json,
    write_tensors,
)
from graphrec.core.records import Record, check
from graphrec.core.settings import MAX_FIT_USERS
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


@dataclass(frozen=True)
class Architecture(Record):
    """The shape of a trained GraphRec (graphrec.model.gnn): what its parameters are made for."""

    n_users: int
    n_items: int
    dim: int
    layers: int
    modality_dims: dict[str, int]
    node_types: dict[str, int]


@dataclass(frozen=True)
class FeatureUse(Record):
    """A modality the model was trained on: its width, and whether its encoder had random weights."""

    dim: int
    random_weights: bool = False


@dataclass(frozen=True)
class ModelRecord(Record):
    """model.json. Embeddings made elsewhere need only the scoring rule and their width (`dim`); a trained
    GraphRec adds the rest: settings, the selected epoch and its validation, the feature identity and the
    architecture its parameters are made for."""

    scoring: str = "dot"
    dim: int | None = None  # the exported width: the embedding and its bias column
    embedding_dim: int | None = None
    note: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    selected_epoch: int | None = None
    refit: bool = False  # refit on train+valid once validation selected the epoch
    validation: dict[str, Any] = field(default_factory=dict)
    mode: str | None = None  # the dataset's: "evaluate" or "serve"
    fitted_interactions: int | None = (
        None  # distinct user-item pairs the served GNN was fitted on
    )
    warm_items: int | None = None
    features: dict[str, FeatureUse] = field(default_factory=dict)
    architecture: Architecture | None = None


EMBEDDING_TENSORS: dict[str, TensorSpec] = {
    "user": ("float32", ("users", "dim")),
    "item": ("float32", ("items", "dim")),
}


@dataclass(frozen=True)
class HistoryRow(Record):
    """One epoch of model/history.json: its phase ("select" or "refit"), seconds and losses (null where
    they were NaN); `metrics` keeps the rest (validation metrics such as "ndcg@20")."""

    epoch: int
    phase: str | None = None
    seconds: float | None = None
    loss: float | None = None
    bpr: float | None = None
    cold: float | None = None
    align: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    rest: ClassVar[str | None] = "metrics"


@dataclass(frozen=True)
class WrappedHistory(Record):
    """history.json as early versions wrote it: the rows under "history"."""

    history: list[HistoryRow]


@dataclass(frozen=True)
class Blend(Record):
    """ranker.json's fitted blend: what serving reads (graphrec.stages.rank.Ranker): the components, their
    scales and weights for warm and cold items and for new users, and the widths of the served blocks."""

    components: list[str]
    scale: dict[str, float]
    weights_warm: dict[str, float]
    weights_cold: dict[str, float]
    cold_offset: float
    new_user_weights: dict[str, float]
    blocks: dict[str, int] = field(default_factory=dict)
    short_history: int | None = None  # written whenever new_user_weights are
    private_new_user_weights: dict[str, float] | None = None
    ease_dim: int | None = None
    lowpass_dim: int = 0


@dataclass(frozen=True)
class RankerRecord(Record):
    """ranker.json's account of a fit beside the blend's values: the settings, what validation chose, and the
    embeddings served. `selection` holds every trial's validation score, for reports; serving never reads it."""

    k: int = 20
    max_fit_users: int = MAX_FIT_USERS
    ease_lambda: float | None = None
    lowpass_gamma: float = 0.0
    modalities: tuple[str, ...] = ()
    ridge_widths: tuple[int, ...] | None = (
        None  # the content blocks' widths the cold maps were fitted on
    )
    group_layout: dict[str, list[int]] | None = (
        None  # the group block's columns among the users' attributes
    )
    gnn_kept: bool = False
    fitted_with: str = EMBEDDINGS
    embeddings_sha256: str = ""
    selection: dict[str, Any] = field(default_factory=dict)
    rest: ClassVar[str | None] = "selection"


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
    # float32 [U, d+1]: the exported embeddings (model/embeddings.safetensors)
    user: np.ndarray
    item: np.ndarray  # float32 [I, d+1]
    embeddings_sha256: str
    # selection-phase (user, item) when the model was refit
    select: tuple[np.ndarray, np.ndarray] | None
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
) -> tuple[np.ndarray, np.ndarray, ModelRecord]:
    """(user [U, d], item [I, d], model.json) checked against the dataset; `select` reads the selection-phase
    embeddings instead of the final ones."""
    d = ws.require("model")
    path = d / (SELECT_EMBEDDINGS if select else EMBEDDINGS)
    meta = _model_info(d)
    t = read_tensors(path)
    _check_embeddings(t, path, meta, {"users": ds.n_users, "items": ds.n_items})
    return t["user"], t["item"], meta


def _model_info(d: Path) -> ModelRecord:
    """model.json, checked (ModelRecord, and a scoring rule graphrec serves)."""
    meta = ModelRecord.read(d / MODEL_JSON, RETRAIN)
    if meta.scoring != "dot":
        raise InputError(
            f"unsupported scoring rule {meta.scoring!r} (expected 'dot')",
            file=d / MODEL_JSON,
        )
    return meta


def _check_embeddings(
    t: dict[str, np.ndarray], path: Path, meta: ModelRecord, sizes: dict[str, int]
) -> None:
    """A row per user and per item, all of the width model.json gives."""
    width = check_tensors(t, EMBEDDING_TENSORS, path, RETRAIN, sizes)["dim"]
    if meta.dim is not None and width != meta.dim:
        raise InputError(
            f"embeddings are {width} wide, model.json's 'dim' says {meta.dim}: {RETRAIN}",
            file=path,
        )
    # training never writes them (it stops on divergence); a NaN row ranks nothing
    for name in (
        "user",
        "item",
    ):
        if not np.isfinite(t[name]).all():
            raise InputError(
                f"tensor '{name}' holds NaN or infinite values: {RETRAIN}", file=path
            )


# -- the final model ---------------------------------------------------------------------------------
def write_model(
    ws: Workspace,
    parameters: dict[str, np.ndarray],
    meta: ModelRecord,
    history: list[dict[str, Any]],
) -> None:
    """The final parameters (name -> array, as GraphRec.state_dict() names them), model.json and history.json."""
    d = model_dir(ws, create=True)
    write_tensors(d / PARAMETERS, parameters)
    write_json(d / HISTORY, history)
    meta.write(d / MODEL_JSON)


def read_history(ws: Workspace) -> list[HistoryRow] | None:
    """model/history.json's rows, one per epoch, or None when the model has none."""
    path = model_dir(ws) / HISTORY
    if not path.exists():
        return None
    history = check(read_json(path), list[HistoryRow] | WrappedHistory, path, RETRAIN)
    return history.history if isinstance(history, WrappedHistory) else history


def parameters_sha256(ws: Workspace) -> str:
    return file_sha256(model_dir(ws) / PARAMETERS)


def read_model(
    ws: Workspace,
) -> tuple[ModelRecord, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(model.json, parameters, user embeddings, item embeddings) of the final model, as stored; the parameters
    are those `parameter_shapes` names for model.json's architecture (a strict load_state_dict takes them)."""
    d = ws.require("model")
    meta = _model_info(d)
    if meta.architecture is None:
        raise InputError(f"'architecture' is missing: {RETRAIN}", file=d / MODEL_JSON)
    shapes = parameter_shapes(meta.architecture)
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
    _check_embeddings(emb, d / EMBEDDINGS, meta, {"dim": meta.architecture.dim + 1})
    return meta, {name: params[name] for name in shapes}, emb["user"], emb["item"]


def parameter_shapes(architecture: Architecture) -> dict[str, tuple[int, ...]]:
    """name -> shape of the parameters graphrec.model.gnn.GraphRec makes for `architecture` (model.json's; tests check
    that the two agree), so that model.safetensors is checked without importing torch."""
    dim = architecture.dim
    shapes = {
        "user_id": (architecture.n_users, dim),
        "item_id": (architecture.n_items, dim),
    }
    # GraphRec keeps one table per node type and one projection per modality, each in name order
    shapes.update(
        {
            f"attr.{k}": (n, dim)
            for k, (_, n) in enumerate(sorted(architecture.node_types.items()))
        }
    )
    shapes.update(
        {
            f"proj.{k}": (n, dim)
            for k, (_, n) in enumerate(sorted(architecture.modality_dims.items()))
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
    staged: Workspace,
    tensors: dict[str, np.ndarray],
    blend: Blend,
    record: RankerRecord,
) -> None:
    """The ranker's two files, into the model/ folder a writer stages (WS/.training, an update's staging
    folder): they are switched in with the rest of that model/ in one step, never written into a live one.
    ranker.json is one flat object: the blend's keys, then the record's."""
    d = model_dir(staged, create=True)
    write_tensors(d / RANKER_TENSORS, tensors)
    write_json(d / RANKER_JSON, {**blend.to_json(), **record.to_json()})


def read_ranker(
    ws: Workspace, n_items: int
) -> tuple[dict[str, np.ndarray], Blend, RankerRecord] | None:
    """(tensors, blend, record) of the saved ranker for a dataset of `n_items` items, or None when there is
    none or it was fitted for other embeddings."""
    d = ws.require("model")
    if not (d / RANKER_JSON).exists() or not (d / RANKER_TENSORS).exists():
        return None
    blend, record = _ranker_info(d)
    if record.embeddings_sha256 != embeddings_sha256(ws):
        return None
    path = d / RANKER_TENSORS
    tensors = read_tensors(path)
    sizes = {"items": n_items}
    if blend.ease_dim is not None:
        sizes["ease_dim"] = blend.ease_dim
    check_tensors(tensors, _ranker_tensors(blend), path, RETRAIN, sizes)
    _check_ranker_columns(tensors, blend, record, d)
    return tensors, blend, record


def _ranker_tensors(blend: Blend) -> dict[str, TensorSpec]:
    """The tensors ranker.safetensors holds for the blend's components."""
    spec: dict[str, TensorSpec] = {
        "ease_user": ("float32", ("items", "ease_dim")),
        "ease_item": ("float32", ("items", "ease_dim")),
        "pop": ("float32", ("items",)),
        "warm": ("uint8", ("items",)),
        "group_items?": ("float32", ("items", "values")),
    }
    if blend.lowpass_dim:
        spec["lowpass_user"] = ("float32", ("items", "lowpass_dim"))
        spec["lowpass_item"] = ("float32", ("items", "lowpass_dim"))
    # ridge_columns came later: the loader refits a ranker without them
    if "ridge" in blend.components:
        spec["ridge"] = ("float32", ("used", "ease_dim"))
        spec["ridge_mean"] = ("float32", ("used",))
        spec["ridge_target_mean"] = ("float32", ("ease_dim",))
        spec["ridge_columns?"] = ("int64", ("used",))
    # the cold items' popularity map (a content map to one number)
    if "cpop" in blend.components:
        spec["cold_pop"] = ("float32", ("pop_used", 1))
        spec["cold_pop_mean"] = ("float32", ("pop_used",))
        spec["cold_pop_target_mean"] = ("float32", (1,))
        spec["cold_pop_columns"] = ("int64", ("pop_used",))
    return spec


def _check_ranker_columns(
    tensors: dict[str, np.ndarray], blend: Blend, record: RankerRecord, d: Path
) -> None:
    """Column indices into the content the loader rebuilds, block by block, with the recorded widths."""
    path, layout = d / RANKER_TENSORS, record.group_layout
    if "group_items" in tensors and layout is None:
        raise InputError(
            f"'group_layout' is missing (the group block's columns): {RETRAIN}",
            file=d / RANKER_JSON,
        )
    content_width = sum(record.ridge_widths or ())
    if "ridge" in blend.components and "ridge_columns" in tensors:
        _check_within(
            tensors["ridge_columns"], content_width, "tensor 'ridge_columns'", path
        )
    if "cpop" in blend.components:
        if "ridge" not in blend.components:
            raise InputError(
                f"component 'cpop' needs the 'ridge' component's content: {RETRAIN}",
                file=d / RANKER_JSON,
            )
        _check_within(
            tensors["cold_pop_columns"],
            content_width,
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


def _check_within(
    indices: np.ndarray | list[int], n: int, what: str, path: Path
) -> None:
    indices = np.asarray(indices, np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= n):
        raise InputError(
            f"{what} points outside the {n} content columns its widths give: {RETRAIN}",
            file=path,
        )


def _ranker_info(d: Path) -> tuple[Blend, RankerRecord]:
    """ranker.json, checked: the blend and the record, a scale for each component, and the keys the fit
    writes with a part of the ranker, which its loader reads whenever that part is there."""
    path = d / RANKER_JSON
    raw = check(read_json(path), dict[str, Any], path, RETRAIN)
    blend = Blend.from_json(raw, path, RETRAIN)
    own = {k: v for k, v in raw.items() if k not in Blend.keys()}
    record = RankerRecord.from_json(own, path, RETRAIN)
    unscaled = [c for c in blend.components if c not in blend.scale]
    if unscaled:
        raise InputError(
            f"'scale' lacks component {unscaled[0]!r}: {RETRAIN}", file=path
        )
    needed = {
        "embeddings_sha256": True,
        "ridge_widths": "ridge" in blend.components,
        "short_history": bool(blend.new_user_weights),
    }
    missing = [key for key, used in needed.items() if used and raw.get(key) is None]
    if missing:
        raise InputError(f"'{missing[0]}' is missing: {RETRAIN}", file=path)
    layout = record.group_layout
    if layout is not None and not {"widths", "columns"} <= set(layout):
        raise InputError(
            f"'group_layout' should hold 'widths' and 'columns': {RETRAIN}", file=path
        )
    return blend, record


def read_ranker_info(ws: Workspace) -> dict[str, Any]:
    """ranker.json as one object (the blend's keys and the record's), checked as `read_ranker` checks it:
    for reports, which pick the keys they show."""
    blend, record = _ranker_info(ws.require("model"))
    return {**blend.to_json(), **record.to_json()}


def read_update_log(ws: Workspace) -> dict[str, Any] | None:
    path = model_dir(ws) / UPDATE_LOG
    return read_json(path) if path.exists() else None


def write_update_log(ws: Workspace, log: dict[str, Any]) -> None:
    write_json(model_dir(ws, create=True) / UPDATE_LOG, log)
