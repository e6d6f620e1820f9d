"""Well-formed files of the wrong structure: every artifact a reader opens (the workspace's dataset/, features/,
graph/, model/ and config.json, and an export folder), replaced by valid JSON / safetensors / Parquet / npy that
holds the wrong thing (another top-level type, a value of the wrong type, a key, column or tensor missing, a
tensor of the wrong name, shape or dtype). Each reader of that file must give its normal result or stop with an
InputError: one line naming the file. Never another exception, never a hang.

A changed file in dataset/, features/ or graph/ changes that folder's fingerprint, so a later stage's reader
may refuse with the lineage line instead ("model/ was made from an earlier features/, ...: run `graphrec train`
again"); the folder's own loader (Dataset.load, load_features, KnowledgeGraph.load) names the file. Files of
an export are re-hashed into its manifest, so that the checks behind the checksum are what is tested.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import load_file, save_file

import graphrec.stages.report
from graphrec.core.errors import InputError
from graphrec.core.feature_store import load_features
from graphrec.core.io import file_sha256
from graphrec.data.dataset import Dataset
from graphrec.data.importer import save_dataset
from graphrec.data.splits import run_split
from graphrec.data.synth import synthesize
from graphrec.kg.build import run_build
from graphrec.kg.graph import KnowledgeGraph
from graphrec.model.artifacts import Architecture, parameter_shapes
from graphrec.model.export_format import load_export
from graphrec.model.gnn import GraphRec
from graphrec.pipeline.api import Recommender
from graphrec.stages.encode import run_encode
from graphrec.stages.evaluate import run_evaluate
from graphrec.stages.export import export
from graphrec.stages.recommend import recommend
from graphrec.stages.train import run_train

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = dict(
    epochs=2, dim=8, layers=1, batch_size=512, lr=0.02, patience=5, progress=False
)
LINEAGE_REFUSAL = "was made from an earlier"
READER_SECONDS = (
    60  # far above any reader's time on this workspace: beyond it, a reader hangs
)


# -- the readers, each returning what it read in a comparable form --------------------------------------
def _frame(f: pd.DataFrame) -> tuple:
    return (
        f["user_id"].tolist(),
        f["item_id"].tolist(),
        f["rank"].tolist(),
        f["score"].to_numpy(),
    )


def _export_view(d: Path) -> tuple:
    e = load_export(d)
    return (
        e.user_ids,
        e.item_ids,
        e.item_warm,
        e.user_embeddings,
        e.item_embeddings,
        _frame(e.recommend(e.user_ids[0], k=3, exclude=[]).to_frame()),
        e.similar_items(e.item_ids[0], k=3),
    )


def _dataset(ws: Path, ctx: dict) -> tuple:
    ds = Dataset.load(ws)
    return (
        ds.counts(),
        ds.user_ids.tolist(),
        ds.item_ids.tolist(),
        ds.interactions.to_numpy().tolist(),
    )


def _features(ws: Path, ctx: dict) -> dict:
    return {m: (f.values, f.mask, f.dim) for m, f in load_features(ws).items()}


def _graph(ws: Path, ctx: dict) -> tuple:
    kg = KnowledgeGraph.load(ws)
    return kg.num_nodes, {k: (e.src, e.dst, e.weight) for k, e in kg.edges.items()}


def _recommend(ws: Path, ctx: dict) -> tuple:
    return _frame(recommend(ws, "all", 3))


def _api(ws: Path, ctx: dict) -> tuple:
    """Known users, and a new one known by two items (that one loads the trained model: model.safetensors)."""
    rec = Recommender.load(ws)
    return _frame(
        rec.recommend(
            [*ctx["users"], "new"], user_items={"new": ctx["items"]}, k=3
        ).to_frame()
    )


def _export(ws: Path, ctx: dict) -> tuple:
    return _export_view(export(ws, ws.parent / "export-out", ["parquet", "npy"]))


def _evaluate(ws: Path, ctx: dict) -> dict:
    d = run_evaluate(ws, ks=(5,), examples=1, progress=False)
    return json.loads((d / "metrics.json").read_text())["tasks"]


def _load_export(d: Path, ctx: dict) -> tuple:
    return _export_view(d)


READERS: dict[str, Callable[[Path, dict], Any]] = {
    "Dataset.load": _dataset,
    "load_features": _features,
    "KnowledgeGraph.load": _graph,
    "recommend": _recommend,
    "Recommender": _api,
    "export": _export,
    "run_evaluate": _evaluate,
    "load_export": _load_export,
}
# Well-formed content its own loader reads as it is (an optional column dropped, a dataset without interactions):
# the loader's result is not compared; later stages refuse the changed folder by its lineage.
STILL_VALID = {
    ("dataset/interactions.parquet", "no rows"),
    ("dataset/interactions.parquet", "timestamp dropped"),
}
OWN_LOADER = {
    "dataset": "Dataset.load",
    "features": "load_features",
    "graph": "KnowledgeGraph.load",
}


# -- the corruptions --------------------------------------------------------------------------------------
def _retype(v: Any) -> Any:
    """A value of another JSON type: a list where an object is, an object where a list is, a number where a
    string is, a string where a number is."""
    if isinstance(v, dict):
        return list(v.values())
    if isinstance(v, list):
        return {str(i): x for i, x in enumerate(v)}
    if isinstance(v, str):
        return 1
    if isinstance(v, bool):
        return "yes"
    if isinstance(v, (int, float)):
        return str(v)
    return 1  # null


def _retype_inside(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _retype(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_retype(x) for x in v]
    return _retype(v)


Edit = Callable[[Any], Any]


def _json_edits(keys: tuple[str, ...], rows: bool = False) -> dict[str, Edit]:
    """Structural corruptions of a JSON file: other top-level values, every value (or every value inside them)
    of another type, and each of `keys` removed or of another type; with `rows`, the file is a list of objects
    and the keys are those of each row."""
    edits: dict[str, Edit] = {
        "[]": lambda o: [],
        "{}": lambda o: {},
        "null": lambda o: None,
        '"x"': lambda o: "x",
    }
    if rows:
        edits["rows retyped"] = lambda o: [_retype(r) for r in o]
        edits["row values retyped"] = lambda o: [_retype_inside(r) for r in o]
        for k in keys:
            edits[f"{k} dropped"] = lambda o, k=k: [
                {a: b for a, b in r.items() if a != k} for r in o
            ]
            edits[f"{k} retyped"] = lambda o, k=k: [
                {**r, k: _retype(r[k])} if k in r else r for r in o
            ]
        return edits
    edits["values retyped"] = lambda o: {k: _retype(v) for k, v in o.items()}
    edits["nested values retyped"] = lambda o: {
        k: _retype_inside(v) for k, v in o.items()
    }
    for k in keys:
        edits[f"{k} dropped"] = lambda o, k=k: {a: b for a, b in o.items() if a != k}
        edits[f"{k} retyped"] = lambda o, k=k: {**o, k: _retype(o[k])} if k in o else o
    return edits


def _cut_first(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first tensor (by name) one row short: its shape no longer fits the others or the dataset."""
    first = min(t)
    return {**t, first: t[first][:-1]}


def _flat(a: np.ndarray) -> np.ndarray:
    return a.ravel() if a.ndim > 1 else a[:, None]


TENSOR_EDITS: dict[str, Edit] = {
    "no tensors": lambda t: {},
    "renamed": lambda t: {f"{k}_x": v for k, v in t.items()},
    "first missing": lambda t: {k: v for k, v in t.items() if k != min(t)},
    "last missing": lambda t: {k: v for k, v in t.items() if k != max(t)},
    "int8": lambda t: {k: v.astype(np.int8) for k, v in t.items()},
    "float64": lambda t: {k: v.astype(np.float64) for k, v in t.items()},
    "flattened": lambda t: {k: np.ascontiguousarray(_flat(v)) for k, v in t.items()},
    "first cut": _cut_first,
}


def _table_edits(columns: dict[str, str]) -> dict[str, Edit]:
    """Each column missing, each column of another type (text <-> numbers), and no rows."""

    def retype(f: pd.DataFrame, c: str) -> pd.DataFrame:
        other = np.arange(len(f)) if columns[c] == "str" else f[c].astype(str)
        return f.assign(**{c: other})

    edits: dict[str, Edit] = {"no rows": lambda f: f.iloc[:0]}
    for c in columns:
        edits[f"{c} dropped"] = lambda f, c=c: f.drop(columns=[c])
        edits[f"{c} retyped"] = lambda f, c=c: retype(f, c)
    return edits


def _embedding_table_edits() -> dict[str, Edit]:
    """An export's Parquet table: the embedding column missing, a plain list of float64, float32 scalars."""

    def column(t: pa.Table, values: pa.Array) -> pa.Table:
        return t.set_column(t.schema.get_field_index("embedding"), "embedding", values)

    return {
        "no rows": lambda t: t.slice(0, 0),
        "embedding dropped": lambda t: t.drop_columns(["embedding"]),
        "embedding float64 list": lambda t: column(
            t,
            pa.array(
                [list(map(float, r)) for r in t.column("embedding").to_pylist()],
                pa.list_(pa.float64()),
            ),
        ),
        "embedding scalar": lambda t: column(
            t, pa.array(np.zeros(t.num_rows, np.float32))
        ),
    }


NPY_EDITS: dict[str, Edit] = {
    "transposed": lambda a: np.ascontiguousarray(a.T),
    "flattened": lambda a: a.ravel(),
    "int8": lambda a: a.astype(np.int8),
    "float64": lambda a: a.astype(np.float64),
    "no rows": lambda a: a[:0],
    "object array": lambda a: np.array([{"not": "numbers"}] * len(a), dtype=object),
}


def _rewrite(path: Path, kind: str, edit: Edit) -> None:
    if kind == "json":
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    elif kind == "safetensors":
        save_file(edit(load_file(str(path))), str(path))
    elif kind == "parquet":
        edit(pd.read_parquet(path)).to_parquet(path, index=False)
    elif kind == "export-parquet":
        pq.write_table(edit(pq.read_table(path)), path)
    else:  # npy
        out = edit(np.load(path))
        np.save(path, out, allow_pickle=out.dtype == object)


# -- the cases --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One artifact file: which folder it is in ("ws" or "export"), its path there, its kind, its readers."""

    where: str
    path: str
    kind: str
    readers: tuple[str, ...]
    edits: dict[str, Edit]


DATASET_READERS = ("Dataset.load", "recommend")
MODEL_READERS = ("recommend", "Recommender", "export")
TARGETS = [
    Target(
        "ws",
        "dataset/dataset.json",
        "json",
        DATASET_READERS,
        _json_edits(("schema", "counts")),
    ),
    Target(
        "ws",
        "dataset/ids.json",
        "json",
        (*DATASET_READERS, "load_features"),
        _json_edits(("users", "items")),
    ),
    Target(
        "ws",
        "dataset/items.parquet",
        "parquet",
        DATASET_READERS,
        _table_edits(
            {"item_id": "str", "title": "str", "category": "str", "tags": "str"}
        ),
    ),
    Target(
        "ws",
        "dataset/users.parquet",
        "parquet",
        DATASET_READERS,
        _table_edits({"user_id": "str", "age_band": "str"}),
    ),
    Target(
        "ws",
        "dataset/interactions.parquet",
        "parquet",
        DATASET_READERS,
        _table_edits(
            {
                "user": "int",
                "item": "int",
                "weight": "float",
                "timestamp": "int",
                "split": "str",
            }
        ),
    ),
    Target(
        "ws",
        "features/lexical.json",
        "json",
        ("load_features", "recommend"),
        _json_edits(
            (
                "item_ids",
                "dim",
                "modality",
                "random_weights",
                "identity",
                "content_hashes",
            )
        ),
    ),
    Target(
        "ws",
        "features/lexical.safetensors",
        "safetensors",
        ("load_features", "recommend"),
        TENSOR_EDITS,
    ),
    Target(
        "ws",
        "graph/graph.json",
        "json",
        ("KnowledgeGraph.load", "recommend"),
        _json_edits(("num_nodes", "relations", "num_edges", "node_names", "meta")),
    ),
    Target(
        "ws",
        "graph/graph.safetensors",
        "safetensors",
        ("KnowledgeGraph.load", "recommend"),
        TENSOR_EDITS,
    ),
    Target(
        "ws",
        "model/model.json",
        "json",
        MODEL_READERS,
        _json_edits(
            ("scoring", "dim", "architecture", "refit", "features", "settings")
        ),
    ),
    Target(
        "ws",
        "model/history.json",
        "json",
        ("run_evaluate",),
        _json_edits(("epoch", "phase", "loss"), rows=True),
    ),
    Target(
        "ws",
        "model/ranker.json",
        "json",
        MODEL_READERS,
        _json_edits(
            (
                "components",
                "blocks",
                "scale",
                "weights_warm",
                "weights_cold",
                "cold_offset",
                "new_user_weights",
                "embeddings_sha256",
                "k",
                "ease_dim",
                "short_history",
                "ridge_widths",
                "group_layout",
            )
        ),
    ),
    Target(
        "ws", "model/ranker.safetensors", "safetensors", MODEL_READERS, TENSOR_EDITS
    ),
    Target(
        "ws", "model/embeddings.safetensors", "safetensors", MODEL_READERS, TENSOR_EDITS
    ),
    Target(
        "ws", "model/model.safetensors", "safetensors", ("Recommender",), TENSOR_EDITS
    ),
    Target(
        "ws",
        "config.json",
        "json",
        ("recommend", "run_evaluate"),
        _json_edits(("stages",)),
    ),
    Target(
        "export",
        "manifest.json",
        "json",
        ("load_export",),
        _json_edits(
            (
                "format",
                "version",
                "dim",
                "users",
                "items",
                "files",
                "sha256",
                "user_ids",
            )
        ),
    ),
    Target(
        "export",
        "ids.json",
        "json",
        ("load_export",),
        _json_edits(("users", "items", "item_warm")),
    ),
    Target("export", "user_embeddings.npy", "npy", ("load_export",), NPY_EDITS),
    Target("export", "item_embeddings.npy", "npy", ("load_export",), NPY_EDITS),
    Target(
        "export",
        "items.parquet",
        "export-parquet",
        ("load_export",),
        _embedding_table_edits(),
    ),
]
CASES = [
    pytest.param(t, name, id=f"{t.where}/{t.path}: {name}")
    for t in TARGETS
    for name in t.edits
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A trained workspace (lexical features, graph, model, ranker), its export, and what each reader reads from
    them as made."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("bad-artifacts")
    full, _ = synthesize(50, 70, 1200, 0, progress=False)
    ws = save_dataset(d / "ws", full, {"source": "test"}).path
    run_split(
        ws, method="random", cold_items=0.2, cold_users=0.1, cold_user_context=2, seed=0
    )
    run_encode(ws, ["lexical"], lexical_dim=8, progress=False)
    run_build(ws, force=True, progress=False)
    run_train(ws, **TRAIN)
    export(ws, d / "export", ["parquet", "npy"])
    ctx = {"users": full.user_ids[:2].tolist(), "items": full.item_ids[:2].tolist()}
    with _fast_report():
        expected = {
            name: READERS[name](
                d / "export" if name == "load_export" else _copy(ws, d / "pristine"),
                ctx,
            )
            for name in READERS
        }
    return {"ws": ws, "export": d / "export", "ctx": ctx, "expected": expected}


def _copy(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


@contextmanager
def _fast_report() -> Iterator[None]:
    """Reports without drawing their figures: the data behind each plot is still read, the rendering (most of an
    evaluation's time on this workspace) is not what is tested here."""
    save = graphrec.stages.report._save

    def no_render(fig: Any, path: Path, caption: str) -> Any:
        import matplotlib.pyplot as plt

        plt.close(fig)
        path.write_bytes(b"")  # the page inlines the file
        return ("img", f"plots/{path.name}", caption)

    graphrec.stages.report._save = no_render
    try:
        yield
    finally:
        graphrec.stages.report._save = save


class Hung(Exception):
    pass


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def hung(signum: int, frame: Any) -> None:
        raise Hung(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _rehash(export_dir: Path) -> None:
    """Record every file's new sha256 in the manifest, as a producer of a wrong folder would."""
    path = export_dir / "manifest.json"
    m = json.loads(path.read_text())
    m["sha256"] = {name: file_sha256(export_dir / name) for name in m["files"].values()}
    path.write_text(json.dumps(m))


def _parquet_only(export_dir: Path) -> None:
    """Drop the npy files from the export, so that load_export reads the Parquet tables."""
    path = export_dir / "manifest.json"
    m = json.loads(path.read_text())
    for key in ("user_embeddings", "item_embeddings"):
        (export_dir / m["files"].pop(key)).unlink()
    path.write_text(json.dumps(m))
    _rehash(export_dir)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return (
                a.shape == b.shape
                and a.dtype == b.dtype
                and np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
            )
        return a.shape == b.shape and bool((a == b).all())
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("target,edit", CASES)
def test_a_wrongly_structured_artifact_works_or_is_named_in_one_line(
    trained, tmp_path, target, edit
):
    folder = _copy(trained[target.where], tmp_path / target.where)
    if target.kind == "export-parquet":
        _parquet_only(folder)
    _rewrite(folder / target.path, target.kind, target.edits[edit])
    if target.where == "export" and target.path != "manifest.json":
        _rehash(folder)
    stage = target.path.split("/")[0]
    fingerprinted = (
        Path(target.path).suffix in (".parquet", ".safetensors")
        or target.path == "dataset/ids.json"
    )
    for reader in target.readers:
        with _fast_report(), _deadline(READER_SECONDS):
            try:
                got = READERS[reader](folder, trained["ctx"])
            except InputError as e:
                message = str(e)
                assert "\n" not in message
                lineage = (
                    fingerprinted
                    and reader != OWN_LOADER.get(stage)
                    and LINEAGE_REFUSAL in message
                )
                assert Path(target.path).name in message or lineage, (
                    f"{reader}: {message}"
                )
                continue
        if (target.path, edit) not in STILL_VALID:
            assert _same(got, trained["expected"][reader]), (
                f"{reader} read it without an error, but differently"
            )


def test_the_model_layout_checked_on_reading_is_the_models_own(trained):
    """graphrec.model.artifacts checks model.safetensors against the parameters GraphRec makes for model.json's
    architecture, without torch: the two must agree."""
    arch = json.loads((trained["ws"] / "model" / "model.json").read_text())[
        "architecture"
    ]
    model = GraphRec(
        arch["n_users"],
        arch["n_items"],
        arch["dim"],
        arch["layers"],
        arch["modality_dims"],
        arch["node_types"],
    )
    assert parameter_shapes(Architecture(**arch)) == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }
