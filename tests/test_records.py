"""graphrec.core.records: the field types are the file's structure; reading checks it, writing round-trips."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphrec.core.errors import InputError
from graphrec.core.records import Record, check


@dataclass(frozen=True)
class Inner(Record):
    width: int
    name: str | None = None


@dataclass(frozen=True)
class Outer(Record):
    ids: list[str]
    weights: dict[str, float]
    widths: tuple[int, ...] = ()
    inner: Inner | None = None
    rows: list[Inner] = field(default_factory=list)
    anything: Any = None
    flag: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    rest: ClassVar[str | None] = "extra"


def _read(tmp_path, value: Any) -> Outer:
    path = tmp_path / "outer.json"
    path.write_text(json.dumps(value))
    return Outer.read(path, "re-run the writer")


def _error(tmp_path, value: Any) -> str:
    with pytest.raises(InputError) as e:
        _read(tmp_path, value)
    message = str(e.value)
    assert "outer.json" in message and "re-run the writer" in message
    assert "\n" not in message
    return message


def test_a_record_is_built_with_its_nested_records_tuples_and_numbers(tmp_path):
    got = _read(
        tmp_path,
        {
            "ids": ["a", "b"],
            "weights": {"x": 2, "y": 0.5},
            "widths": [3, 4],
            "inner": {"width": 7},
            "rows": [{"width": 1, "name": "n"}],
            "newer_key": [1, 2],
        },
    )
    assert got == Outer(
        ids=["a", "b"],
        weights={"x": 2.0, "y": 0.5},
        widths=(3, 4),
        inner=Inner(7),
        rows=[Inner(1, "n")],
        extra={"newer_key": [1, 2]},
    )
    assert isinstance(got.weights["x"], float)  # JSON writes 2.0 as 2


@pytest.mark.parametrize(
    "value, problem",
    [
        ([], "the file should be an object, found a list"),
        ({"weights": {}}, "'ids' is missing"),
        (
            {"ids": ["a", 1], "weights": {}},
            "'ids[1]' should be a string, found an integer",
        ),
        (
            {"ids": [], "weights": {"x": "1"}},
            "'weights.x' should be a number, found a string",
        ),
        (
            {"ids": [], "weights": {"x": True}},
            "'weights.x' should be a number, found true or false",
        ),
        ({"ids": [], "weights": {}, "inner": {}}, "'inner.width' is missing"),
        (
            {"ids": [], "weights": {}, "inner": 3},
            "'inner' should be an object or null, found an integer",
        ),
        (
            {"ids": [], "weights": {}, "rows": [{"width": 1.5}]},
            "'rows[0].width' should be an integer",
        ),
        (
            {"ids": [], "weights": {}, "flag": None},
            "'flag' should be true or false, found null",
        ),
    ],
)
def test_a_file_of_another_structure_stops_with_one_line_naming_the_place(
    tmp_path, value, problem
):
    assert problem in _error(tmp_path, value)


def test_files_that_are_not_json_are_named(tmp_path):
    path = tmp_path / "outer.json"
    path.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        Outer.read(path, "re-run the writer")
    with pytest.raises(InputError, match="not found"):
        Outer.read(tmp_path / "absent.json", "re-run the writer")


def test_check_reads_containers_of_records(tmp_path):
    rows = check([{"width": 2}], list[Inner], tmp_path / "rows.json", "remake")
    assert rows == [Inner(2)]
    with pytest.raises(InputError, match=r"rows.json.*'\[0\]' should be an object"):
        check([1], list[Inner], tmp_path / "rows.json", "remake")


_names = st.text(min_size=1, max_size=5)
_inner = st.builds(Inner, st.integers(-5, 5), st.none() | _names)
_outer = st.builds(
    Outer,
    ids=st.lists(_names, max_size=3),
    weights=st.dictionaries(_names, st.floats(-1e6, 1e6), max_size=3),
    widths=st.lists(st.integers(0, 9), max_size=3).map(tuple),
    inner=st.none() | _inner,
    rows=st.lists(_inner, max_size=2),
    flag=st.booleans(),
    extra=st.dictionaries(st.sampled_from(["x1", "x2"]), st.integers(), max_size=2),
)


@given(_outer)
def test_what_a_record_writes_reads_back_as_the_same_record(record):
    text = json.dumps(record.to_json())
    assert check(json.loads(text), Outer, "outer.json", "remake") == record
