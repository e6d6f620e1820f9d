"""Trust boundaries (issue 20): no command destroys what it did not make, nothing planted in a workspace or an
export reaches outside it, bad settings are refused before anything is switched in, a diverged training keeps
the old model, and a reader always answers while a writer fits."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import graphrec.stages.rank as rank_module
import graphrec.stages.train as train_module
import graphrec.stages.update as update_module
from graphrec.core.errors import InputError
from graphrec.core.feature_store import load_features, save_features
from graphrec.core.io import file_sha256, native_errors, read_tensors, write_tensors
from graphrec.core.workspace import JOURNAL, LOCK, SWITCH, Workspace
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.data.importer import import_files, save_dataset
from graphrec.data.readers import read_table
from graphrec.data.splits import run_split
from graphrec.data.synth import run_synth, synthesize
from graphrec.kg.build import run_build
from graphrec.kg.graph import KnowledgeGraph
from graphrec.model.export_format import load_export
from graphrec.pipeline.api import Recommender
from graphrec.stages.encode import run_encode
from graphrec.stages.evaluate import evaluate
from graphrec.stages.export import export
from graphrec.stages.rank import RankSettings
from graphrec.stages.recommend import recommend, write_recommendations
from graphrec.stages.report import _markdown
from graphrec.stages.train import run_train
from graphrec.stages.update import run_update

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = dict(
    epochs=2, dim=8, layers=1, batch_size=512, lr=0.02, patience=5, progress=False
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    full, _ = synthesize(50, 70, 1200, 0, progress=False)
    ws = save_dataset(
        tmp_path_factory.mktemp("trust") / "base", full, {"source": "test"}
    )
    run_split(
        ws, method="random", cold_items=0.2, cold_users=0.1, cold_user_context=2, seed=0
    )
    run_encode(ws, ["lexical"], lexical_dim=8, progress=False)
    run_build(ws, force=True, progress=False)
    run_train(ws, **TRAIN)
    return ws.path


@pytest.fixture
def ws(trained, tmp_path) -> Path:
    """A private copy of the trained workspace."""
    shutil.copytree(trained, tmp_path / "ws")
    return tmp_path / "ws"


def state(ws: Path) -> dict[str, str]:
    """Every file of the workspace's stages and config.json, by sha256."""
    return {
        str(p.relative_to(ws)): file_sha256(p)
        for p in sorted(ws.rglob("*"))
        if p.is_file()
        and p.relative_to(ws).parts[0]
        in ("dataset", "features", "graph", "model", "config.json")
    }


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "graphrec", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def one_line_error(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


# -- 2. a planted switch journal ------------------------------------------------------------------------------
def _plans(ws: Path, outside: Path, victim: Path) -> list[object]:
    (ws / ".staging-x").mkdir(exist_ok=True)
    (ws / ".staging-x" / "evil.txt").write_text("evil")
    (ws / "evil.txt").write_text("evil")
    st = victim.stat()
    ident = [st.st_ino, st.st_mtime_ns]
    return [
        {
            "staging": str(outside),
            "moves": [],
            "before": {},
            "after": {},
        },  # the probe's case: rmtree elsewhere
        {"staging": "../" + outside.name, "moves": [], "before": {}, "after": {}},
        {
            "staging": ".staging-x",
            "moves": [[".staging-x/evil.txt", str(victim)]],
            "before": {str(victim): ident},
            "after": {str(victim): None},
        },
        {
            "staging": str(ws / ".staging-x"),
            "moves": [[str(ws / "evil.txt"), str(victim)]],
            "before": {str(victim): ident},
            "after": {str(victim): None},
        },
        {
            "staging": ".staging-x",
            "moves": [[".staging-x/evil.txt", "../" + victim.name]],
            "before": {"../" + victim.name: ident},
            "after": {"../" + victim.name: None},
        },
        {},
        [],
        "text",
        None,
    ]


def test_a_planted_journal_is_discarded_and_touches_nothing_outside(
    ws, tmp_path, caplog
):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    before = recommend(ws, "all", k=5)
    for plan in _plans(ws, outside, victim):
        (ws / JOURNAL).write_text(json.dumps(plan))
        with caplog.at_level(logging.WARNING):
            # a reader finds the journal: it is discarded, never replayed
            got = recommend(ws, "all", k=5)
        assert got.equals(before)
        assert not (ws / JOURNAL).exists()
        assert "discarded" in caplog.text
        assert (
            outside / "keep.txt"
        ).read_text() == "mine" and victim.read_text() == "mine"
        caplog.clear()


def test_a_journal_through_a_symlinked_staging_folder_is_discarded(ws, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (ws / ".staging-link").symlink_to(outside)
    (ws / JOURNAL).write_text(
        json.dumps({"staging": ".staging-link", "moves": [], "before": {}, "after": {}})
    )
    run_build(ws, force=True, progress=False)  # a writer: recovers under its lock
    assert (outside / "keep.txt").read_text() == "mine"
    assert not (ws / JOURNAL).exists() and not os.path.lexists(ws / ".staging-link")
    (tmp_path / "planted.json").write_text(
        json.dumps({"staging": str(outside), "moves": [], "before": {}, "after": {}})
    )
    # a journal that is itself a link
    (ws / JOURNAL).symlink_to(tmp_path / "planted.json")
    assert len(recommend(ws, "all", k=2)) == 2 * Dataset.load(ws).n_users
    assert not os.path.lexists(ws / JOURNAL) and (tmp_path / "planted.json").exists()
    assert (outside / "keep.txt").read_text() == "mine"


def test_graphrecs_own_journal_still_finishes_a_switch_after_the_workspace_moved(
    ws, tmp_path
):
    """Journal paths are relative to the workspace: a killed switch in a workspace moved since still recovers."""
    w = Workspace(ws)
    with w.lock(), w.staging() as staged:
        (staged.path / "config.json").write_text(json.dumps({"stages": {}}))
        plan = {
            "staging": staged.path.name,
            "moves": [[f"{staged.path.name}/config.json", "config.json"]],
            "before": {
                "config.json": [
                    os.stat(ws / "config.json").st_ino,
                    os.stat(ws / "config.json").st_mtime_ns,
                ]
            },
            "after": {
                "config.json": [
                    os.stat(staged.path / "config.json").st_ino,
                    os.stat(staged.path / "config.json").st_mtime_ns,
                ]
            },
        }
        (ws / JOURNAL).write_text(json.dumps(plan))  # the commit point, then "killed"
    moved = tmp_path / "moved"
    ws.rename(moved)
    with Workspace(moved).lock():
        pass
    assert json.loads((moved / "config.json").read_text()) == {"stages": {}}
    assert not (moved / JOURNAL).exists()


# -- 3. lock and switch files ---------------------------------------------------------------------------------
def test_a_symlinked_lock_or_switch_file_is_never_followed(ws, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (ws / LOCK).unlink(missing_ok=True)
    (ws / LOCK).symlink_to(victim)
    one_line_error(cli("build", str(ws), "--force"), ".lock", "symbolic link")
    assert victim.read_text() == "mine"
    (ws / LOCK).unlink()
    (ws / SWITCH).unlink(missing_ok=True)
    (ws / SWITCH).symlink_to(victim)
    with pytest.raises(InputError, match=r"\.switch: is a symbolic link"):
        recommend(ws, "all", k=2)
    assert victim.read_text() == "mine"
    (ws / SWITCH).unlink()
    os.mkfifo(ws / LOCK)  # not a regular file: refused, not blocked on
    with pytest.raises(InputError, match="not a regular file"):
        run_build(ws, force=True, progress=False)


# -- 4, 7, 8. training settings: checked before anything, a diverged run keeps the old model ---------------------
@pytest.mark.parametrize(
    "bad, message",
    [
        ({"lr": float("inf")}, "--lr"),
        ({"lr": 1e30}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"lr": -1.0}, "--lr"),
        ({"reg": float("nan")}, "--reg"),
        ({"reg": -1.0}, "--reg"),
        ({"cold_weight": float("nan")}, "--cold-weight"),
        ({"align_weight": float("inf")}, "--align-weight"),
        ({"seed": -1}, "--seed"),
        ({"dim": 10**9}, "--dim"),
        ({"k": 10**12}, "--k"),
    ],
)
def test_bad_training_settings_are_refused_before_anything_changes(ws, bad, message):
    before = state(ws)
    with pytest.raises(InputError, match=message):
        run_train(ws, **{**TRAIN, **bad})
    assert state(ws) == before and not (ws / ".training").exists()


@pytest.mark.parametrize(
    "ranker, message",
    [
        (RankSettings(ease_dim=0), "--ease-dim must be at least 1"),
        (RankSettings(ease_dim=10**9), "--ease-dim 1000000000 is more than"),
    ],
)
def test_bad_ranker_settings_are_refused_before_training(
    ws, ranker, message, monkeypatch
):
    before = state(ws)
    monkeypatch.setattr(
        train_module,
        "_fit",
        lambda *a, **k: pytest.fail("trained before checking the ranker"),
    )
    with pytest.raises(InputError, match=message):
        run_train(ws, **TRAIN, ranker=ranker)
    assert state(ws) == before


def test_a_diverged_training_keeps_the_old_model(ws, monkeypatch):
    before = state(ws)
    real = train_module._embeddings
    monkeypatch.setattr(
        train_module,
        "_embeddings",
        lambda m, i: tuple(np.full_like(a, np.nan) for a in real(m, i)),
    )
    with pytest.raises(InputError, match="training diverged.*model/ is unchanged"):
        run_train(ws, **TRAIN)
    assert state(ws) == before
    monkeypatch.undo()
    forward = train_module._Step.forward
    monkeypatch.setattr(
        train_module._Step,
        "forward",
        lambda self, *a: (lambda out: (out[0] * float("nan"), out[1]))(
            forward(self, *a)
        ),
    )
    with pytest.raises(
        InputError, match="training diverged in epoch 1 of select: the loss is nan"
    ):
        run_train(ws, **TRAIN)
    assert state(ws) == before


def test_cli_train_refuses_a_nan_learning_rate_in_one_line(ws):
    before = state(ws)
    one_line_error(cli("train", str(ws), "--lr", "nan"), "--lr")
    one_line_error(cli("train", str(ws), "--ease-dim", "0"), "--ease-dim")
    assert state(ws) == before


# -- 5. readers always answer while a writer works ------------------------------------------------------------
def _paused(module: object, name: str, flag: str, release: str) -> None:
    """Make module.name signal `flag` and wait for `release` before doing its work."""
    real = getattr(module, name)

    def paused(*a, **k):
        Path(flag).touch()
        deadline = time.time() + 120
        while not Path(release).exists() and time.time() < deadline:
            time.sleep(0.05)
        return real(*a, **k)

    setattr(module, name, paused)


def _write_paused(
    writer: str, ws: str, flag: str, release: str, new_items: str
) -> None:
    torch.set_num_threads(1)
    if writer == "train":  # paused inside its ranker fit, after the GNN trained
        _paused(rank_module, "fit_weights", flag, release)
        run_train(ws, **{**TRAIN, "seed": 7})
    # paused where it carries the ranker over to the grown model
    elif writer == "update":
        _paused(update_module, "extend_ranker", flag, release)
        run_update(ws, items=new_items, progress=False)
    else:  # build, paused just before its graph is written and switched in
        _paused(KnowledgeGraph, "save", flag, release)
        run_build(ws, item_knn=3, force=True, progress=False)


@pytest.mark.parametrize("writer", ["train", "update", "build"])
def test_readers_answer_while_a_writer_works(ws, tmp_path, writer):
    ds = Dataset.load(ws)
    # the dataset's item columns, new ids
    new_items = ds.items.head(2).assign(item_id=["new1", "new2"])
    new_items.to_csv(tmp_path / "new_items.csv", index=False)
    old = recommend(ws, "all", k=5)
    old_export = load_export(export(ws, tmp_path / "old", ["npy"]))
    flag, release = tmp_path / "paused", tmp_path / "release"
    child = multiprocessing.get_context("fork").Process(
        target=_write_paused,
        args=(
            writer,
            str(ws),
            str(flag),
            str(release),
            str(tmp_path / "new_items.csv"),
        ),
    )
    child.start()
    try:
        deadline = time.time() + 120
        while not flag.exists() and child.is_alive() and time.time() < deadline:
            time.sleep(0.05)
        assert flag.exists(), f"{writer} never reached the point where it pauses"
        # the writer holds the lock in the middle of its work: every reader answers, with the old state
        assert recommend(ws, "all", k=5).equals(old)
        some = list(ds.user_ids[:3])
        assert (
            Recommender.load(ws).recommend(some, k=5).to_frame()["item_id"].tolist()
            == old[old["user_id"].isin(some)]["item_id"].tolist()
        )
        np.testing.assert_array_equal(
            load_export(export(ws, tmp_path / "during", ["npy"])).user_embeddings,
            old_export.user_embeddings,
        )
        res = cli("recommend", str(ws), "--users", "all", "--k", "5", "--out", "-")
        assert res.returncode == 0, res.stderr
        with pytest.raises(InputError, match="in use by another graphrec run"):
            # a second writer waits its turn
            run_update(ws, items=tmp_path / "new_items.csv", progress=False)
    finally:
        release.touch()
        child.join(300)
    assert child.exitcode == 0 and not (ws / ".training").exists()
    # the model was made from the old graph: readers say so in one line, never serve a mix
    if writer == "build":
        with pytest.raises(
            InputError, match="model/ was made from an earlier graph/.*graphrec train"
        ):
            recommend(ws, "all", k=5)
    else:
        new = recommend(ws, "all", k=5)
        assert (
            not new.equals(old)
            if writer == "train"
            else new["user_id"].nunique() == ds.n_users
        )
        assert (ws / "model" / "ranker.json").exists()


# -- 8. sizes and paths that used to give tracebacks --------------------------------------------------------------
def test_list_lengths_beyond_the_catalogue(ws):
    """A list holds every item at most (implicit cuts N the same way); a metric's cut-off past it is refused."""
    ds = Dataset.load(ws)
    user = str(ds.user_ids[0])
    whole = recommend(ws, [user], k=10**12)
    given = ds.matrix(GIVEN)[0].nnz
    # every item the user was not given
    assert len(whole) == ds.n_items - given and whole["item_id"].is_unique
    with pytest.raises(
        InputError, match=r"--ks 1000000000000 is more than the \d+ items"
    ):
        evaluate(ws, ks=(10**12,), progress=False)


def test_outputs_that_are_folders_links_or_workspace_files_are_refused(ws, tmp_path):
    frame = recommend(ws, "all", k=2)
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        write_recommendations(frame, tmp_path / "d")
    for inside in (
        ws / "config.json",
        ws / "model" / "x.csv",
        ws / "dataset" / "items.parquet",
    ):
        with pytest.raises(InputError, match="own files"):
            write_recommendations(frame, inside)
    (tmp_path / "link.csv").symlink_to(tmp_path / "target.csv")
    with pytest.raises(InputError, match="symbolic link"):
        write_recommendations(frame, tmp_path / "link.csv")
    assert not (tmp_path / "target.csv").exists()
    # beside the stages, the user's own file: fine
    write_recommendations(frame, ws / "recs.csv")
    one_line_error(
        cli("recommend", str(ws), "--k", "2", "--out", str(tmp_path / "d")),
        "is a folder",
    )
    one_line_error(
        cli(
            "recommend",
            str(ws),
            "--users",
            "",
            "--k",
            "2",
            "--out",
            str(tmp_path / "r.csv"),
        ),
        "no user ids given",
    )
    one_line_error(cli("export", str(ws), "--out", "/"), "root of the file system")


def test_a_writer_given_a_regular_file_as_its_workspace(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(InputError, match="is not a folder"):
        run_build(tmp_path / "file", progress=False)
    assert (tmp_path / "file").read_text() == "mine"


# -- 10. exports read back, modes, messages -----------------------------------------------------------------------
def test_load_export_refuses_links_loops_nesting_and_nan(ws, tmp_path):
    d = export(ws, tmp_path / "e", ["npy"])
    manifest = json.loads((d / "manifest.json").read_text())
    arr = np.load(d / "item_embeddings.npy")
    arr[3] = np.nan
    np.save(d / "item_embeddings.npy", arr)
    manifest["sha256"]["item_embeddings.npy"] = file_sha256(d / "item_embeddings.npy")
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        InputError, match="item_embeddings.npy: 1 of .* NaN or infinite values"
    ):
        load_export(d)
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros_like(arr))
    (d / "item_embeddings.npy").unlink()
    (d / "item_embeddings.npy").symlink_to(outside)
    manifest["sha256"]["item_embeddings.npy"] = file_sha256(outside)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="item_embeddings.npy: is a symbolic link"):
        load_export(d)
    (d / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InputError, match="manifest.json: .*nested too deeply"):
        load_export(d)
    (d / "manifest.json").unlink()
    os.symlink("manifest.json", d / "manifest.json")  # a link to itself: a loop
    with pytest.raises(InputError, match="manifest.json: is a symbolic link"):
        load_export(d)


def test_artifacts_get_the_umasks_mode(ws):
    for path in (
        ws / "graph" / "graph.safetensors",
        *(ws / "model").glob("*.safetensors"),
    ):
        # group/other may read, as for JSON
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path


def test_a_native_writers_disk_error_names_the_file(tmp_path):
    with pytest.raises(OSError) as e, native_errors(tmp_path / "x.safetensors"):
        raise RuntimeError("I/O error: No space left on device (os error 28)")
    assert e.value.errno == 28 and e.value.filename == str(tmp_path / "x.safetensors")
    with pytest.raises(OSError) as e, native_errors(tmp_path / "x.parquet"):
        raise OSError(28, "No space left on device")
    assert e.value.filename == str(tmp_path / "x.parquet")
    # the ordinary path is unchanged
    write_tensors(tmp_path / "ok.safetensors", {"a": np.zeros(2, np.float32)})


def test_report_markdown_escapes_html_from_the_data():
    md = _markdown(
        [("table", ["item"], [['<script>alert(1)</script> | "x"']]), ("p", "<b>t</b>")]
    )
    assert "<script>" not in md and "&lt;script&gt;" in md and "<b>" not in md


def test_non_finite_model_embeddings_are_refused_by_readers(ws):
    path = ws / "model" / "embeddings.safetensors"
    t = read_tensors(path)
    t["item"][0] = np.nan
    write_tensors(path, t)
    with pytest.raises(
        InputError, match="embeddings.safetensors: tensor 'item' holds NaN"
    ):
        recommend(ws, "all", k=2)


def test_a_symlink_planted_in_a_stage_folder_is_refused(ws, tmp_path):
    outside = tmp_path / "outside.safetensors"
    shutil.copy(ws / "model" / "embeddings.safetensors", outside)
    (ws / "model" / "embeddings.safetensors").unlink()
    (ws / "model" / "embeddings.safetensors").symlink_to(outside)
    with pytest.raises(InputError, match="embeddings.safetensors: is a symbolic link"):
        recommend(ws, "all", k=2)
    shutil.move(ws / "graph", tmp_path / "graph")
    (ws / "graph").symlink_to(tmp_path / "graph")
    with pytest.raises(InputError, match="graph: is a symbolic link"):
        KnowledgeGraph.load(ws)


# -- encode: settings and non-finite content ------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, message",
    [
        ({"lexical_dim": -5}, "--lexical-dim must be at least 1"),
        ({"lexical_dim": 0}, "--lexical-dim must be at least 1"),
        ({"device": "foo"}, "--device 'foo'"),
    ],
)
def test_bad_encode_settings_are_refused_before_anything_changes(ws, bad, message):
    before = state(ws)
    with pytest.raises(InputError, match=message):
        run_encode(ws, ["lexical"], progress=False, **bad)
    assert state(ws) == before


def test_cli_encode_refuses_a_negative_lexical_dim_in_one_line(ws):
    one_line_error(
        cli("encode", str(ws), "--modalities", "lexical", "--lexical-dim", "-5"),
        "--lexical-dim",
    )


def test_features_never_hold_nan(ws, tmp_path):
    feats = load_features(ws)["lexical"]
    feats.values[2, 0] = np.nan
    with pytest.raises(
        InputError,
        match="the lexical encoder produced NaN or infinite values for 1 items",
    ):
        save_features(tmp_path, feats)
    assert not list(tmp_path.glob("lexical.*"))
    # planted by hand
    write_tensors(
        ws / "features" / "lexical.safetensors",
        {"values": feats.values, "mask": feats.mask.astype(np.uint8)},
    )
    with pytest.raises(
        InputError,
        match=r"lexical.safetensors holds NaN or infinite values for 1 items",
    ):
        load_features(ws)


# -- the data layer: one id rule, opt-in coarse user attributes, checked settings ----------------------------------
@pytest.fixture(scope="module")
def unsplit(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("unsplit") / "ws"
    run_synth(ws, 30, 20, 300, seed=1, images=False)
    return ws


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--valid", "1e308"],
            "--valid 1e+308 holds out more interactions per user than any user has",
        ),
        (["--test", "inf"], "--test must be a fraction"),
        (["--valid", "nan"], "--valid must be a fraction"),
        (["--seed", "-1"], "--seed must be in"),
        (
            ["--cold-users", "0.1", "--cold-user-context", "1000000000000"],
            "--cold-user-context 1e+12 leaves no user",
        ),
    ],
)
def test_bad_split_settings_are_one_line(unsplit, tmp_path, flags, message):
    ws = tmp_path / "ws"
    shutil.copytree(unsplit, ws)
    before = state(ws)
    one_line_error(cli("data", "split", str(ws), *flags), message)
    assert state(ws) == before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--items", "1000000000", "--no-images"], "needs about"),
        (["--image-size", "0"], "--image-size must be in"),
        (["--image-size", "100000"], "--image-size must be in"),
        (["--seed", "-1", "--no-images"], "--seed must be in"),
    ],
)
def test_bad_synth_sizes_are_one_line(tmp_path, flags, message):
    one_line_error(
        cli(
            "data",
            "synth",
            "--out",
            str(tmp_path / "ws"),
            "--users",
            "10",
            "--interactions",
            "50",
            *flags,
        ),
        message,
    )
    assert not (tmp_path / "ws").exists()


def test_writers_given_a_file_as_their_workspace_are_one_line(tmp_path):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "inter.csv").write_text("user_id,item_id\nu1,i1\n")
    for args in (
        ["data", "synth", "--out", str(tmp_path / "file"), "--no-images"],
        [
            "data",
            "import",
            "--interactions",
            str(tmp_path / "inter.csv"),
            "--out",
            str(tmp_path / "file"),
        ],
        ["data", "split", str(tmp_path / "file")],
    ):
        res = cli(*args)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, (
            res.stderr
        )
        assert "Traceback" not in res.stderr and "file" in res.stderr
    assert (tmp_path / "file").read_text() == "mine"


def _import(tmp_path: Path, inter: str, users: str | None = None, **roles) -> Dataset:
    (tmp_path / "inter.csv").write_text(inter, encoding="utf-8")
    if users is not None:
        (tmp_path / "users.csv").write_text(users, encoding="utf-8")
    return import_files(
        tmp_path / "ws",
        interactions=str(tmp_path / "inter.csv"),
        users=str(tmp_path / "users.csv") if users is not None else None,
        **roles,
    )[0]


def test_one_id_rule_nfc_and_trimmed_and_no_invisible_characters(tmp_path):
    ds = _import(
        tmp_path,
        'user_id,item_id\n1,caf\u00e9\n1 ,b\n" 1",c\n1\u00a0,d\n2,cafe\u0301\n',
    )
    assert list(ds.user_ids) == ["1", "2"]  # "1", "1 ", " 1", "1<NBSP>": one user
    assert list(ds.item_ids) == [
        "caf\u00e9",
        "b",
        "c",
        "d",
    ]  # NFC and NFD "café": one item
    assert ds.user_index(["1\u00a0"]).tolist() == [0] and ds.item_index(
        ["cafe\u0301"]
    ).tolist() == [0]
    with pytest.raises(
        InputError,
        match=r"line 2: column 'user_id': id '1\\u200b' contains an invisible format",
    ):
        _import(tmp_path, "user_id,item_id\n1\u200b,a\n")


def test_user_attributes_are_opt_in_and_coarse(tmp_path):
    rows = "".join(f"u{i},{'FM'[i % 2]},{20 + i},{100000000 + i}\n" for i in range(30))
    inter = "user_id,item_id\n" + "".join(f"u{i},i{i % 5}\n" for i in range(30))
    ds = _import(tmp_path, inter, "user_id,gender,age,ssn\n" + rows)
    # none named, none used
    assert ds.schema.user_attribute_columns == [] and list(ds.users.columns) == [
        "user_id"
    ]
    ds = _import(
        tmp_path,
        inter,
        "user_id,gender,age,ssn\n" + rows,
        user_attribute_columns=["gender", "age"],
    )
    assert (
        ds.schema.user_attribute_columns == ["gender", "age_band"]
        and "age" not in ds.users.columns
    )
    assert set(ds.users["age_band"]) == {
        "18-24",
        "25-34",
        "35-44",
        "45-49",
    }  # bands, never exact ages
    with pytest.raises(InputError, match="column 'ssn': is personal data"):
        _import(
            tmp_path,
            inter,
            "user_id,gender,age,ssn\n" + rows,
            user_attribute_columns=["ssn"],
        )
    with pytest.raises(
        InputError, match="column 'code': has 30 distinct values for 30 users: too fine"
    ):
        _import(
            tmp_path,
            inter,
            "user_id,code\n" + "".join(f"u{i},c{i}\n" for i in range(30)),
            user_attribute_columns=["code"],
        )


def test_messages_name_the_real_cause(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title\na,A\n")
    with pytest.raises(
        InputError,
        match="column 'item_id': the id column cannot be one of the attribute columns",
    ):
        import_files(
            tmp_path / "ws",
            interactions=str(_write(tmp_path, "user_id,item_id\nu,a\n")),
            items=str(tmp_path / "items.csv"),
            attribute_columns=["item_id"],
        )
    with pytest.raises(
        InputError, match="not utf-16 text: its line breaks do not decode"
    ):
        read_table(_write(tmp_path, "user_id,item_id\nu,a\nv,b\n"), encoding="utf-16")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(InputError, match="symbolic link loop"):
        read_table(tmp_path / "loop")
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([b"u", b"\xff\xfe"], pa.binary()),
                "item_id": ["a", "b"],
            }
        ),
        tmp_path / "bad.parquet",
    )
    with pytest.raises(
        InputError, match="bad.parquet: row 2: column 'user_id': not valid UTF-8"
    ):
        read_table(tmp_path / "bad.parquet")
    # both ends of int64 alike
    for stamp in (
        "-9223372036854775809",
        "9223372036854775807",
    ):
        with pytest.raises(InputError, match="is outside the int64 range"):
            _import(tmp_path, f"user_id,item_id,timestamp\nu,a,{stamp}\n")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "table.csv"
    path.write_text(text, encoding="utf-8")
    return path
