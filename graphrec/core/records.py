"""Typed JSON records: each JSON file graphrec writes is a dataclass typed as the file's structure.

Each field's type is the structure of the key it names. A record is read with its structure checked
against those types before it is built, so a well-formed file that holds the wrong thing stops with one
line naming the file, the place in it and what rewrites it, instead of a KeyError or TypeError later::

    @dataclass(frozen=True)
    class Ids(Record):
        users: list[str]
        items: list[str]

    ids = Ids.read(path, remedy="re-run `graphrec data import`")
    ids.write(path)

Field types map to JSON as follows: ``str``, ``int``, ``float`` (an integer is accepted: JSON writes 2.0 as
2; neither number type takes true/false), ``bool``; ``X | None`` (null); ``list[X]`` and ``tuple[X, ...]``
(a JSON list, built as a list or a tuple); ``dict[str, X]`` (an object); another ``Record`` (a nested
object); ``Any`` (any value). A field with a default may be absent from the file, and a ``None`` field is
left out when written. Keys a record does not name are allowed (a newer writer may add some); a record
whose class sets ``rest`` to one of its ``dict`` fields keeps them there and writes them back beside its
own keys.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from graphrec.core.errors import InputError
from graphrec.core.io import read_json, write_json

R = TypeVar("R", bound="Record")


class Record:
    """Base of the typed JSON records (frozen dataclasses); see the module docstring."""

    rest: ClassVar[str | None] = (
        None  # the dict field that keeps the keys the record does not name
    )

    @classmethod
    def read(cls: type[R], path: str | os.PathLike, remedy: str) -> R:
        """The record in the JSON file `path`.

        Args:
            path: the file.
            remedy: what rewrites the file, for the error line (e.g. "re-run `graphrec train`").

        Returns:
            The record, its nested records and tuples built.

        Raises:
            InputError: the file is missing, not JSON, or holds another structure (one line naming it).
        """
        return cls.from_json(read_json(path), path, remedy)

    @classmethod
    def from_json(cls: type[R], value: Any, path: str | os.PathLike, remedy: str) -> R:
        """The record of `value` (parsed from the JSON file `path`), checked as `read` checks it."""
        return check(value, cls, path, remedy)

    @classmethod
    def keys(cls) -> list[str]:
        """The JSON keys the record names (those of its fields, `rest` aside)."""
        return list(_fields(cls))

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object it is written as (nested records as objects, tuples as lists)."""
        return _plain(self)

    def write(self, path: str | os.PathLike) -> None:
        """Write the record to `path` atomically (temporary name, then rename)."""
        write_json(path, self.to_json())


def check(value: Any, kind: Any, path: str | os.PathLike, remedy: str) -> Any:
    """`value` built as `kind` when it has that structure.

    Args:
        value: what was read from the JSON file `path`.
        kind: a Record class or a type such as ``list[Row]``.
        path: the file, for the error line.
        remedy: what rewrites the file, for the error line.

    Returns:
        The value, its records and tuples built.

    Raises:
        InputError: `value` has another structure: one line naming the file and the place in it.
    """
    problem = misfit(value, kind)
    if problem:
        raise InputError(f"{problem}: {remedy}", file=Path(path))
    return _build(value, kind)


def misfit(value: Any, kind: Any, at: str = "") -> str | None:
    """What keeps `value` from having the structure `kind`, or None when it has it.

    Args:
        value: a value parsed from JSON.
        kind: the structure it should have (see the module docstring).
        at: where `value` is found: "" for the whole file, else a place like schema.split.

    Returns:
        The first problem in words (naming its place), or None.
    """
    if kind is Any:
        return None
    if _is_union(kind):
        return _union_misfit(value, typing.get_args(kind), at)
    if not _is_kind(value, kind):
        return f"{_place(at)} should be {_kind_name(kind)}, found {_found(value)}"
    if _origin(kind) in (list, tuple):
        return _items_misfit(value, _arg(kind, 0), at)
    if _origin(kind) is dict:
        inner = _arg(kind, 1)
        return _first(
            misfit(v, inner, f"{at}.{k}".lstrip(".")) for k, v in value.items()
        )
    if _is_record(kind):
        return _fields_misfit(value, kind, at)
    return None


def _union_misfit(value: Any, options: tuple[Any, ...], at: str) -> str | None:
    if any(misfit(value, option, at) is None for option in options):
        return None
    # the option of the value's own kind says best what is wrong inside it
    same_kind = [option for option in options if _is_kind(value, option)]
    if len(same_kind) == 1:
        return misfit(value, same_kind[0], at)
    names = " or ".join(map(_kind_name, options))
    return f"{_place(at)} should be {names}, found {_found(value)}"


def _items_misfit(value: list[Any], item: Any, at: str) -> str | None:
    plain = _PLAIN.get(item)
    if plain is not None and {type(v) for v in value} <= plain:
        return None  # the usual case (id lists of a million strings), without an item-by-item walk
    return _first(misfit(v, item, f"{at}[{i}]") for i, v in enumerate(value))


def _fields_misfit(value: dict[str, Any], record: type[Record], at: str) -> str | None:
    for name, (kind, required) in _fields(record).items():
        inner = f"{at}.{name}".lstrip(".")
        if name not in value:
            if required:
                return f"{_place(inner)} is missing"
            continue
        if problem := misfit(value[name], kind, inner):
            return problem
    return None


def _first(problems: typing.Iterable[str | None]) -> str | None:
    return next((p for p in problems if p), None)


def _build(value: Any, kind: Any) -> Any:
    """`value`, checked to have the structure `kind`, as that kind: records and tuples built."""
    if value is None or kind is Any:
        return value
    if _is_union(kind):
        # the value was checked: the one option of its JSON kind is it (re-check only between same-kind options)
        options = [o for o in typing.get_args(kind) if _is_kind(value, o)]
        if len(options) > 1:
            options = [o for o in options if misfit(value, o) is None]
        return _build(value, options[0])
    origin = _origin(kind)
    if origin in (list, tuple):
        item = _arg(kind, 0)
        if item in _PLAIN and item is not float or item is Any:
            return value if origin is list else tuple(value)
        return origin(_build(v, item) for v in value)
    if origin is dict:
        return {k: _build(v, _arg(kind, 1)) for k, v in value.items()}
    if _is_record(kind):
        return _build_record(value, kind)
    return float(value) if kind is float else value


def _build_record(value: dict[str, Any], record: type[Record]) -> Record:
    fields = _fields(record)
    known = {
        name: _build(value[name], kind)
        for name, (kind, _) in fields.items()
        if name in value
    }
    if record.rest is not None:
        known[record.rest] = {k: v for k, v in value.items() if k not in fields}
    return record(**known)


def _plain(value: Any) -> Any:
    """`value` as JSON-ready values: records as objects (None fields left out), tuples as lists."""
    if isinstance(value, Record):
        out = {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)  # type: ignore[arg-type]
            if f.name != value.rest and getattr(value, f.name) is not None
        }
        return {**out, **(getattr(value, value.rest) if value.rest else {})}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# a record class's fields, resolved once
_FIELDS: dict[type, dict[str, tuple[Any, bool]]] = {}


def _fields(record: type[Record]) -> dict[str, tuple[Any, bool]]:
    """Each field of a record (its `rest` field aside) by name: its type, and whether it is required."""
    if record not in _FIELDS:
        hints = typing.get_type_hints(record)
        _FIELDS[record] = {
            f.name: (hints[f.name], _required(f))
            for f in dataclasses.fields(record)  # type: ignore[arg-type]
            if f.name != record.rest
        }
    return _FIELDS[record]


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _origin(kind: Any) -> Any:
    return typing.get_origin(kind) or (kind if kind in (list, tuple, dict) else None)


def _arg(kind: Any, position: int) -> Any:
    """The type of a list's items (0) or a dict's values (1); Any for a bare `list` or `dict`."""
    args = typing.get_args(kind)
    return args[position] if args else Any


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (Union, types.UnionType)


def _is_record(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Record)


_NONE = type(None)
_PLAIN: dict[Any, set[type]] = {
    str: {str},
    int: {int},
    float: {int, float},
    bool: {bool},
    _NONE: {_NONE},
}


def _is_kind(value: Any, kind: Any) -> bool:
    """Whether `value` is of the JSON kind of `kind` (its contents aside)."""
    if kind is None or kind is _NONE:
        return value is None
    if _origin(kind) in (list, tuple):
        return isinstance(value, list)
    if _origin(kind) is dict or _is_record(kind):
        return isinstance(value, dict)
    if kind in (int, float):
        number = isinstance(value, int if kind is int else (int, float))
        return number and not isinstance(value, bool)
    return kind is Any or isinstance(value, kind)


def _kind_name(kind: Any) -> str:
    if _origin(kind) in (list, tuple):
        return "a list"
    if _origin(kind) is dict or _is_record(kind):
        return "an object"
    return _KIND_NAMES.get(_NONE if kind is None else kind, "a value")


_KIND_NAMES: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
    _NONE: "null",
}


def _place(at: str) -> str:
    return f"'{at}'" if at else "the file"


def _found(value: Any) -> str:
    if isinstance(value, float):
        return "a number"
    return _KIND_NAMES.get(type(value), type(value).__name__)
