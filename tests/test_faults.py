"""Fault injection: every writing stage killed right after each of its renames (as kill -9: no cleanup runs),
two writers at once, a full disk. After each fault a reader works on the old state or the new one, or stops
with one line; the workspace holds the old state or the new one, never a mix; the command runs again."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_csv

import graphrec.core.io as gio
from graphrec.core.errors import InputError
from graphrec.core.io import file_sha256
from graphrec.core.workspace import STAGES
from graphrec.data.dataset import Dataset
from graphrec.data.importer import save_dataset
from graphrec.data.splits import run_split
from graphrec.data.synth import synthesize
from graphrec.kg.build import run_build
from graphrec.stages.encode import run_encode
from graphrec.stages.evaluate import run_evaluate
from graphrec.stages.recommend import recommend
from graphrec.stages.train import run_train
from graphrec.stages.update import run_update

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = dict(
    epochs=2, dim=8, layers=1, batch_size=512, lr=0.02, patience=5, progress=False
)
KILLED = 137


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A trained workspace (lexical features, graph, model, ranker) and files that change it."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("faults")
    full, _ = synthesize(50, 70, 1200, 0, progress=False)
    n_old = full.n_items - 5
    inter = full.interactions
    ws = save_dataset(
        d / "base",
        Dataset(
            full.schema,
            full.items.iloc[:n_old].reset_index(drop=True),
            full.users,
            inter[inter["item"] < n_old].reset_index(drop=True),
        ),
        {"source": "test"},
    )
    run_split(
        ws, method="random", cold_items=0.2, cold_users=0.1, cold_user_context=2, seed=0
    )
    run_encode(ws, ["lexical"], lexical_dim=8, progress=False)
    run_build(ws, force=True, progress=False)
    run_train(ws, **TRAIN)
    write_csv(d / "new_items.csv", full.items.iloc[n_old:])
    reimport = full.interactions.sample(frac=0.5, random_state=1)
    write_csv(
        d / "reimport.csv",
        pd.DataFrame(
            {
                "user_id": full.user_ids[reimport["user"]],
                "item_id": full.item_ids[reimport["item"]],
            }
        ),
    )
    return {"dir": d, "ws": ws.path}


def _writers(d: Path) -> dict[str, Callable[[Path], object]]:
    from graphrec.data.importer import import_files

    return {
        "data import (into a trained workspace)": lambda ws: import_files(
            ws, interactions=str(d / "reimport.csv")
        ),
        "data split": lambda ws: run_split(
            ws, method="random", cold_items=0.1, seed=3, force=True
        ),
        "encode": lambda ws: run_encode(ws, ["lexical"], lexical_dim=6, progress=False),
        "build": lambda ws: run_build(ws, item_knn=3, force=True, progress=False),
        "train": lambda ws: run_train(ws, **{**TRAIN, "seed": 7}),
        "update": lambda ws: run_update(ws, items=d / "new_items.csv", progress=False),
        "evaluate": lambda ws: run_evaluate(ws, ks=(5,), examples=1, progress=False),
    }


def _run_killed(
    fn: Callable[[Path], object], ws: Path, n: int, exchange: bool = True
) -> tuple[int, str]:
    """Run fn(ws) in a forked child that dies right after its n-th rename (os._exit: no finally, no cleanup,
    as kill -9); n=0 never kills. `exchange=False`: as on a file system without atomic exchange (folders are
    switched by two renames). Returns (exit status, what the child said: its rename count or an error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        status = 0
        try:
            torch.set_num_threads(1)
            logging.disable(logging.CRITICAL)
            count = [0]
            replace, swap = os.replace, gio._exchange

            def counted(done: bool) -> bool:
                count[0] += bool(done)
                if count[0] == n:
                    os._exit(KILLED)
                return done

            os.replace = lambda a, b, **kw: (
                counted(replace(a, b, **kw) is None) and None
            )
            gio._exchange = (
                (lambda a, b: counted(swap(a, b))) if exchange else (lambda a, b: False)
            )
            fn(ws)
            os.write(w, str(count[0]).encode())
        except BaseException:
            os.write(w, traceback.format_exc().encode()[-4000:])
            status = 1
        finally:
            os._exit(status)
    os.close(w)
    deadline = time.monotonic() + 120
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"child hung: {fn}")
        time.sleep(0.01)
    said = b""
    while chunk := os.read(r, 65536):
        said += chunk
    os.close(r)
    return os.waitstatus_to_exitcode(done[1]), said.decode()


def _state(ws: Path) -> dict[str, object]:
    """What a workspace holds: each stage folder's file names (hidden temp names aside) and data files' sha256;
    checkpoints aside (their loop state holds timings)."""
    out: dict[str, object] = {}
    for s in STAGES:
        if (ws / s).is_dir():
            names = sorted(
                p.name for p in (ws / s).iterdir() if not p.name.startswith(".")
            )
            data = [
                n
                for n in names
                if n.endswith((".parquet", ".safetensors"))
                and "epoch-" not in n
                and n != "best.safetensors"
            ]
            out[s] = (names, {n: file_sha256(ws / s / n) for n in data})
    return out


def _read(ws: Path) -> object:
    """What a reader gets: the top-5 lists of every user, or the one-line refusal."""
    try:
        f = recommend(ws, "all", 5)
    except InputError as e:
        assert "\n" not in str(e)
        return "refused"
    return f[["user_id", "item_id"]].to_numpy().tolist(), f["score"].to_numpy()


def _same(a: object, b: object) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a[0] == b[0] and np.allclose(a[1], b[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "stage,exchange",
    [(s, True) for s in _writers(Path())]
    + [(s, False) for s in ("build", "train", "update")],
)
def test_a_writer_killed_after_any_rename_leaves_the_old_state_or_the_new(
    trained, tmp_path, stage, exchange
):
    fn = _writers(trained["dir"])[stage]
    base = trained["ws"]
    new_ws = tmp_path / "new"
    shutil.copytree(base, new_ws)
    status, said = _run_killed(fn, new_ws, 0, exchange)
    assert status == 0, said
    renames = int(said)
    assert renames >= 1
    old, new = (_state(base), _read(base)), (_state(new_ws), _read(new_ws))
    outcomes = set()
    for n in range(1, renames + 1):
        ws = tmp_path / f"killed-{n}"
        shutil.copytree(base, ws)
        status, said = _run_killed(fn, ws, n, exchange)
        assert status == KILLED, said
        got = _read(ws)  # the first command after the kill puts right what it left
        state = _state(ws)
        which = "old" if state == old[0] else "new" if state == new[0] else None
        assert which is not None, (
            f"killed after rename {n}: a mix of old and new: {state}"
        )
        assert _same(got, old[1] if which == "old" else new[1]), (
            f"killed after rename {n}: reader saw another state"
        )
        outcomes.add(which)
        # nothing lost: the command runs again and makes the new state
        if which == "old":
            status, said = _run_killed(fn, ws, 0)
            assert status == 0, said
            assert _state(ws) == new[0], f"rerun after a kill at rename {n} differs"
        shutil.rmtree(ws)
    assert outcomes == {"old", "new"}


def test_a_killed_training_resumes_from_its_checkpoints(trained, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(trained["ws"], ws)
    fn = lambda w: run_train(w, **{**TRAIN, "epochs": 3, "seed": 7})
    # renames: the .training folder, best and epoch-1 checkpoints
    status, _ = _run_killed(fn, ws, 3)
    assert status == KILLED and list(
        (ws / ".training" / "model").glob("epoch-1.safetensors")
    )
    assert _read(ws) != "refused"  # the old model still serves
    r = run_train(ws, resume=True, **{**TRAIN, "epochs": 3, "seed": 7})
    assert r.history[0]["epoch"] == 1 and not (ws / ".training").exists()
    assert _read(ws) != "refused"


def test_two_writers_at_once_one_is_refused_in_one_line(trained, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(trained["ws"], ws)
    before = _state(ws)
    code = (
        "import sys, time\nfrom graphrec.stages.train import run_train\nfrom graphrec.core.workspace import Workspace\n"
        f"with Workspace({str(ws)!r}).lock():\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    hold = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert hold.stdout.readline().strip() == "held"
        for fn in _writers(trained["dir"]).values():
            with pytest.raises(
                InputError, match="workspace is in use by another graphrec run"
            ) as e:
                fn(ws)
            assert "\n" not in str(e.value)
        assert _read(ws) != "refused"  # readers go on while a writer works
    finally:
        hold.kill()
        hold.wait()
    assert _state(ws) == before


@pytest.mark.slow
def test_a_full_disk_stops_every_writer_in_one_line_and_changes_nothing(
    trained, tmp_path
):
    """A small tmpfs holds the workspace with little room to spare (root only; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    size = 4 * sum(p.stat().st_size + 4096 for p in trained["ws"].rglob("*")) + (
        4 << 20
    )
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.strip()}")
    try:
        ws = mnt / "ws"
        shutil.copytree(trained["ws"], ws)
        filler = mnt / "filler"
        # fill the disk, then leave two pages free
        with (
            open(filler, "wb", buffering=0) as f,
            pytest.raises(OSError),
        ):
            while True:
                f.write(b"\0" * 4096)
        os.truncate(filler, max(filler.stat().st_size - 8192, 0))
        before = _state(ws)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        d = trained["dir"]
        for cmd in (
            ["train", str(ws), "--epochs", "2", "--dim", "32"],
            ["encode", str(ws), "--modalities", "lexical"],
            ["evaluate", str(ws)],
            ["build", str(ws), "--force", "--item-knn", "3"],
            ["data", "split", str(ws), "--force"],
            [
                "data",
                "import",
                "--interactions",
                str(d / "reimport.csv"),
                "--out",
                str(ws),
            ],
            ["update", str(ws), "--items", str(d / "new_items.csv")],
            ["export", str(ws), "--out", str(mnt / "export")],
            ["recommend", str(ws), "--out", str(mnt / "recs.csv")],
        ):
            r = subprocess.run(
                [sys.executable, "-m", "graphrec", "--quiet", *cmd],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            lines = [x for x in r.stderr.splitlines() if x.strip()]
            assert (
                r.returncode == 2
                and len(lines) == 1
                and "No space left on device" in lines[0]
            ), (cmd, r.stderr)
            assert _state(ws) == before and _read(ws) != "refused"
        assert not (mnt / "export").exists() and not (mnt / "recs.csv").exists()
        filler.unlink()  # with room again, the same command works
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "graphrec",
                "--quiet",
                "train",
                str(ws),
                "--epochs",
                "2",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_switch_waits_for_the_readers_of_the_workspace(trained, tmp_path):
    """A reader sees one moment's workspace: a writer that finishes meanwhile switches in after it."""
    import graphrec.core.workspace as wsm

    ws = tmp_path / "ws"
    shutil.copytree(trained["ws"], ws)
    before = _state(ws)
    with wsm.Workspace(ws).reading():
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                # a fork shares the reader's lock: be another process
                for fd in wsm._READING.values():
                    os.close(fd)
                wsm._READING.clear()
                torch.set_num_threads(1)
                run_build(ws, item_knn=3, force=True, progress=False)
                status = 0
            finally:
                os._exit(status)
        time.sleep(3)  # the build takes well under a second; its switch waits
        assert os.waitpid(pid, os.WNOHANG)[0] == 0 and _state(ws) == before
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert _state(ws)["graph"] != before["graph"]


def test_a_writer_on_a_mistyped_workspace_path_leaves_nothing(tmp_path):
    for fn in (
        lambda w: run_train(w, **TRAIN),
        lambda w: run_build(w, progress=False),
        lambda w: run_encode(w, ["lexical"], progress=False),
        lambda w: run_evaluate(w, progress=False),
    ):
        with pytest.raises(InputError, match="no dataset/ yet"):
            fn(tmp_path / "typo")
        assert not (tmp_path / "typo").exists()
