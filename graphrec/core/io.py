"""Safe, atomic artifact I/O: JSON, safetensors and Parquet written to a temp name, then renamed.

Nothing is pickled. A reader of a half-written workspace sees the old artifact or none, never a torn one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success rename it over `target`, on failure remove it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    usual_mode(tmp, 0o666)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(
    target: str | os.PathLike,
    guard: contextlib.AbstractContextManager | None = None,
    like: str | os.PathLike | None = None,
) -> Iterator[Path]:
    """Yield a temp folder beside `target` (empty, or holding hard links to the files of folder `like`); on
    success it replaces `target` as a whole (`switch_dir`), inside `guard` where given (a workspace's switch
    lock)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    )
    usual_mode(tmp, 0o777)
    try:
        if like is not None and Path(like).is_dir():
            link_files(Path(like), tmp)
        yield tmp
        with guard or contextlib.nullcontext():
            switch_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


LEFTOVER = (
    r"[a-z0-9_]{8}"  # the random part tempfile gives atomic_path / atomic_dir names
)


def remove_leftovers(target: Path) -> None:
    """Delete the temp files and folders a killed atomic_path / atomic_dir left beside `target`
    (".<name>.<random>.tmp" or ".old"); the caller makes sure no live writer of `target` is using them."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{LEFTOVER}\.(?:tmp|old)")
    if not target.parent.is_dir():
        return
    for p in target.parent.iterdir():
        if pattern.fullmatch(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()


def switch_dir(new: Path, target: Path) -> None:
    """Put folder `new` in the place of `target` in one step, so that a reader finds the old folder or the new one,
    never none: an atomic exchange (Linux renameat2 RENAME_EXCHANGE) and then `new`, which now holds the old
    folder, is deleted. Where the file system cannot exchange, two renames: `target` into a ".<name>.*.old"
    folder beside it, then `new` into place; a kill between them leaves `target` missing, and
    `restore_dir(target)` (run by the next locked writer of a workspace) puts the old folder back."""
    if not target.exists():
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)
        return
    old = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
    )
    os.replace(target, old / "x")
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def link_files(src: Path, dst: Path) -> None:
    """Hard-link (copy where links are refused) the plain files of folder `src` into folder `dst`. Safe for
    artifacts: every writer replaces a file by renaming a new one over it, never edits it in place."""
    for p in src.iterdir():
        if p.is_file() and not p.is_symlink():
            try:
                os.link(p, dst / p.name)
            except OSError:
                shutil.copy2(p, dst / p.name)


def restore_dir(target: Path) -> bool:
    """Undo the first of switch_dir's two renames when a kill left `target` missing; True when it did."""
    if target.exists():
        return False
    for old in sorted(target.parent.glob(f".{target.name}.*.old")):
        if (old / "x").is_dir():
            os.replace(old / "x", target)
            return True
    return False


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the platform or file system cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if (
        renameat2(
            _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE
        )
        == 0
    ):
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def usual_mode(path: Path, mode: int) -> None:
    """mkstemp/mkdtemp make private 0600/0700 entries; artifacts get what open()/mkdir() would give."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(mode & ~umask)


def dumps_json(obj: Any) -> str:
    """Strict JSON text: NaN and infinities become null (which every parser reads); numpy values and paths as
    plain ones."""
    return json.dumps(
        _finite(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False
    )


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """`dumps_json`, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(obj) + "\n", encoding="utf-8")


def _finite(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    return o


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            "file not found (run the stage that writes it first)", file=path
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not valid JSON ({e})", file=path) from None
    except RecursionError:
        raise InputError(
            "not JSON graphrec reads: nested too deeply", file=path
        ) from None
    except (IsADirectoryError, NotADirectoryError):
        raise InputError("is not a file", file=path) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(
                "symbolic link loop (too many levels of symbolic links)", file=path
            ) from None
        raise


# (dtype, shape: sizes, or names of sizes that must agree)
TensorSpec = tuple[str, tuple[int | str, ...]]


def check_tensors(
    tensors: dict[str, np.ndarray],
    spec: dict[str, TensorSpec],
    path: str | os.PathLike,
    remedy: str,
    sizes: dict[str, int] | None = None,
) -> dict[str, int]:
    """Check tensors read from `path` against `spec` (name -> (dtype, shape); a name ending in "?" may be
    absent; other tensors are allowed). A named size must be the same wherever it appears, and equal to `sizes`
    where given there. Returns the sizes; else an InputError naming the file, the tensor and `remedy`."""
    sizes = dict(sizes or {})
    for key, (dtype, shape) in spec.items():
        name = key.removesuffix("?")
        if name not in tensors:
            if key.endswith("?"):
                continue
            raise InputError(f"tensor {name!r} is missing: {remedy}", file=path)
        t = tensors[name]
        fits = t.dtype == np.dtype(dtype) and t.ndim == len(shape)
        for want, got in zip(shape, t.shape) if fits else ():
            fits = got == (
                sizes.setdefault(want, got) if isinstance(want, str) else want
            )
            if not fits:
                break
        if not fits:
            # a size not known yet shows its name
            expected = ", ".join(
                str(sizes.get(d, d) if isinstance(d, str) else d) for d in shape
            )
            raise InputError(
                f"tensor {name!r} should be [{expected}] {dtype}, found {list(t.shape)} {t.dtype}: "
                f"{remedy}",
                file=path,
            )
    return sizes


def check_columns(
    frame: pd.DataFrame, spec: dict[str, str], path: str | os.PathLike, remedy: str
) -> None:
    """Check a table read from `path`: spec maps a column to "str", "int" or "float" (a name ending in "?" may
    be absent; other columns are allowed). Else an InputError naming the file, the column and `remedy`."""
    kinds = {
        "str": pd.api.types.is_string_dtype,
        "int": pd.api.types.is_integer_dtype,
        "float": pd.api.types.is_float_dtype,
    }
    words = {"str": "text", "int": "integers", "float": "floating-point numbers"}
    for key, kind in spec.items():
        name = key.removesuffix("?")
        if name not in frame.columns:
            if key.endswith("?"):
                continue
            raise InputError(f"missing: {remedy}", file=path, column=name)
        # the Series, not its dtype: an object column counts as text only if it holds text
        column = frame[name]
        if not kinds[kind](column) or pd.api.types.is_bool_dtype(column):
            raise InputError(
                f"should hold {words[kind]}, found {column.dtype}: {remedy}",
                file=path,
                column=name,
            )


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_tensors(
    path: str | os.PathLike,
    tensors: dict[str, np.ndarray],
    metadata: dict[str, str] | None = None,
) -> None:
    """Save numpy arrays as safetensors, atomically."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    with atomic_path(path) as tmp, native_errors(path):
        save_file(arrays, str(tmp), metadata=metadata)
        # safetensors renames its own 0600 temp file over ours: the umask decides, as for JSON
        usual_mode(tmp, 0o666)


@contextlib.contextmanager
def native_errors(path: str | os.PathLike) -> Iterator[None]:
    """Writers in native code (safetensors, pyarrow) report a full disk or a denied file in their own error types,
    the errno only in the message ("(os error 28)", "[Errno 28]") and without the path: re-raise those as the
    OSError they are, naming `path`, so the one-line message says which file."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    except Exception as e:
        code = carried_errno(e)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from None


def carried_errno(e: Exception) -> int | None:
    """The errno an exception of a native writer names in its message, or None."""
    m = re.search(r"\(os error (\d+)\)|\[Errno (\d+)\]", str(e))
    return int(m.group(1) or m.group(2)) if m else None


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save without pickles, written through Python's file object: numpy's own fast path (ndarray.tofile)
    reports a full disk as "OSError: N requested and M written", without the errno a one-line error needs."""

    class _Stream:  # not a real file to numpy, so it writes in buffered chunks through f.write
        def __init__(self, f: Any) -> None:
            self.write = f.write

    with open(path, "wb") as f:
        np.lib.format.write_array(_Stream(f), np.asarray(array), allow_pickle=False)


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.exists():
        raise InputError(
            "file not found (run the stage that writes it first)", file=path
        )
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise InputError(f"not a readable safetensors file ({e})", file=path) from None


def write_parquet(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp, native_errors(path):
        frame.to_parquet(tmp, index=False)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
