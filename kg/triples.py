"""External knowledge triples: readers for the common KG-recommendation formats, and their resolution.

Formats read by `read_triples`:
  * whitespace lines "head relation tail" (KGAT `kg_final.txt`, KGCN/KB4Rec `kg.txt`), any other suffix;
  * CSV / TSV / Parquet tables with columns head (or item), relation, tail.
`read_entity_map` reads the item -> entity map: whitespace lines "item_id entity_id" (KGCN
`item_index2entity_id.txt`), KGAT `item_list.txt` (header "org_id remap_id ..."), or a table with
columns item_id, entity (or entity_id).

`resolve_triples` turns raw triples into typed edges. A head (and, with an entity map, a tail) that is an
item becomes the item node; other heads must appear as the tail of some triple (entity-entity chains),
else they are unknown: reported and dropped. Self-loops and duplicate triples are dropped with counts.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError
from graphrec.data.readers import (
    PARQUET,
    fail_at,
    id_problem,
    normalize_ids,
    read_table,
    row_label,
)

TABLE_SUFFIXES = (".csv", ".tsv") + PARQUET
EXAMPLES = 5  # how many unknown ids a report names


@dataclass
class RawTriples:
    """Triples as read: external head/tail ids and relation names, all strings."""

    head: np.ndarray
    relation: np.ndarray
    tail: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.head)


def read_triples(path: str | os.PathLike) -> RawTriples:
    """Read a triples file (whitespace lines or a head,relation,tail table); malformed rows raise InputError."""
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return _table_triples(path)
    cols = [
        normalize_ids(c).to_numpy(dtype=object)
        for c in _read_fields(path, 3, "head relation tail")
    ]
    _check_field_ids(path, cols, lambda i: _line_of(path, i))
    bad = np.flatnonzero(pd.Series(cols[1]).str.contains("|", regex=False).to_numpy())
    if len(bad):
        raise InputError(
            "relation names may not contain '|'",
            file=path,
            row=_line_of(path, int(bad[0])),
        )
    return RawTriples(cols[0], cols[1], cols[2], str(path))


def _table_triples(path: Path) -> RawTriples:
    """Triples from a CSV / TSV / Parquet table with columns head (or item), relation, tail; each cell must be a
    non-blank id by the dataset's rule, and a relation name free of '|' (it joins a relation's key)."""
    frame = read_table(path)
    head_col = (
        "item" if "head" not in frame.columns and "item" in frame.columns else "head"
    )
    names = [head_col, "relation", "tail"]
    for col in names:
        if col not in frame.columns:
            raise InputError(
                f"missing required column (found: {', '.join(frame.columns)})",
                file=path,
                column=col,
            )
    for col in names:
        frame[col] = _checked_ids(frame, col)
    bad = np.flatnonzero(frame["relation"].str.contains("|", regex=False).to_numpy())
    if len(bad):
        raise fail_at(
            frame, int(bad[0]), "relation", "relation names may not contain '|'"
        )
    head, relation, tail = (frame[c].to_numpy(dtype=object) for c in names)
    return RawTriples(head, relation, tail, str(path))


def _checked_ids(frame: pd.DataFrame, col: str) -> pd.Series:
    """A table column's ids, normalised by the one id rule (as the dataset's ids); a blank or refused id fails
    at its row."""
    values = normalize_ids(frame[col]).set_axis(frame.index)
    blank = np.flatnonzero((values == "").to_numpy())
    if len(blank):
        raise fail_at(frame, int(blank[0]), col, "blank cell")
    problem = id_problem(values)
    if problem:
        raise fail_at(frame, problem[0], col, problem[1])
    return values


def read_entity_map(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Item id -> entity id pairs as {"item": [...], "entity": [...]} (strings); an item mapped twice is an error."""
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        items, ents, labels = _table_entity_map(path)
    else:
        items, ents, labels = _text_entity_map(path)
    blank = np.flatnonzero(((items == "") | (ents == "")).to_numpy())
    if len(blank):
        raise InputError(
            "blank item or entity id", file=path, row=labels(int(blank[0]))
        )
    dup = np.flatnonzero(items.duplicated().to_numpy())
    if len(dup):
        raise InputError(
            f"item {items.iloc[dup[0]]!r} is mapped twice",
            file=path,
            row=labels(int(dup[0])),
        )
    return {"item": items.to_numpy(dtype=object), "entity": ents.to_numpy(dtype=object)}


# An entity map as read: item ids, entity ids, and the row of a 0-based record (a table's row label or a file
# line), for error messages.
_EntityMap = tuple[pd.Series, pd.Series, Callable[[int], int | str]]


def _table_entity_map(path: Path) -> _EntityMap:
    """The map from a table with columns item_id and entity (or entity_id), ids checked by the one id rule."""
    frame = read_table(path, ("item_id",))
    ent = next((c for c in ("entity", "entity_id") if c in frame.columns), None)
    if ent is None:
        raise InputError(
            "missing required column (an entity or entity_id column)",
            file=path,
            column="entity",
        )
    items, ents = normalize_ids(frame["item_id"]), normalize_ids(frame[ent])
    for col, values in (("item_id", items), (ent, ents)):
        problem = id_problem(values)
        if problem:
            raise fail_at(frame, problem[0], col, problem[1])
    return items, ents, lambda i: row_label(frame, i)


def _text_entity_map(path: Path) -> _EntityMap:
    """The map from whitespace lines "item_id entity_id", or KGAT's item_list.txt (header "org_id remap_id
    [freebase_id]"), ids normalised and checked by the one id rule, as for tables."""
    labels: Callable[[int], int | str]
    first = _first_line(path).split()
    if first[:2] == ["org_id", "remap_id"]:
        fields = _read_fields(path, len(first), " ".join(first), skip_header=True)
        labels = lambda i: _line_of(path, i + 1)  # noqa: E731
    else:
        fields = _read_fields(path, 2, "item_id entity_id")
        labels = lambda i: _line_of(path, i)  # noqa: E731
    items, ents = normalize_ids(fields[0]), normalize_ids(fields[1])
    _check_field_ids(path, [items, ents], labels)
    return items, ents, labels


def _check_field_ids(
    path: Path,
    fields: list[np.ndarray] | list[pd.Series],
    line: Callable[[int], int | str],
) -> None:
    """Whitespace-format fields (already normalised) must pass the dataset's id rule (`id_problem`); `line`
    gives the file line of a 0-based record, only on the error path."""
    for values in fields:
        problem = id_problem(pd.Series(values, dtype=object))
        if problem:
            raise InputError(problem[1], file=path, row=line(problem[0]))


def _first_line(path: Path) -> str:
    if not path.exists():
        raise InputError("file not found", file=path)
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line
    raise InputError("file is empty", file=path)


def _read_fields(
    path: Path, n: int, layout: str, skip_header: bool = False
) -> list[np.ndarray]:
    """Whitespace-separated lines of exactly n fields (blank lines skipped), read by pandas' C parser."""
    _first_line(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not valid utf-8 text at byte {e.start}", file=path) from None
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=r"\s+",
            header=None,
            names=list(range(n)),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            engine="c",
            skiprows=1 if skip_header else 0,
            quoting=3,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        frame = None
    if frame is None or (frame[n - 1] == "").any():
        line, got = _bad_line(text, n, skip_header)
        raise InputError(
            f"expected {n} whitespace-separated fields ({layout}), found {got}",
            file=path,
            row=line,
        )
    return [frame[c].to_numpy(dtype=object) for c in range(n)]


def _bad_line(text: str, n: int, skip_header: bool) -> tuple[int, int]:
    """The first line (1-based) without exactly n fields; only called on the error path."""
    for number, line in enumerate(text.splitlines(), start=1):
        if skip_header and number == 1:
            continue
        fields = line.split()
        if fields and len(fields) != n:
            return number, len(fields)
    return 0, 0


def _line_of(path: Path, record: int) -> int:
    """The file line of the 0-based non-blank record (error path only)."""
    seen = -1
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            seen += bool(line.strip())
            if seen == record:
                return number
    return 0


def resolve_triples(
    raw: RawTriples,
    item_ids: np.ndarray,
    entity_map: dict[str, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Typed triples: columns head_item, tail_item (int64 item index, -1 = entity), head_entity, tail_entity
    (entity name, "" = item), relation; plus a report of what was dropped and why."""
    report: dict[str, Any] = {"source": raw.source, "read": len(raw)}
    frame = _distinct_triples(raw, report)
    head_item, tail_item = _item_indices(frame, item_ids, entity_map, report)
    keep = ~_unknown_heads(frame, head_item, tail_item, report)
    out = pd.DataFrame(
        {
            "head_item": head_item[keep],
            "tail_item": tail_item[keep],
            "head_entity": np.where(
                head_item[keep] < 0, frame["h"].to_numpy()[keep], ""
            ),
            "tail_entity": np.where(
                tail_item[keep] < 0, frame["t"].to_numpy()[keep], ""
            ),
            "relation": frame["r"].to_numpy()[keep],
        }
    )
    # two entity ids mapped to the same item can make a loop or a repeat only after mapping
    loop = ((out["head_item"] >= 0) & (out["head_item"] == out["tail_item"])).to_numpy()
    out = out[~loop]
    dup = out.duplicated().to_numpy()
    report["self_loops_dropped"] += int(loop.sum())
    report["duplicates_dropped"] += int(dup.sum())
    out = out[~dup].reset_index(drop=True)
    report["kept"] = len(out)
    return out, report


def _distinct_triples(raw: RawTriples, report: dict[str, Any]) -> pd.DataFrame:
    """The raw triples (columns h, r, t) without self-loops and repeats; their counts go into `report`."""
    head = pd.Series(raw.head, dtype=object)
    tail = pd.Series(raw.tail, dtype=object)
    rel = pd.Series(raw.relation, dtype=object)
    loop = (head == tail).to_numpy()
    report["self_loops_dropped"] = int(loop.sum())
    frame = pd.DataFrame({"h": head[~loop], "r": rel[~loop], "t": tail[~loop]})
    dup = frame.duplicated().to_numpy()
    report["duplicates_dropped"] = int(dup.sum())
    return frame[~dup]


def _item_indices(
    frame: pd.DataFrame,
    item_ids: np.ndarray,
    entity_map: dict[str, np.ndarray] | None,
    report: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """The item index of each triple's head and tail (-1: an entity). Without a map heads are the dataset's
    item ids and tails entity names; with one, both are entity ids and the mapped ones are items (the map's
    items unknown to the dataset are counted in `report`)."""
    item_index = pd.Index(item_ids)
    if entity_map is None:
        head_item = item_index.get_indexer(frame["h"]).astype(np.int64)
        return head_item, np.full(len(frame), -1, np.int64)
    mapped = item_index.get_indexer(entity_map["item"])
    report["map_items_unknown"] = int((mapped < 0).sum())
    ent_to_item = pd.Series(
        mapped[mapped >= 0], index=entity_map["entity"][mapped >= 0]
    )
    ent_to_item = ent_to_item[~ent_to_item.index.duplicated()]
    head_item = ent_to_item.reindex(frame["h"]).fillna(-1).to_numpy(np.int64)
    tail_item = ent_to_item.reindex(frame["t"]).fillna(-1).to_numpy(np.int64)
    return head_item, tail_item


def _unknown_heads(
    frame: pd.DataFrame,
    head_item: np.ndarray,
    tail_item: np.ndarray,
    report: dict[str, Any],
) -> np.ndarray:
    """Which triples have an unknown head: not an item, nor the tail of any triple (an entity-entity chain);
    their count and a few examples go into `report`."""
    tails = pd.Index(frame["t"].to_numpy()[tail_item < 0]).unique()
    unknown = (head_item < 0) & ~np.asarray(pd.Index(frame["h"]).isin(tails))
    names = pd.unique(frame["h"].to_numpy()[unknown])
    report.update(
        unknown_heads=len(names),
        unknown_head_examples=[str(x) for x in names[:EXAMPLES]],
        unknown_head_triples_dropped=int(unknown.sum()),
    )
    return unknown


def dataset_triples(triples: pd.DataFrame, item_ids: np.ndarray) -> RawTriples:
    """The dataset's own triples (item index, relation, tail) as raw triples headed by external item ids."""
    items = np.asarray(item_ids, dtype=object)[triples["item"].to_numpy(np.int64)]
    return RawTriples(
        items,
        triples["relation"].astype(str).to_numpy(dtype=object),
        triples["tail"].astype(str).to_numpy(dtype=object),
        "dataset/triples.parquet",
    )
