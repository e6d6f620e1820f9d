"""Atomic artifact I/O, the workspace record and the canonical dataset round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from graphrec.core.errors import InputError
from graphrec.core.io import (
    atomic_dir,
    atomic_path,
    read_json,
    read_tensors,
    write_json,
    write_tensors,
)
from graphrec.core.workspace import Workspace
from graphrec.data.dataset import Dataset
from graphrec.data.importer import import_files


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    target = tmp_path / "stage"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "y").write_text("2")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["x"]
    with atomic_dir(target) as tmp:
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_tensors_round_trip_and_corrupt_file(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_tensors(tmp_path / "t.safetensors", {"a": arr})
    assert np.array_equal(read_tensors(tmp_path / "t.safetensors")["a"], arr)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="bad.safetensors"):
        read_tensors(tmp_path / "bad.safetensors")


def test_workspace_records_settings_and_command(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.record("dataset", {"seed": 3}, command="graphrec data synth --out ws")
    rec = ws.stage_record("dataset")
    assert rec.settings == {"seed": 3} and rec.command == "graphrec data synth --out ws"
    with pytest.raises(InputError, match="graphrec encode"):
        ws.require("features")


def test_import_round_trip(tiny_files, tmp_path):
    ds, notes = import_files(
        tmp_path / "ws",
        interactions=str(tiny_files["interactions"]),
        items=str(tiny_files["items"]),
        users=str(tiny_files["users"]),
        images_dir=str(tiny_files["images"]),
    )
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (4, 6, 12)
    assert ds.schema.text_columns == ["title"]
    assert ds.schema.attribute_columns == ["genres", "year"]
    assert ds.schema.image_column == "image"
    # user attributes are opt-in: none named, none used (the note says which columns were ignored)
    assert (
        list(ds.users.columns) == ["user_id"] and ds.schema.user_attribute_columns == []
    )
    assert any("zip" in n and "--user-attribute-columns" in n for n in notes)
    named, _ = import_files(
        tmp_path / "ws2",
        interactions=str(tiny_files["interactions"]),
        users=str(tiny_files["users"]),
        user_attribute_columns=["age_band", "gender"],
    )
    assert "zip" not in named.users.columns and named.schema.user_attribute_columns == [
        "age_band",
        "gender",
    ]
    assert ds.attribute_values("genres")[0] == ["Drama", "Comedy"]
    back = Dataset.load(tmp_path / "ws")
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    pd.testing.assert_frame_equal(back.items, ds.items)
    ids = json.loads((tmp_path / "ws" / "dataset" / "ids.json").read_text())
    assert ids["items"] == ["i1", "i2", "i3", "i4", "i5", "i6"]
    assert back.item_index(["i3", "i1"]).tolist() == [2, 0]
    with pytest.raises(InputError, match="unknown item id"):
        back.item_index(["nope"])
    assert Workspace(tmp_path / "ws").stage_record("dataset").settings["items"] == str(
        tiny_files["items"]
    )


def test_ids_keep_their_spelling(tmp_path):
    (tmp_path / "i.csv").write_text("user_id,item_id\n007,1\n7,1.0\n")
    ds, _ = import_files(tmp_path / "ws", interactions=str(tmp_path / "i.csv"))
    assert ds.user_ids.tolist() == ["007", "7"] and ds.item_ids.tolist() == ["1", "1.0"]


def test_repeated_pairs_keep_first(tmp_path):
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\na,x,5\na,x,9\nb,x,1\n")
    ds, notes = import_files(tmp_path / "ws", interactions=str(tmp_path / "i.csv"))
    assert len(ds.interactions) == 2 and ds.interactions["timestamp"].tolist() == [5, 1]
    assert any("repeated" in n for n in notes)


def test_presplit_pair_in_two_parts_is_rejected(tmp_path):
    (tmp_path / "t.csv").write_text("user_id,item_id\na,x\na,y\n")
    (tmp_path / "v.csv").write_text("user_id,item_id\na,x\n")
    with pytest.raises(
        InputError, match=r"v.csv: line 2: .*also given in the train part"
    ):
        import_files(
            tmp_path / "ws",
            train=str(tmp_path / "t.csv"),
            valid=str(tmp_path / "v.csv"),
        )
    assert not (tmp_path / "ws" / "dataset").exists()


def test_parquet_input_reads_ids_as_text(tmp_path):
    pd.DataFrame(
        {"user_id": [1, 2], "item_id": [10, 11], "rating": [4.0, 3.5]}
    ).to_parquet(tmp_path / "i.parquet")
    ds, _ = import_files(tmp_path / "ws", interactions=str(tmp_path / "i.parquet"))
    assert ds.item_ids.tolist() == ["10", "11"]
    assert ds.interactions["weight"].tolist() == [4.0, 3.5]


def test_stale_stages_are_refused_with_the_command_to_rerun(tmp_path):
    """Lineage: a re-import into a trained workspace must not serve the old graph or model under new ids."""
    from graphrec.data.importer import save_dataset
    from graphrec.data.splits import split_dataset
    from graphrec.data.synth import generate
    from graphrec.kg.build import run_build
    from graphrec.stages.recommend import recommend
    from graphrec.stages.train import run_train

    def dataset(seed: int):
        return split_dataset(
            generate(60, 50, 1500, seed=seed, progress=False), cold_items=0.1, seed=0
        )

    ws = save_dataset(tmp_path / "ws", dataset(0), {"source": "test"})
    run_build(ws, progress=False)
    run_train(ws, epochs=1, seed=0, progress=False)
    assert len(recommend(ws, "all", k=3)) == 60 * 3
    # a re-import: new data, old later stages
    save_dataset(ws.path, dataset(1), {"source": "test, again"})
    with pytest.raises(
        InputError,
        match=r"model/ was made from an earlier dataset/, which has changed since: "
        r"run `graphrec train` again",
    ):
        recommend(ws, "all", k=3)
    with pytest.raises(
        InputError,
        match=r"graph/ was made from an earlier dataset/.*run `graphrec build` again",
    ):
        run_train(ws, epochs=1, seed=0, progress=False)
    run_build(ws, progress=False)  # re-making the stages in order clears it
    run_train(ws, epochs=1, seed=0, progress=False)
    assert len(recommend(ws, "all", k=3)) == 60 * 3


def test_json_is_strict_nan_becomes_null(tmp_path):
    import json

    import numpy as np

    from graphrec.core.io import write_json

    write_json(
        tmp_path / "m.json",
        {
            "a": float("nan"),
            "b": [np.float32("inf"), 1.5],
            "c": np.array([np.nan, 2.0]),
        },
    )
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": [None, 2.0]}


def test_one_writer_at_a_time(tmp_path):
    """A second writer is refused with one line naming the holder; a killed holder leaves no stale lock."""
    import subprocess
    import sys
    import time

    from graphrec.core.workspace import Workspace
    from graphrec.data.importer import save_dataset
    from graphrec.data.synth import generate
    from graphrec.kg.build import run_build

    ws = save_dataset(
        tmp_path / "ws",
        generate(20, 15, 100, seed=0, progress=False),
        {"source": "test"},
    )
    hold = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom graphrec.core.workspace import Workspace\n"
            f"with Workspace({str(ws.path)!r}).lock():\n    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert hold.stdout.readline().strip() == "held"
        with pytest.raises(
            InputError,
            match=rf"workspace is in use by another graphrec run \(pid {hold.pid} on ",
        ):
            run_build(ws, progress=False)
        assert not ws.stage_dir("graph").exists()
    finally:
        hold.kill()
        hold.wait()
    time.sleep(0.1)
    run_build(ws, progress=False)  # the kernel dropped the dead holder's lock
    # a holder may nest its own stages
    with (
        Workspace(ws.path).lock(),
        Workspace(ws.path).lock(),
    ):
        pass


def test_safetensors_get_the_same_permissions_as_json(tmp_path):
    import os

    import numpy as np

    from graphrec.core.io import write_json, write_tensors

    old = os.umask(0o022)
    try:
        write_tensors(tmp_path / "t.safetensors", {"a": np.zeros(3, np.float32)})
        write_json(tmp_path / "t.json", {})
    finally:
        os.umask(old)
    assert (
        (tmp_path / "t.safetensors").stat().st_mode & 0o777
        == (tmp_path / "t.json").stat().st_mode & 0o777
        == 0o644
    )


def test_bars_obey_tqdm_disable_and_quiet(monkeypatch, tmp_path):
    import logging

    from typer.testing import CliRunner

    import graphrec.app.cli as cli
    from graphrec.core.progress import progress_bar

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    # --quiet lowers it: restore
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    # and quietens the shared console: later in-process runs print
    monkeypatch.setattr(cli.out, "quiet", False)
    assert progress_bar(range(3), show=False).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_bar(range(3), show=True).disable
    monkeypatch.delenv("TQDM_DISABLE")
    args = [
        "data",
        "synth",
        "--out",
        str(tmp_path / "ws"),
        "--users",
        "30",
        "--items",
        "20",
        "--interactions",
        "300",
        "--no-images",
    ]
    loud = CliRunner().invoke(cli.app, args)
    assert loud.exit_code == 0 and "generated" in loud.stdout
    quiet = CliRunner().invoke(
        cli.app, ["--quiet", *args[:2], "--out", str(tmp_path / "ws2"), *args[4:]]
    )
    assert quiet.exit_code == 0 and quiet.stdout == "", quiet.stdout
    assert (tmp_path / "ws2" / "dataset").is_dir()
