"""Read user tables (CSV/TSV/Parquet) as strings and check them, raising one-line InputErrors.

Every cell is read as text so ids keep their spelling ("007" stays "007", "1" never becomes 1.0). The one id
rule (`normalize_id`, applied wherever an id enters: files, the API, recommend's id lists): Unicode NFC, then
surrounding whitespace removed (NBSP included); ids holding control, bidi or invisible format characters
(zero-width space, word joiner, ...) are refused, since they would look like another id. So "1", " 1", "1 " and
"1<NBSP>" are one id, and "café" is one id whether written composed (NFC) or decomposed (NFD).
Row numbers in messages are file lines for CSV (header = line 1) and 1-based rows for Parquet.
Parquet list-of-strings cells become the `|`-joined text a multi-valued CSV cell has; other nested cells
(structs, maps, lists of numbers) are refused.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

PARQUET = (".parquet", ".pq")
# Separates the values of a multi-valued cell (`Drama|Comedy`); Schema.sep records it in the dataset.
MULTI_SEP = "|"
# Ids end up in terminals, logs, HTML reports and CSV exports: C0/C1 control characters (newline, tab, ANSI
# escape) and the Unicode bidi overrides/isolates (which reorder the text shown around them) are refused.
ID_FORBIDDEN = "[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"


def read_table(
    path: str | os.PathLike, required: tuple[str, ...] = (), encoding: str = "utf-8"
) -> pd.DataFrame:
    """Read a table of strings; missing cells are "". Raises InputError on anything unreadable."""
    path = Path(path)
    if not path.exists():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a loop so
            raise InputError(
                "symbolic link loop (too many levels of symbolic links)", file=path
            ) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise InputError(
                    "symbolic link loop (too many levels of symbolic links)", file=path
                ) from None
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("is a folder, expected a file", file=path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", file=path)
    if path.suffix.lower() in PARQUET:
        frame = _read_parquet(path, required)
        frame.attrs["row_word"], frame.attrs["row_offset"] = "row", 1
    else:
        frame = _read_csv(path, encoding)
        frame.attrs["row_word"], frame.attrs["row_offset"] = "line", 2
    frame.attrs["source"] = str(path)
    if len(frame) == 0:
        raise InputError("has a header but no rows", file=path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(
            f"missing required column (found: {', '.join(map(str, frame.columns))})",
            file=path,
            column=missing[0],
        )
    return frame


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    """A CSV (TSV by its .tsv suffix) file's cells as strings, under the header as written (names stripped)."""
    text = _decoded_text(path, encoding)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    frame = _parsed_csv(text, sep, path)
    # pandas renames a repeated header name to "name.1"; check the header as written.
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0]), delimiter=sep))
    names = header if len(header) == frame.shape[1] else frame.columns
    frame.columns = [str(c).strip() for c in names]
    _check_header(frame, path)
    return frame


def _decoded_text(path: Path, encoding: str) -> str:
    """The file's text in `encoding` without a byte-order mark; binary data, bytes that do not decode, an empty
    file and line breaks lost in decoding are errors naming the line where known."""
    raw = path.read_bytes()
    wide = (
        encoding.lower()
        .replace("_", "-")
        .startswith(("utf-16", "utf16", "utf-32", "utf32"))
    )
    # decodes as "valid" text, then poisons headers and messages
    if b"\0" in raw and not wide:
        raise InputError(
            "binary data (NUL byte), expected CSV/TSV text or a .parquet file",
            file=path,
            row=raw[: raw.index(b"\0")].count(b"\n") + 1,
        )
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(
            f"not valid {encoding} text at byte {e.start} (pass the file's encoding, e.g. latin-1)",
            file=path,
            row=line,
        ) from None
    except LookupError:
        raise InputError(f"unknown text encoding {encoding!r}", file=path) from None
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise InputError("file is empty", file=path)
    # the bytes have lines, the decoded text none
    if "\n" not in text and b"\n" in raw.rstrip(b"\r\n"):
        raise InputError(
            f"not {encoding} text: its line breaks do not decode as {encoding} (pass the file's "
            "encoding, e.g. --encoding utf-8)",
            file=path,
        )
    return text


def _parsed_csv(text: str, sep: str, path: Path) -> pd.DataFrame:
    """`text` parsed as CSV cells of strings (none read as NaN); malformed CSV is an error naming its line."""
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            quoting=csv.QUOTE_MINIMAL,
            skipinitialspace=False,
        )
    except pd.errors.ParserError as e:
        raise _parser_error(str(e), path) from None
    except pd.errors.EmptyDataError:
        raise InputError("file is empty", file=path) from None
    # pandas silently turns surplus leading fields into an index
    if not isinstance(frame.index, pd.RangeIndex):
        raise InputError(
            "malformed CSV: the first data row has more fields than the header",
            file=path,
            row=2,
        )
    return frame


def _parser_error(message: str, path: Path) -> InputError:
    """pandas' tokenizer messages, restated with the file line they are about."""
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if fields:
        expected, line, saw = map(int, fields.groups())
        return InputError(
            f"malformed CSV: {saw} fields where the header has {expected}",
            file=path,
            row=line,
        )
    quote = re.search(r"EOF inside string starting at row (\d+)", message)
    if quote:  # pandas counts records from 0 with the header as record 0
        return InputError(
            "malformed CSV: a quoted field is never closed (unbalanced '\"')",
            file=path,
            row=int(quote.group(1)) + 1,
        )
    return InputError(f"malformed CSV: {' '.join(message.split())}", file=path)


def _read_parquet(path: Path, single: tuple[str, ...]) -> pd.DataFrame:
    """Parquet as strings; `single` columns (ids, numbers) may not hold lists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        kinds = {str(f.name).strip(): f.type for f in pq.read_schema(path)}
        frame = pd.read_parquet(path)
    # pyarrow raises ArrowInvalid, OSError, ... for corrupt files
    except Exception as e:
        raise InputError(
            f"not a readable Parquet file ({type(e).__name__})", file=path
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_header(frame, path)
    out = pd.DataFrame(index=frame.index)
    for c in frame.columns:
        col = frame[c]
        # nested Arrow type: str() would store "['Drama' 'Comedy']"
        if c in kinds and pa.types.is_nested(kinds[c]):
            out[c] = _nested_cells(col, kinds[c], path, c, c in single)
            continue
        if c in kinds and (
            pa.types.is_binary(kinds[c]) or pa.types.is_large_binary(kinds[c])
        ):
            col = _text_cells(col, path, c)
        # Whole floats are written as integers ("7", not "7.0"); beyond int64 they stay floats, so that the
        # number checks see them (a cast would wrap 1e30 to INT64_MIN).
        if (
            pd.api.types.is_float_dtype(col)
            and col.notna().all()
            and (col % 1 == 0).all()
            and (col.abs() < 2.0**63).all()
        ):
            col = col.astype(np.int64)
        out[c] = col.astype(object).where(col.notna(), "").astype(str)
    out.attrs = frame.attrs
    return out.reset_index(drop=True)


def _text_cells(col: pd.Series, path: Path, column: str) -> pd.Series:
    """A binary column's cells as UTF-8 text; a cell that is not valid UTF-8 is an error naming its row."""

    def text(pos: int, cell: object) -> object:
        if not isinstance(cell, bytes):
            return cell
        try:
            return cell.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(
                f"not valid UTF-8 text: {cell[:40]!r}",
                file=path,
                row=f"row {pos + 1}",
                column=column,
            ) from None

    return pd.Series(
        [text(pos, cell) for pos, cell in enumerate(col.to_numpy(dtype=object))],
        index=col.index,
        dtype=object,
    )


def _nested_cells(
    col: pd.Series, kind: pa.DataType, path: Path, column: str, single: bool
) -> pd.Series:
    """A list-of-strings column as `|`-joined text (null elements skipped); any other nested type is an error
    at its first non-null cell (an all-null column is simply empty)."""
    import pyarrow as pa

    cells = col.to_numpy(dtype=object)
    first = next((pos for pos, cell in enumerate(cells) if cell is not None), None)
    if first is None:
        return pd.Series("", index=col.index, dtype=object)
    value_type = getattr(kind, "value_type", None)
    is_list = (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
    )
    strings = is_list and (
        pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
    )
    if not strings or single:
        if single:
            problem = "a list where one value is expected (lists are for multi-valued attribute columns)"
        elif is_list:
            problem = f"list of {value_type}: list cells must hold strings"
        else:
            problem = f"{str(kind).split('<')[0]} cells are not supported (give plain values, or a list of strings)"
        raise InputError(problem, file=path, row=f"row {first + 1}", column=column)
    return pd.Series(_joined_lists(cells, path, column), index=col.index, dtype=object)


def _joined_lists(cells: np.ndarray, path: Path, column: str) -> list[str]:
    """Each list-of-strings cell joined by MULTI_SEP (null cells and elements skipped); an element holding the
    separator is an error, since joining would split it into several values."""
    joined = []
    for pos, cell in enumerate(cells):
        values = [] if cell is None else [v for v in cell if v is not None]
        clash = next((v for v in values if MULTI_SEP in v), None)
        if clash is not None:
            raise InputError(
                f"list element {clash!r} contains {MULTI_SEP!r}, the multi-value separator",
                file=path,
                row=f"row {pos + 1}",
                column=column,
            )
        joined.append(MULTI_SEP.join(values))
    return joined


def _check_header(frame: pd.DataFrame, path: Path) -> None:
    cols = list(frame.columns)
    blank = [i for i, c in enumerate(cols) if not c or c.startswith("Unnamed:")]
    if blank:
        raise InputError(
            f"header has a blank column name at position {blank[0] + 1}", file=path
        )
    dup = pd.Index(cols)[pd.Index(cols).duplicated()]
    if len(dup):
        raise InputError(
            "column name appears twice in the header", file=path, column=dup[0]
        )


def row_label(frame: pd.DataFrame, position: int) -> str:
    """'line 7' / 'row 6' for the 0-based data row `position` of a table read by read_table."""
    return f"{frame.attrs.get('row_word', 'row')} {position + frame.attrs.get('row_offset', 1)}"


def fail_at(
    frame: pd.DataFrame, position: int, column: str | None, message: str
) -> InputError:
    return InputError(
        message,
        file=frame.attrs.get("source"),
        row=row_label(frame, position),
        column=column,
    )


def normalize_id(value: object) -> str:
    """An id as graphrec stores and looks it up: NFC, surrounding whitespace removed (see the module doc)."""
    return unicodedata.normalize("NFC", str(value)).strip()


def normalize_ids(values: pd.Series | np.ndarray) -> pd.Series:
    """`normalize_id` over a column, each distinct value once (a file repeats each id many times)."""
    raw = pd.Series(values, dtype=object).astype(str)
    distinct = pd.unique(raw)
    return raw.map(
        pd.Series([normalize_id(v) for v in distinct], index=distinct, dtype=object)
    )


def invisible(value: str) -> bool:
    """Whether an id holds a format character (Unicode category Cf: zero-width space, joiners, soft hyphen...)."""
    return any(unicodedata.category(ch) == "Cf" for ch in value)


def id_problem(ids: pd.Series) -> tuple[int, str] | None:
    """The first (0-based) position of a normalised id the rule refuses, and why: a control or bidi character,
    or an invisible format character; None when every id is fine. Shared by every reader of ids (tables,
    knowledge triples, entity maps), so that one rule holds wherever an id enters."""
    ids = pd.Series(ids, dtype=object).reset_index(drop=True)
    unsafe = np.flatnonzero(
        ids.str.contains(ID_FORBIDDEN, regex=True).to_numpy(dtype=bool)
    )
    if len(unsafe):
        return int(unsafe[0]), (
            f"id {ids.iloc[unsafe[0]]!r} contains a control character or a Unicode bidi "
            "override/isolate"
        )
    hidden = {v for v in pd.unique(ids) if invisible(v)}
    if hidden:
        at = int(np.flatnonzero(ids.isin(hidden).to_numpy())[0])
        return at, (
            f"id {ids.iloc[at]!r} contains an invisible format character (such as a zero-width space), "
            "which would make it look like another id"
        )
    return None


def check_ids(frame: pd.DataFrame, column: str, unique: bool) -> None:
    """Ids (`normalize_id`: NFC, trimmed) must be non-blank, free of control, bidi and invisible format
    characters, and unique when `unique`."""
    ids = normalize_ids(frame[column]).set_axis(frame.index)
    blank = np.flatnonzero(
        (ids == "").to_numpy()
        | ids.str.lower().isin(["nan", "none", "null"]).to_numpy()
    )
    if len(blank):
        raise fail_at(frame, int(blank[0]), column, "blank or NaN id")
    problem = id_problem(ids)
    if problem:
        at, why = problem
        raise fail_at(frame, at, column, why)
    if unique:
        dup = np.flatnonzero(ids.duplicated().to_numpy())
        if len(dup):
            raise fail_at(
                frame, int(dup[0]), column, f"duplicate id {ids.iloc[dup[0]]!r}"
            )
    frame[column] = ids


def numeric_column(
    frame: pd.DataFrame, column: str, integer: bool = False
) -> np.ndarray:
    """Parse a column as numbers; blank, NaN or non-numeric cells are an error naming the row."""
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce")
    bad = np.flatnonzero(
        values.isna().to_numpy()
        | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    )
    if len(bad):
        raise fail_at(
            frame,
            int(bad[0]),
            column,
            f"not a finite number: {frame[column].iloc[bad[0]]!r}",
        )
    arr = values.to_numpy(dtype=np.float64)
    if integer:
        if (arr % 1 != 0).any():
            at = int(np.flatnonzero(arr % 1 != 0)[0])
            raise fail_at(
                frame, at, column, f"not a whole number: {frame[column].iloc[at]!r}"
            )
        return arr.astype(np.int64)
    return arr


def weight_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Interaction weights (a `weight` or `rating` column) as float32: finite there and not negative.

    0 is allowed here (the callers drop those rows: a 0-weight interaction is no interaction)."""
    raw = numeric_column(frame, column)
    with np.errstate(over="ignore"):  # overflow is reported below, naming the row
        weight = raw.astype(np.float32)
    bad = np.flatnonzero(np.isinf(weight))
    if len(bad):
        raise fail_at(
            frame,
            int(bad[0]),
            column,
            f"weight {frame[column].iloc[bad[0]]!r} overflows float32 "
            f"(largest {float(np.finfo(np.float32).max):.4g})",
        )
    bad = np.flatnonzero(weight < 0)
    if len(bad):
        raise fail_at(
            frame,
            int(bad[0]),
            column,
            f"negative weight {frame[column].iloc[bad[0]]!r}: interaction "
            "weights must be positive (rows with weight 0 are dropped)",
        )
    return weight


def timestamp_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Timestamps as int64 (fractions floored); |t| >= 2^63 is an error naming the row, at either end alike (in
    float64 both INT64_MIN and anything just below it round to -2^63, so that end is refused whole, as the top)."""
    stamp = np.floor(numeric_column(frame, column))
    # the cast would wrap them to INT64_MIN
    bad = np.flatnonzero(np.abs(stamp) >= 2.0**63)
    if len(bad):
        raise fail_at(
            frame,
            int(bad[0]),
            column,
            f"timestamp {frame[column].iloc[bad[0]]!r} is outside the int64 range",
        )
    return stamp.astype(np.int64)
