"""Item features computed elsewhere (e.g. MMRec's image_feat.npy / text_feat.npy), keyed by item id.

Accepted files:
  FILE.npy      float array [rows, dim] (never unpickled) with the item id of each row in an id list:
                the file given after a comma (NAME=FEATS.npy,IDS.txt), else FEATS.ids.txt beside it;
                one id per line (.txt) or a JSON list (.json)
  FILE.parquet  an `item_id` column plus one list/array column, or plus numeric columns (one per dimension)
Items of the dataset missing from the file get mask 0; ids the dataset does not know are counted and listed.
A row is a vector or an error: NaN, infinity, a value beyond float32's range or an empty (null) vector is refused
with the file, line and item, never read as "absent" (leaving the item out of the file says that, unambiguously).
"""

from __future__ import annotations

import errno
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError
from graphrec.core.io import file_sha256, read_json

if TYPE_CHECKING:
    import pyarrow as pa

NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def parse_spec(spec: str) -> tuple[str, Path, Path | None]:
    """'NAME=FILE[,IDS]' -> (name, file, ids file or None)."""
    name, eq, rest = spec.partition("=")
    name = name.strip().lower()
    if not eq or not rest or not NAME.match(name):
        raise InputError(
            f"--precomputed {spec!r}: expected NAME=FILE[,IDS_FILE] with NAME of a-z, 0-9, _"
        )
    feats, _, ids = rest.partition(",")
    return name, Path(feats.strip()), Path(ids.strip()) if ids.strip() else None


def read_precomputed(
    path: str | Path,
    item_ids: Sequence[str],
    ids_path: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(values [n_items, dim] in dataset order, mask [n_items], info incl. the file hash and unknown ids)."""
    path = regular_file(Path(path), "precomputed features file")
    if path.suffix == ".npy":
        ids, vectors, ids_file = _read_npy(path, ids_path)
    elif path.suffix == ".parquet":
        ids, vectors = _read_parquet(path)
        ids_file = None
    else:
        raise InputError(
            "precomputed features must be .npy (with an id list) or .parquet", file=path
        )
    _check_vectors(vectors, ids, path)
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise InputError(
            f"item id {ids[int(np.argmax(dup))]!r} appears twice", file=ids_file or path
        )
    pos = pd.Index(ids).get_indexer(pd.Index(list(item_ids)))
    mask = pos >= 0
    values = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
    values[mask] = vectors[pos[mask]]
    unknown = ids[~pd.Index(ids).isin(list(item_ids))]
    info = {
        "file": str(path.resolve()),
        "file_sha256": file_sha256(path),
        "ids_file": str(Path(ids_file).resolve()) if ids_file else None,
        "rows": int(len(ids)),
        "unknown_ids": int(len(unknown)),
        "unknown_id_examples": [str(u) for u in unknown[:10]],
    }
    return values, mask, info


def regular_file(path: Path, what: str) -> Path:
    """`path` when it is a regular file once symlinks are resolved, else one line with the real cause: a loop,
    a folder or a device is not reported as "not found", and a FIFO or /dev/zero is never opened (it would block
    or never end)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=path) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(
                f"{what}: symbolic link loop (too many levels of symbolic links)",
                file=path,
            ) from None
        raise InputError(f"{what} cannot be read ({e.strerror})", file=path) from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{what} is a folder, not a file", file=path)
    if not stat.S_ISREG(mode):
        raise InputError(
            f"{what} is not a regular file (a device, FIFO or socket is never read)",
            file=path,
        )
    return path


def _check_vectors(vectors: np.ndarray, ids: np.ndarray, path: Path) -> None:
    """Vectors with at least one dimension, every value finite in float32 (see the module doc)."""
    if vectors.shape[1] == 0:
        raise InputError("the vectors have no dimensions (0 columns)", file=path)
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        more = f" ({len(bad)} rows in all)" if len(bad) > 1 else ""
        raise InputError(
            f"non-finite value (NaN, infinity or beyond float32's range) in the vector of item "
            f"{ids[bad[0]]!r}{more}; leave an item out of the file to give it no vector",
            file=path,
            row=int(bad[0]) + 1,
        )


def _numeric(dtype: np.dtype) -> bool:
    """Integers and floats; complex numbers and booleans are not vectors graphrec would read the user's way."""
    return dtype.kind in "iuf"


def _float32(values: np.ndarray) -> np.ndarray:
    """float32 copy; a value beyond its range becomes infinity, which _check_vectors then names (no warning)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(np.float32)


def _read_npy(
    path: Path, ids_path: str | Path | None
) -> tuple[np.ndarray, np.ndarray, Path]:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputError(f"not a plain numeric .npy array ({e})", file=path) from None
    if arr.ndim != 2 or not _numeric(arr.dtype):
        raise InputError(
            f"expected a 2-D numeric array, got shape {arr.shape} of {arr.dtype}",
            file=path,
        )
    ids_file = Path(ids_path) if ids_path else path.with_suffix(".ids.txt")
    if not ids_path and not ids_file.exists() and not ids_file.is_symlink():
        raise InputError(
            "no item id list for this .npy: write one id per row to "
            f"{path.with_suffix('.ids.txt').name} or pass NAME=FILE.npy,IDS_FILE",
            file=path,
        )
    regular_file(ids_file, "item id list")
    if ids_file.suffix == ".json":
        ids = read_json(ids_file)
        if not isinstance(ids, list):
            raise InputError("expected a JSON list of item ids", file=ids_file)
        ids = [str(i) for i in ids]
    else:
        try:
            text = ids_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(
                f"item id list is not UTF-8 text (byte {e.start})", file=ids_file
            ) from None
        ids = [line.strip() for line in text.splitlines() if line.strip()]
    if len(ids) != arr.shape[0]:
        raise InputError(
            f"{len(ids)} ids for {arr.shape[0]} rows of {path.name}", file=ids_file
        )
    return np.asarray(ids, dtype=object), _float32(arr), ids_file


def _read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 vectors) of an `item_id` column plus one list column or plus numeric columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise InputError(f"not a readable Parquet file ({e})", file=path) from None
    ids = _parquet_ids(table, path)
    rest = [c for c in table.column_names if c != "item_id"]
    if not rest:
        raise InputError("no vector columns beside item_id", file=path)
    first = table.column(rest[0]).combine_chunks()
    if len(rest) == 1 and (
        pa.types.is_list(first.type)
        or pa.types.is_large_list(first.type)
        or pa.types.is_fixed_size_list(first.type)
    ):
        return ids, _list_column_vectors(first, len(ids), path, rest[0])
    return ids, _numeric_columns_vectors(table, rest, path)


def _parquet_ids(table: pa.Table, path: Path) -> np.ndarray:
    """The `item_id` column as strings; a missing column or an empty id is an error naming it."""
    import pyarrow as pa

    if "item_id" not in table.column_names:
        raise InputError("missing required column", file=path, column="item_id")
    id_column = table.column("item_id")
    if id_column.null_count:
        row = (
            int(np.flatnonzero(id_column.is_null().to_numpy(zero_copy_only=False))[0])
            + 1
        )
        raise InputError("empty item id", file=path, row=row, column="item_id")
    return np.asarray(id_column.cast(pa.string()).to_pylist(), dtype=object)


def _list_column_vectors(
    vectors: pa.Array, n_rows: int, path: Path, column: str
) -> np.ndarray:
    """[n_rows, dim] float32 of a list column whose every row is a numeric vector as long as the first."""
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(vectors), -1).to_numpy(
        zero_copy_only=False
    )
    odd = (
        np.flatnonzero((lengths != lengths[0]) | (lengths <= 0))
        if len(lengths)
        else np.zeros(0, np.int64)
    )
    if len(odd):
        raise InputError(
            "vector is empty or of another length than the first row's",
            file=path,
            row=int(odd[0]) + 1,
            column=column,
        )
    flat = vectors.flatten().to_numpy(zero_copy_only=False)
    if not _numeric(flat.dtype):
        raise InputError("vector column is not numeric", file=path, column=column)
    return _float32(flat).reshape(n_rows, int(lengths[0]) if n_rows else 0)


def _numeric_columns_vectors(
    table: pa.Table, columns: list[str], path: Path
) -> np.ndarray:
    """[rows, len(columns)] float32 of numeric columns, one per dimension."""
    frame = table.select(columns).to_pandas()
    non_numeric = [c for c in columns if not _numeric(frame[c].dtype)]
    if non_numeric:
        raise InputError(
            "vector column is not numeric", file=path, column=str(non_numeric[0])
        )
    return _float32(frame.to_numpy(dtype=np.float64))
