"""External triples: formats, malformed input, and resolution (unknown heads, self-loops, duplicates)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from graphrec.core.errors import InputError
from graphrec.kg.triples import (
    RawTriples,
    read_entity_map,
    read_triples,
    resolve_triples,
)

ITEMS = np.array(["m1", "m2", "m3"], dtype=object)


def test_kgat_whitespace_lines(tmp_path):
    p = tmp_path / "kg_final.txt"
    p.write_text("0 0 10\n1\t0   10\n\n0 1 11\n")
    t = read_triples(p)
    assert t.head.tolist() == ["0", "1", "0"]
    assert t.relation.tolist() == ["0", "0", "1"]
    assert t.tail.tolist() == ["10", "10", "11"]


@pytest.mark.parametrize(
    "text,line,found",
    [("0 0 10\n0 1\n", 2, 2), ("0 0 10\n\n1 1 11\n2 2 12 13\n", 4, 4)],
)
def test_malformed_line_names_file_and_line(tmp_path, text, line, found):
    p = tmp_path / "kg.txt"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        read_triples(p)
    assert e.value.file == str(p) and e.value.row == line
    assert f"found {found}" in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_triples(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        read_triples(tmp_path / "empty.txt")


def test_csv_triples_and_blank_cell(tmp_path):
    p = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "head": ["m1", "m2"],
            "relation": ["directed_by", "directed_by"],
            "tail": ["Kubrick", "Kubrick"],
        }
    ).to_csv(p, index=False)
    assert read_triples(p).tail.tolist() == ["Kubrick", "Kubrick"]
    p.write_text("head,relation,tail\nm1,directed_by,Kubrick\nm2,,Lynch\n")
    with pytest.raises(InputError) as e:
        read_triples(p)
    assert e.value.row == "line 3" and e.value.column == "relation"
    p.write_text("head,rel,tail\nm1,x,y\n")
    with pytest.raises(InputError) as e:
        read_triples(p)
    assert e.value.column == "relation"


def test_parquet_triples(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame(
        {"item": ["m1"], "relation": ["genre_of"], "tail": ["noir"]}
    ).to_parquet(p)
    t = read_triples(p)
    assert (t.head.tolist(), t.relation.tolist(), t.tail.tolist()) == (
        ["m1"],
        ["genre_of"],
        ["noir"],
    )


def test_entity_map_formats(tmp_path):
    p = tmp_path / "item_index2entity_id.txt"
    p.write_text("m1\t0\nm2\t1\n")
    assert read_entity_map(p)["entity"].tolist() == ["0", "1"]
    p.write_text("m1\t0\nm1\t1\n")
    with pytest.raises(InputError, match="mapped twice") as e:
        read_entity_map(p)
    assert e.value.row == 2
    kgat = tmp_path / "item_list.txt"
    kgat.write_text("org_id remap_id freebase_id\nm1 0 m.01\nm3 1 m.02\n")
    m = read_entity_map(kgat)
    assert m["item"].tolist() == ["m1", "m3"] and m["entity"].tolist() == ["0", "1"]
    kgat.write_text("org_id remap_id freebase_id\nm1 0 m.01\nm3 1\n")
    with pytest.raises(InputError) as e:
        read_entity_map(kgat)
    assert e.value.row == 3


def test_resolve_without_map_reports_unknown_heads_loops_and_duplicates():
    raw = RawTriples(
        head=np.array(["m1", "m1", "m1", "m2", "zz", "Kubrick", "m3"], dtype=object),
        relation=np.array(
            ["dir", "dir", "genre", "dir", "dir", "born_in", "loop"], dtype=object
        ),
        tail=np.array(
            ["Kubrick", "Kubrick", "noir", "Lynch", "x", "NYC", "m3"], dtype=object
        ),
        source="t",
    )
    out, rep = resolve_triples(raw, ITEMS)
    assert (
        rep["read"] == 7
        and rep["self_loops_dropped"] == 1
        and rep["duplicates_dropped"] == 1
    )
    assert rep["unknown_heads"] == 1 and rep["unknown_head_examples"] == ["zz"]
    assert rep["kept"] == 4 == len(out)
    # Kubrick is a tail of another triple, so his own triple is an entity-entity edge
    ent = out[out["head_item"] < 0]
    assert ent["head_entity"].tolist() == ["Kubrick"] and ent[
        "tail_entity"
    ].tolist() == ["NYC"]
    assert sorted(out.loc[out["head_item"] >= 0, "head_item"].tolist()) == [0, 0, 1]


def test_resolve_with_entity_map_turns_item_entities_into_items():
    emap = {
        "item": np.array(["m1", "m2", "gone"], dtype=object),
        "entity": np.array(["0", "1", "7"], dtype=object),
    }
    raw = RawTriples(
        head=np.array(["0", "1", "5", "9", "0"], dtype=object),
        relation=np.array(["r", "r", "s", "s", "sequel"], dtype=object),
        tail=np.array(["5", "5", "6", "6", "1"], dtype=object),
        source="kg",
    )
    out, rep = resolve_triples(raw, ITEMS, emap)
    assert rep["map_items_unknown"] == 1
    assert rep["unknown_heads"] == 1 and rep["unknown_head_examples"] == ["9"]
    sequel = out[out["relation"] == "sequel"].iloc[0]
    assert (sequel["head_item"], sequel["tail_item"]) == (0, 1)
    chain = out[out["relation"] == "s"].iloc[0]
    assert (chain["head_item"], chain["head_entity"], chain["tail_entity"]) == (
        -1,
        "5",
        "6",
    )
