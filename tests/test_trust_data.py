"""Issue 20, the data layer: what the first data-trust pass (tests/test_trust.py) left open.

Each CLI case runs `python -m graphrec` in a subprocess, as tests/test_bad_input.py does: exit code 2, exactly one
line on stderr naming the file/flag and what is wrong, no traceback, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_movielens import write_mini_100k
from test_trust import cli, one_line_error

from graphrec.core.errors import InputError
from graphrec.kg.triples import read_entity_map, read_triples


# -- item 8: every data writer refuses a workspace path that is a regular file ---------------------------------
def test_movielens_given_a_file_as_its_workspace_is_one_line(tmp_path):
    """`data movielens` was the one data writer without the workspace lock: a file as --out got a FileExistsError
    traceback after the whole load (and two imports into one workspace were not kept apart)."""
    mini = write_mini_100k(tmp_path / "ml")
    (tmp_path / "file").write_text("mine")
    one_line_error(
        cli("data", "movielens", str(mini), "--out", str(tmp_path / "file")),
        "file",
        "is not a folder",
    )
    assert (tmp_path / "file").read_text() == "mine"
    assert not list(tmp_path.glob(".file.*"))  # no stage temp folder left beside it


# -- item 10: messages name the real cause, through the CLI -----------------------------------------------------
def _id_as_attribute(d: Path) -> list[str]:
    (d / "items.csv").write_text("item_id,title\na,A\nb,B\n")
    return ["--items", str(d / "items.csv"), "--attribute-columns", "item_id"]


def _utf16_on_utf8(d: Path) -> list[str]:
    return ["--encoding", "utf-16"]


def _items_symlink_loop(d: Path) -> list[str]:
    (d / "loop.csv").symlink_to(d / "loop.csv")
    return ["--items", str(d / "loop.csv")]


def _parquet_bytes_ids(d: Path) -> list[str]:
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([b"u", b"\xff\xfe"], pa.binary()),
                "item_id": ["a", "b"],
            }
        ),
        d / "bad.parquet",
    )
    return ["--interactions", str(d / "bad.parquet")]


@pytest.mark.parametrize(
    "make, fragments",
    [
        (
            _id_as_attribute,
            [
                "items.csv",
                "column 'item_id'",
                "the id column cannot be one of the attribute columns",
            ],
        ),
        (_utf16_on_utf8, ["inter.csv", "not utf-16 text"]),
        (_items_symlink_loop, ["loop.csv", "symbolic link loop"]),
        (
            _parquet_bytes_ids,
            ["bad.parquet", "row 2", "column 'user_id'", "not valid UTF-8"],
        ),
    ],
)
def test_cli_data_errors_name_the_real_cause(tmp_path, make, fragments):
    (tmp_path / "inter.csv").write_text("user_id,item_id\nu,a\nv,b\n")
    args = ["data", "import", "--interactions", str(tmp_path / "inter.csv")]
    args += make(tmp_path)  # a later --interactions wins
    one_line_error(cli(*args, "--out", str(tmp_path / "ws")), *fragments)
    assert not (tmp_path / "ws").exists()


# -- item 9: the one id rule holds for knowledge triples and entity maps too ------------------------------------
@pytest.mark.parametrize(
    "name, body, where",
    [
        ("kg.txt", "i1 genre g1\ni2\u200b genre g1\n", "kg.txt: line 2"),
        (
            "kg.tsv",
            "head\trelation\ttail\ni1\tgenre\tg1\ni2\tgenre\tg\u200b1\n",
            "kg.tsv: line 3: column 'tail'",
        ),
        (
            "kg.csv",
            "head,relation,tail\ni1,gen\u2060re,g1\n",
            "kg.csv: line 2: column 'relation'",
        ),
    ],
)
def test_triples_refuse_invisible_ids(tmp_path, name, body, where):
    """A zero-width space in a triple made a second entity that looks like the first (`g1` and `g1<ZWSP>`)."""
    (tmp_path / name).write_text(body, encoding="utf-8")
    with pytest.raises(InputError, match="invisible format character") as err:
        read_triples(tmp_path / name)
    assert str(err.value).startswith(str(tmp_path / where)), err.value


def test_entity_maps_follow_the_id_rule(tmp_path):
    """Whitespace entity maps kept ids as written: an NFD `café` never met the dataset's NFC `café`."""
    (tmp_path / "map.txt").write_text("cafe\u0301 e1\nb e2\n", encoding="utf-8")
    assert read_entity_map(tmp_path / "map.txt")["item"].tolist() == ["caf\u00e9", "b"]
    (tmp_path / "list.txt").write_text(
        "org_id remap_id\na 0\nb\u200b 1\n", encoding="utf-8"
    )
    with pytest.raises(
        InputError,
        match=r"list.txt: line 3: id 'b\\u200b' contains an invisible format",
    ):
        read_entity_map(tmp_path / "list.txt")
    (tmp_path / "map.csv").write_text("item_id,entity\na,e\ufeff1\n", encoding="utf-8")
    with pytest.raises(
        InputError, match="map.csv: line 2: column 'entity': id .* invisible format"
    ):
        read_entity_map(tmp_path / "map.csv")
