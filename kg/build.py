"""Build the knowledge graph from the canonical dataset (+ content features + external triples), vectorised.

Node types: user, item, one per attribute family (each item / user attribute column; "decade" derived from
a numeric "year" column, "age_band" from a numeric user "age" column), entity (external triples).
Relations (stored forward, sorted by (src, dst)):
  user  -interacts->       item     training interactions only, weight = interaction weight
  item  -has_<family>->    <family> weight 1          user -has_<family>-> <family>  weight 1
  item  -similar_<mod>->   item     k nearest neighbours by cosine over items with content, weight = cosine > 0
  item/entity -<relation>-> entity/item  triples, relation name kept, weight 1
Cold items keep content, attribute and triple edges (that is how a new item is reached); cold users keep
attribute edges. Held-out interactions never become edges.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError
from graphrec.core.feature_store import Features, load_features
from graphrec.core.io import file_sha256
from graphrec.core.progress import progress_bar
from graphrec.core.settings import BuildSettings
from graphrec.core.workspace import Workspace, writes
from graphrec.data.dataset import Dataset
from graphrec.data.demographics import age_bands
from graphrec.kg.graph import EdgeSet, EdgeType, KnowledgeGraph
from graphrec.kg.triples import (
    RawTriples,
    dataset_triples,
    read_entity_map,
    read_triples,
    resolve_triples,
)

USER, ITEM, ENTITY = "user", "item", "entity"
DEFAULT_KNN = 10
# similarity cells per block: 32M float32 = 128 MiB, whatever the catalogue size
KNN_BLOCK_CELLS = 1 << 25


def build_graph(
    ds: Dataset,
    features: dict[str, Features] | None = None,
    item_knn: int = 0,
    knn_modalities: list[str] | None = None,
    triples: list[tuple[RawTriples, dict[str, np.ndarray] | None]] | None = None,
    progress: bool = True,
) -> KnowledgeGraph:
    """The graph of a dataset. `triples` are extra (raw triples, optional item->entity map) pairs; the
    dataset's own triples are always included. Its interactions are the training ones: every interaction of a
    dataset that is not split (serve mode)."""
    g = _Builder(ds)
    g.interactions()
    g.attributes()
    if item_knn > 0:
        feats = features or {}
        names = list(feats) if knn_modalities is None else knn_modalities
        missing = [m for m in names if m not in feats]
        if missing or not names:
            raise InputError(
                f"no features for modality {missing[0] if missing else '(any)'}: run `graphrec encode` "
                "first or build with --item-knn 0"
            )
        for name in names:
            g.knn(feats[name], item_knn, progress)
    sources = (
        [(dataset_triples(ds.triples, ds.item_ids), None)]
        if ds.triples is not None and len(ds.triples)
        else []
    )
    g.triples(sources + list(triples or []))
    return g.finish()


@dataclass
class _Builder:
    ds: Dataset
    num_nodes: dict[str, int] = field(default_factory=dict)
    edges: dict[EdgeType, EdgeSet] = field(default_factory=dict)
    node_names: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.num_nodes = {USER: self.ds.n_users, ITEM: self.ds.n_items}
        self.meta = {
            "dataset": self.ds.schema.name,
            "split": self.ds.schema.split,
            "relation_kinds": {},
            "families": {},
            "knn": {},
            "triples": [],
        }

    def add(
        self,
        key: EdgeType,
        kind: str,
        src: np.ndarray,
        dst: np.ndarray,
        weight: np.ndarray | None = None,
    ) -> None:
        if key in self.edges:
            raise InputError(
                f"relation {key[1]!r} from {key[0]} to {key[2]} is defined twice (rename the triples' "
                "relation)"
            )
        w = (
            np.ones(len(src), np.float32)
            if weight is None
            else np.asarray(weight, np.float32)
        )
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        # one edge per (src, dst): keep the largest weight; sorting by key also makes the CSR order
        key_ = src * max(1, self.num_nodes[key[2]]) + dst
        order = np.lexsort((-w, key_))
        key_, src, dst, w = key_[order], src[order], dst[order], w[order]
        first = np.ones(len(key_), bool)
        first[1:] = key_[1:] != key_[:-1]
        self.edges[key] = EdgeSet(src[first], dst[first], w[first])
        self.meta["relation_kinds"]["|".join(key)] = kind

    # -- user-item ---------------------------------------------------------------------------------
    def interactions(self) -> None:
        # every interaction of a dataset that is not split (serve mode)
        inter = self.ds.part("train")
        self.meta["unsplit"] = not self.ds.is_split
        self.add(
            (USER, "interacts", ITEM),
            "interaction",
            inter["user"].to_numpy(),
            inter["item"].to_numpy(),
            inter["weight"].to_numpy(),
        )

    # -- attributes --------------------------------------------------------------------------------
    def attributes(self) -> None:
        """Item and user attribute columns become families; a column name used by both shares its nodes."""
        schema = self.ds.schema
        per_family: dict[str, list[tuple[str, np.ndarray, pd.Series]]] = {}
        for src, table, columns in (
            (ITEM, self.ds.items, schema.attribute_columns),
            (USER, self.ds.users, schema.user_attribute_columns),
        ):
            for col in columns:
                rows, values = _explode(table[col], schema.sep)
                family = _family_name(col)
                per_family.setdefault(family, []).append((src, rows, values))
                self.meta["families"].setdefault(family, {})[src] = col
                derived = _derive(col, src, values)
                if derived is not None and derived[0] not in columns:
                    name, keep, dvalues = derived
                    per_family.setdefault(name, []).append((src, rows[keep], dvalues))
                    self.meta["families"].setdefault(name, {})[src] = f"{col} (derived)"
        for family, parts in per_family.items():
            names, codes = np.unique(
                np.concatenate([p[2].to_numpy(dtype=object) for p in parts]).astype(
                    str
                ),
                return_inverse=True,
            )
            self.num_nodes[family] = len(names)
            self.node_names[family] = names.tolist()
            start = 0
            for src, rows, values in parts:
                dst = codes[start : start + len(values)]
                start += len(values)
                self.add((src, f"has_{family}", family), f"{src}_attribute", rows, dst)

    # -- content similarity ------------------------------------------------------------------------
    def knn(self, feats: Features, k: int, progress: bool) -> None:
        if len(feats.mask) != self.ds.n_items:
            raise InputError(
                f"features of modality {feats.modality!r} have {len(feats.mask)} rows, the dataset "
                f"{self.ds.n_items} items: re-run `graphrec encode`"
            )
        src, dst, sim = knn_edges(
            feats.values, feats.mask, k, progress=progress, label=feats.modality
        )
        self.add((ITEM, f"similar_{feats.modality}", ITEM), "similarity", src, dst, sim)
        self.meta["knn"][feats.modality] = {
            "k": k,
            "items_with_content": int(feats.mask.sum()),
            "edges": len(src),
        }

    # -- external triples --------------------------------------------------------------------------
    def triples(
        self, sources: list[tuple[RawTriples, dict[str, np.ndarray] | None]]
    ) -> None:
        frames = []
        for raw, entity_map in sources:
            frame, report = resolve_triples(raw, self.ds.item_ids, entity_map)
            frames.append(frame)
            self.meta["triples"].append(report)
        if not frames:
            return
        t = pd.concat(frames, ignore_index=True)
        t = t[~t.duplicated()]
        names = np.unique(
            np.concatenate(
                [
                    t["head_entity"].to_numpy()[t["head_item"].to_numpy() < 0],
                    t["tail_entity"].to_numpy()[t["tail_item"].to_numpy() < 0],
                ]
            ).astype(str)
        )
        self.num_nodes[ENTITY] = len(names)
        self.node_names[ENTITY] = names.tolist()
        index = pd.Index(names)
        h_item, t_item = t["head_item"].to_numpy(), t["tail_item"].to_numpy()
        h = np.where(
            h_item >= 0, h_item, index.get_indexer(t["head_entity"].to_numpy())
        )
        d = np.where(
            t_item >= 0, t_item, index.get_indexer(t["tail_entity"].to_numpy())
        )
        h_type = np.where(h_item >= 0, ITEM, ENTITY)
        t_type = np.where(t_item >= 0, ITEM, ENTITY)
        groups = (
            pd.DataFrame({"h": h_type, "r": t["relation"].to_numpy(), "t": t_type})
            .groupby(["h", "r", "t"], sort=True)
            .indices
        )
        for (hs, r, ts), rows in groups.items():
            self.add((hs, str(r), ts), "triple", h[rows], d[rows])

    def finish(self) -> KnowledgeGraph:
        self.meta["num_edges"] = {"|".join(k): len(e) for k, e in self.edges.items()}
        return KnowledgeGraph(self.num_nodes, self.edges, self.node_names, self.meta)


def knn_edges(
    values: np.ndarray, mask: np.ndarray, k: int, progress: bool = True, label: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each content-bearing item's k most cosine-similar other content-bearing items (similarity > 0), computed
    block by block so memory stays O(block x n), never O(n^2)."""
    import torch

    idx = np.flatnonzero(mask)
    n = len(idx)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    x = torch.nn.functional.normalize(
        torch.from_numpy(np.ascontiguousarray(values[idx], np.float32)), dim=1
    )
    block = max(1, KNN_BLOCK_CELLS // n)
    sims, nbrs = [], []
    starts = range(0, n, block)
    for start in progress_bar(
        starts,
        show=progress and len(starts) > 1,
        desc=f"kNN {label}".strip(),
        unit="block",
    ):
        s = x[start : start + block] @ x.T
        rows = torch.arange(s.shape[0])
        s[rows, rows + start] = -float("inf")  # not its own neighbour
        v, j = s.topk(k, dim=1)
        sims.append(v)
        nbrs.append(j)
    sim = torch.cat(sims).numpy().ravel()
    dst = idx[torch.cat(nbrs).numpy().ravel()]
    src = np.repeat(idx, k)
    keep = sim > 0
    return src[keep], dst[keep], sim[keep].astype(np.float32)


def _explode(column: pd.Series, sep: str) -> tuple[np.ndarray, pd.Series]:
    """(row index, value) for every non-blank value of a multi-valued column, values stripped, repeats in a
    cell dropped. pyarrow's list kernels split and flatten in C, with no per-row Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cells = pa.array(
        column.fillna("").astype(str).to_numpy(dtype=object), type=pa.string()
    )
    lists = pc.split_pattern(cells, pattern=sep)
    rows = pc.list_parent_indices(lists).to_numpy()
    values = pc.utf8_trim_whitespace(pc.list_flatten(lists)).to_numpy(
        zero_copy_only=False
    )
    keep = values != ""
    frame = pd.DataFrame({"row": rows[keep].astype(np.int64), "value": values[keep]})
    frame = frame[~frame.duplicated()]
    return frame["row"].to_numpy(np.int64), frame["value"].reset_index(drop=True)


def _derive(
    column: str, src: str, values: pd.Series
) -> tuple[str, np.ndarray, pd.Series] | None:
    """Coarser families from numeric columns: year -> decade (items), age -> age_band (users)."""
    name = column.lower()
    if (src, name) not in ((ITEM, "year"), (USER, "age")):
        return None
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    keep = np.isfinite(num)
    if not keep.any():
        return None
    num = num[keep]
    if name == "year":
        return (
            "decade",
            keep,
            pd.Series((num // 10 * 10).astype(np.int64).astype(str)) + "s",
        )
    return "age_band", keep, pd.Series(age_bands(num))


def _family_name(column: str) -> str:
    name = column.strip().replace("|", "_") or "attribute"
    return f"{name}_attr" if name in (USER, ITEM, ENTITY) else name


# -- the build stage ---------------------------------------------------------------------------------
@dataclass
class BuildResult:
    graph: KnowledgeGraph
    rebuilt: bool  # False: the saved graph was up to date with its inputs
    notes: list[str]


@writes
def run_build(
    workspace: Workspace | str | os.PathLike,
    item_knn: int | None = BuildSettings.item_knn,
    knn_modalities: Sequence[str] | None = BuildSettings.knn_modalities,
    triples: str | os.PathLike | None = BuildSettings.triples,
    entity_map: str | os.PathLike | None = BuildSettings.entity_map,
    force: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Build the knowledge graph: dataset/ (+ features/, + a triples file) -> graph/, the build stage.

    Skips the work when the recorded inputs and settings are unchanged (the saved graph comes back,
    with a note saying so). Runs under the workspace lock; a rebuilt graph is written to graph/ and
    recorded.

    Args:
        workspace: The workspace (or its folder); dataset/ is required, features/ gives the kNN
            edges.
        item_knn: Item-item kNN edges per item and content modality (0: none). `item_knn=None` means
            10 when features exist, else 0.
        knn_modalities: The modalities the kNN edges are computed on; None: every modality in
            features/.
        triples: An external triples file: 'head relation tail' lines (KGAT/KGCN kg.txt) or a
            CSV/Parquet with head, relation, tail.
        entity_map: An item -> entity map for `triples` ('item_id entity_id' lines, KGAT
            item_list.txt, or CSV item_id,entity); only with `triples`.
        force: Rebuild even when the inputs and settings are unchanged.
        progress: Show progress bars.

    Returns:
        The `BuildResult`: the graph, whether it was rebuilt (False: the saved graph was up to date
        with its inputs), and notes for the user (triples dropped, defaults taken, serve mode, a
        model made from an older graph).

    Raises:
        InputError: On bad input: no dataset/ yet, an entity map without triples, a negative
            `item_knn`, kNN edges without features (run `graphrec encode` first), or a bad triples
            or entity map file.

    Example::

        from graphrec.kg.build import run_build

        result = run_build("ws", item_knn=20, triples="kg.txt", entity_map="item_list.txt")
    """
    ws = Workspace.of(workspace)
    ws.require("dataset")
    if entity_map is not None and triples is None:
        raise InputError(
            "--entity-map needs --triples (it maps the dataset's items to the triples' entities)",
            file=entity_map,
        )
    chosen = None if knn_modalities is None else list(knn_modalities)
    item_knn, modalities, notes = _knn_settings(ws, item_knn, chosen)
    settings = _settings(item_knn, modalities, triples, entity_map)
    inputs = _input_hashes(ws, modalities, triples, entity_map)
    record = ws.stage_record("graph")
    saved = ws.stage_dir("graph") / "graph.json"
    if (
        not force
        and record
        and saved.exists()
        and record.settings == settings
        and record.inputs == inputs
    ):
        return BuildResult(
            KnowledgeGraph.load(ws),
            False,
            notes + ["graph up to date with its inputs: not rebuilt"],
        )
    graph = _graph_of_files(ws, item_knn, modalities, triples, entity_map, progress)
    graph.meta["settings"] = settings
    notes += _graph_notes(graph)
    graph.save(ws)
    ws.record("graph", settings, inputs)
    return BuildResult(graph, True, notes + _stale_model_note(ws))


def _knn_settings(
    ws: Workspace, item_knn: int | None, knn_modalities: list[str] | None
) -> tuple[int, list[str] | None, list[str]]:
    """The kNN size (None: 10 when features/ holds any, else 0), the modalities it runs on (None without kNN)
    and a note when it defaulted to 0; a kNN the workspace has no features for is an InputError."""
    features = ws.stage_dir("features")
    has_features = features.is_dir() and any(features.glob("*.safetensors"))
    notes = []
    if item_knn is None:
        item_knn = DEFAULT_KNN if has_features else 0
        if not has_features:
            notes.append(
                "no features/ yet: built without item-item similarity edges (run `graphrec encode`)"
            )
    if item_knn < 0:
        raise InputError(f"--item-knn must be 0 or more, got {item_knn}")
    if item_knn > 0 and not has_features:
        raise InputError(
            "--item-knn needs content features: run `graphrec encode` first or pass --item-knn 0",
            file=ws.path,
        )
    modalities = None
    if item_knn > 0:
        modalities = sorted(
            knn_modalities or (path.stem for path in features.glob("*.safetensors"))
        )
    return item_knn, modalities, notes


def _settings(
    item_knn: int,
    modalities: list[str] | None,
    triples: str | os.PathLike | None,
    entity_map: str | os.PathLike | None,
) -> dict[str, Any]:
    """The build's settings as recorded: a rebuild is skipped only when they are unchanged (files by absolute
    path, so a build from another directory compares alike)."""
    return {
        "item_knn": item_knn,
        "knn_modalities": modalities,
        "triples": None if triples is None else str(Path(triples).resolve()),
        "entity_map": None if entity_map is None else str(Path(entity_map).resolve()),
    }


def _graph_of_files(
    ws: Workspace,
    item_knn: int,
    modalities: list[str] | None,
    triples: str | os.PathLike | None,
    entity_map: str | os.PathLike | None,
    progress: bool,
) -> KnowledgeGraph:
    """The graph built from the workspace's dataset and features and the given triples (+ entity map) files."""
    ds = Dataset.load(ws)
    features = load_features(ws, modalities) if modalities else None
    extra = []
    if triples is not None:
        extra.append(
            (
                read_triples(triples),
                None if entity_map is None else read_entity_map(entity_map),
            )
        )
    return build_graph(ds, features, item_knn, modalities, extra, progress)


def _graph_notes(graph: KnowledgeGraph) -> list[str]:
    """What the user should know about a fresh graph: each triples source's drops, unknown map items, serve
    mode."""
    notes = []
    for report in graph.meta["triples"]:
        notes.append(
            f"triples {report['source']}: kept {report['kept']} of {report['read']}; dropped "
            f"{report['self_loops_dropped']} self-loops, {report['duplicates_dropped']} duplicates, "
            f"{report['unknown_head_triples_dropped']} with {report['unknown_heads']} unknown heads "
            f"{report['unknown_head_examples'] or ''}".rstrip()
        )
        if report.get("map_items_unknown"):
            notes.append(
                f"entity map: {report['map_items_unknown']} items not in the dataset (ignored)"
            )
    if graph.meta.get("unsplit"):
        notes.append(
            "the dataset is not split: serve mode, the graph holds every interaction (`graphrec train` "
            "chooses its settings on an internal validation split, then fits on everything)"
        )
    return notes


def _stale_model_note(ws: Workspace) -> list[str]:
    """A note when model/ was trained on the graph this build replaced (`update` keeps them together)."""
    if ws.stage_dir("model").is_dir() and "graph" in ws.outdated_inputs("model"):
        return [
            "model/ was trained on the previous graph: run `graphrec train` before serving again "
            "(recommend and export refuse the older model; `graphrec update` grows both without this)"
        ]
    return []


def _input_hashes(
    ws: Workspace,
    modalities: list[str] | None,
    triples: str | os.PathLike | None,
    entity_map: str | os.PathLike | None,
) -> dict[str, str]:
    files: dict[str, Path] = {
        f"dataset/{p.name}": p
        for p in sorted(ws.stage_dir("dataset").iterdir())
        if p.is_file()
    }
    for m in modalities or []:
        for suffix in (".json", ".safetensors"):
            p = ws.stage_dir("features") / f"{m}{suffix}"
            if not p.exists():
                raise InputError(f"no features for modality {m!r}", file=p)
            files[f"features/{p.name}"] = p
    for label, given in (("triples", triples), ("entity_map", entity_map)):
        if given is not None:
            if not Path(given).is_file():
                raise InputError("file not found", file=given)
            files[label] = Path(given)
    return {k: file_sha256(p) for k, p in files.items()}
