"""Top-K recommendations of the hybrid ranker as a table: user_id, item_id, rank, score [, explanation].

Users: "all", a list of external ids, or a file with one id per line (an optional header line `user_id`).
Candidates: None (every item) or a file/list of item ids, one per line (optional header `item_id`).
Every interaction the system was given (train, valid, cold_valid, cold_user_context) is excluded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graphrec.core.errors import InputError
from graphrec.core.io import atomic_path, write_parquet
from graphrec.core.progress import progress_bar
from graphrec.core.workspace import Workspace, check_output_file, reads
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.data.readers import normalize_id
from graphrec.kg.explain import Explainer
from graphrec.kg.graph import KnowledgeGraph
from graphrec.model.lists import DEFAULT_N
from graphrec.stages.rank import Ranker, serving_ranker

IdSpec = str | os.PathLike | Sequence[str] | None


def read_id_file(path: str | os.PathLike, header: str) -> tuple[list[str], list[int]]:
    """Ids of a one-id-per-line file (blank lines skipped, optional header line) and their line numbers."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"not valid utf-8 text ({e.reason})", file=path) from None
    ids, rows = [], []
    for n, line in enumerate(lines, 1):
        v = normalize_id(line.lstrip("\ufeff"))
        if v and not (n == 1 and v == header):
            if "," in v:
                raise InputError(
                    f"expected one {header} per line, found {v!r}", file=path, row=n
                )
            ids.append(v)
            rows.append(n)
    if not ids:
        raise InputError(f"no {header}s in the file", file=path)
    return ids, rows


def resolve_ids(known: np.ndarray, spec: IdSpec, kind: str) -> np.ndarray:
    """Dense indices for "all" / a file of ids / a list of ids; unknown ids name their file line."""
    if spec is None or (isinstance(spec, str) and spec == "all"):
        return np.arange(len(known))
    if isinstance(spec, (str, os.PathLike)):
        ids, rows = read_id_file(spec, f"{kind}_id")
        file = spec
    else:
        ids, rows, file = [normalize_id(s) for s in spec], None, None
        if not ids:
            raise InputError(f"no {kind} ids given (name at least one, or 'all')")
    pos = pd.Index(known).get_indexer(pd.Index(ids, dtype=object))
    if (pos < 0).any():
        at = int(np.flatnonzero(pos < 0)[0])
        raise InputError(
            f"unknown {kind} id {ids[at]!r} (not in the workspace's dataset)",
            file=file,
            row=None if rows is None else rows[at],
        )
    return pos.astype(np.int64)


@reads
def recommend(
    workspace: Workspace | str | os.PathLike,
    users: IdSpec = "all",
    k: int = DEFAULT_N,
    candidates: IdSpec = None,
    explain: bool = False,
    ranker: Ranker | None = None,
    progress: bool = False,
    approximate: bool = False,
    filter_items: IdSpec = None,
) -> pd.DataFrame:
    """Top-k items per user among the candidates, every given interaction excluded, best first.

    The recommend contract's table (graphrec.model.lists; `Recommender.recommend(...).to_frame()`
    gives the same). Every interaction the system was given (train, valid, cold_valid,
    cold_user_context) is excluded. Reads the workspace on one consistent state and writes nothing.

    Args:
        workspace: The workspace (or its folder), trained.
        users: "all", a list of user ids, or a file of one user id per line (optional header line
            user_id).
        k: Items per user, at least 1 (the same default as the API and the export).
        candidates: The item ids ranked: a list, or a file of one per line (optional header line
            item_id); None: every item.
        explain: Add an explanation column: knowledge-graph paths when the workspace has a graph,
            else the user's known item closest to the recommended one.
        ranker: The ranker to score with; None: the workspace's saved ranker.
        progress: Show progress bars.
        approximate: Candidates from a first pass in 256 whitened dimensions, rescored exactly,
            instead of scoring every candidate in full (for large catalogues; the lists hold
            99.5-100% of the exact ones: BENCHMARKS.md, "Approximate top-K on the served vectors").
        filter_items: Item ids (a list, or a file of one per line) left out of every list.

    Returns:
        One row per recommended (user, item), best first: user_id, item_id, rank (from 1), score,
        and explanation when asked. A list is shorter than k when fewer candidates are left.

    Raises:
        InputError: On bad input: k below 1, an unknown user or item id (naming its file line), an
            unreadable or empty id file, or a workspace without a trained model and ranker.

    Example::

        from graphrec.stages.recommend import recommend

        frame = recommend("ws", users=["u1", "u2"], k=20, filter_items="sold_out.txt")
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    r = ranker if ranker is not None else serving_ranker(ws, ds)
    u = resolve_ids(ds.user_ids, users, "user")
    cand = None if candidates is None else resolve_ids(ds.item_ids, candidates, "item")
    if filter_items is not None:
        cand = np.setdiff1d(
            np.arange(ds.n_items) if cand is None else cand,
            resolve_ids(ds.item_ids, filter_items, "item"),
        )
    history = ds.matrix(GIVEN)
    items, scores = r.topk(
        u, k, history, cand, progress=progress, approximate=approximate
    )
    rows, pos = np.nonzero(items >= 0)
    frame = pd.DataFrame(
        {
            "user_id": ds.user_ids[u[rows]],
            "item_id": ds.item_ids[items[rows, pos]],
            "rank": (pos + 1).astype(np.int32),
            "score": scores[rows, pos],
        }
    )
    if explain:
        frame["explanation"] = explanations(
            ws, ds, r, history, u[rows], items[rows, pos], progress
        )
    return frame


def explanations(
    ws: Workspace,
    ds: Dataset,
    r: Ranker,
    history: sp.csr_matrix,
    users: np.ndarray,
    items: np.ndarray,
    progress: bool = False,
) -> list[str]:
    """Knowledge-graph paths (kg.explain) when the workspace has a graph, else the embedding neighbour."""
    if ws.stage_dir("graph").is_dir():
        # one Python call per pair: opt-in only
        ex = Explainer(KnowledgeGraph.load(ws), ds.item_labels())
        pairs = progress_bar(
            zip(users, items), show=progress, total=len(users), desc="explaining"
        )
        return [ex.text(int(a), int(b)) for a, b in pairs]
    return explain_pairs(ds, r, history, users, items)


def explain_pairs(
    ds: Dataset, r: Ranker, history: sp.csr_matrix, users: np.ndarray, items: np.ndarray
) -> list[str]:
    """'like <title>': the user's known item closest to the recommended one (cosine of item embeddings)."""
    emb = r.item_emb / np.maximum(
        np.linalg.norm(r.item_emb, axis=1, keepdims=True), 1e-12
    )
    h = history[users]  # one row per (user, item) pair
    pair = np.repeat(np.arange(len(users)), np.diff(h.indptr))
    sim = np.einsum("nd,nd->n", emb[h.indices], emb[items[pair]])
    best = np.full(len(users), -1, np.int64)
    if len(sim):
        order = np.lexsort((-sim, pair))  # per pair, the most similar known item first
        first = np.unique(pair[order], return_index=True)[1]
        best[pair[order][first]] = h.indices[order][first]
    label = ds.item_labels()
    return [
        f"like {label[b]}"
        if b >= 0
        else "no history yet: ranked by content and model score"
        for b in best
    ]


# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells that start with = + - @ tab or CR get a leading single quote, so that a
    spreadsheet opening the CSV shows them as text instead of running them (OWASP's CSV-injection advice).

    Only text columns change (ids, explanations); numeric columns (rank, score) stay numbers. Ids are strings,
    so an id like "-5" is written as "'-5" too: a reader gets the id back by dropping the quote from cells that
    start with "'" and then one of FORMULA_START.
    For CSV output only: Parquet keeps the ids exactly."""
    out = frame.copy()
    for column in out.columns:
        col = out[column]
        # Columns holding any text (what pandas' .str accepts); numbers and empty columns pass unchanged.
        if pd.api.types.infer_dtype(col, skipna=True) in (
            "string",
            "mixed",
            "mixed-integer",
        ):
            # missing or non-text: False
            risky = col.str.startswith(FORMULA_START, na=False).astype(bool)
            out[column] = col.mask(risky, "'" + col[risky])
    return out


def write_recommendations(frame: pd.DataFrame, out: str | os.PathLike) -> Path:
    """CSV (formula-like cells neutralised by csv_safe) or Parquet (exact), by suffix, atomically; `out` may be a
    new file or an existing file, never a folder or a link (`check_output_file`)."""
    out = check_output_file(out, "recommendations")
    suffix = out.suffix.lower()
    if suffix in (".parquet", ".pq"):
        write_parquet(out, frame)
    elif suffix in (".csv", ""):
        with atomic_path(out) as tmp:
            csv_safe(frame).to_csv(tmp, index=False)
    else:
        raise InputError("output must end in .csv or .parquet", file=out)
    return out
