"""Issue 20, the encode stage's part: every setting is checked before work starts, a bad one names its flag in
one line and leaves features/ as it was; features/ never holds NaN or infinity, from a user's file, a model or
a planted file, and a re-run repairs a damaged one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import save_file

from graphrec.core.device import resolve_device
from graphrec.core.errors import InputError
from graphrec.core.feature_store import load_features, unit_rows
from graphrec.core.io import file_sha256
from graphrec.data.importer import import_files
from graphrec.model.encoders.clip import TINY_MODEL, load_clip
from graphrec.model.encoders.precomputed import read_precomputed
from graphrec.stages.encode import run_encode

IDS = ["i1", "i2", "i3", "i4", "i5", "i6"]


@pytest.fixture
def ws(tiny_files) -> Path:
    """A workspace with lexical features already written, so a failed run has something to leave alone."""
    f = tiny_files
    import_files(
        f["dir"] / "ws",
        interactions=str(f["interactions"]),
        items=str(f["items"]),
        images_dir=str(f["images"]),
        text_columns=["title", "genres"],
    )
    run_encode(f["dir"] / "ws", ["lexical"], progress=False)
    return f["dir"] / "ws"


def features_state(ws: Path) -> dict[str, str]:
    return {
        str(p.relative_to(ws)): file_sha256(p)
        for p in sorted((ws / "features").rglob("*"))
        if p.is_file()
    }


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "graphrec", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def refused(ws: Path, *args: str, quiet: bool = False) -> str:
    """`graphrec encode WS ARGS` fails with exit 2 and exactly one line, and features/ is unchanged. `quiet`
    (-q) for a failure after a model loaded: its INFO progress notes go to stderr by design."""
    before = features_state(ws)
    res = cli(*(["-q"] if quiet else []), "encode", str(ws), *args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, (
        res.stderr
    )
    assert features_state(ws) == before
    return lines[0]


def npy(path: Path, values: np.ndarray, ids: list[str] = IDS) -> Path:
    np.save(path, values)
    path.with_suffix(".ids.txt").write_text("\n".join(ids[: len(values)]) + "\n")
    return path


# -- item 1 (and 10): --lexical-dim -------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-5", "0"])
def test_lexical_dim_below_one_names_the_flag(ws, value):
    line = refused(ws, "--modalities", "lexical", "--lexical-dim", value)
    assert (
        f"--lexical-dim must be at least 1 (got {value})" in line
        and "no item has any text" not in line
    )


def test_lexical_dim_above_what_the_texts_allow_is_said_not_silently_clamped(ws):
    res = run_encode(ws, ["lexical"], lexical_dim=1000, progress=False)
    dim = res.reports["lexical"].dim
    assert dim < 1000
    assert any(
        f"lexical: {dim} dimensions, fewer than --lexical-dim 1000" in n
        for n in res.reports["lexical"].notes
    )
    assert (
        not run_encode(ws, ["lexical"], lexical_dim=dim, progress=False)
        .reports["lexical"]
        .notes
    )


# -- item 2: --device ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["foo", "cudafoo", "cuda:x", "cuda:-1", ""])
def test_unknown_device_is_refused_as_a_typo_on_every_machine(ws, device):
    line = refused(ws, "--modalities", "lexical", "--device", device)
    assert f"--device {device!r}: expected auto, cpu or cuda[:N]" in line


def test_device_spellings():
    assert resolve_device(" CPU ").type == "cpu" and resolve_device(None).type in (
        "cpu",
        "cuda",
    )
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU is visible"):
            resolve_device("cuda:0")
    else:
        n = torch.cuda.device_count()
        assert resolve_device(f"cuda:{n - 1}") == torch.device(f"cuda:{n - 1}")
        with pytest.raises(InputError, match=f"torch sees {n} CUDA GPU"):
            resolve_device(f"cuda:{n}")


# -- item 8: other settings, checked before any work ----------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-workers", "-1"], "--num-workers must be from 0 to"),
        (["--num-workers", "100000"], "--num-workers must be from 0 to"),
        (["--text-batch-size", "0"], "--text-batch-size must be at least 1"),
    ],
)
def test_other_encode_settings_name_their_flag(ws, args, message):
    assert message in refused(ws, "--modalities", "lexical", *args)


def test_settings_of_the_python_api_are_checked_too(ws):
    with pytest.raises(InputError, match="seed must be 0 or more"):
        run_encode(ws, ["lexical"], seed=-1, progress=False)
    with pytest.raises(InputError, match="max_pixels must be at least 1"):
        run_encode(ws, ["lexical"], max_pixels=0, progress=False)


# -- item 3: non-finite precomputed vectors -------------------------------------------------------------------
def test_precomputed_nan_is_refused_naming_file_line_and_item(ws, tmp_path):
    values = np.ones((6, 3), np.float32)
    values[2, 1] = np.nan
    line = refused(ws, "--precomputed", f"v={npy(tmp_path / 'nan.npy', values)}")
    assert "nan.npy: line 3: non-finite value" in line and "'i3'" in line


def test_precomputed_beyond_float32_is_refused_without_a_warning(ws, tmp_path):
    values = np.ones((6, 3))
    values[4, 0] = 1e300  # finite in float64, infinity in float32
    line = refused(ws, "--precomputed", f"v={npy(tmp_path / 'big.npy', values)}")
    assert (
        "big.npy: line 5: non-finite value" in line
        and "float32" in line
        and "'i5'" in line
    )


def test_a_missing_value_is_refused_not_read_as_no_vector(tmp_path):
    """Documented choice: NaN / null rows are errors; leaving an item out of the file is how to give it none."""
    pd.DataFrame(
        {"item_id": ["i1", "i2"], "a": [1.0, None], "b": [1.0, 2.0]}
    ).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(
        InputError,
        match="cols.parquet: line 2: non-finite.*'i2'.*leave an item out of the file",
    ):
        read_precomputed(tmp_path / "cols.parquet", IDS)
    pd.DataFrame(
        {"item_id": ["i1", "i2"], "v": [[1.0, 2.0], [np.nan, np.nan]]}
    ).to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(InputError, match="nan.parquet: line 2: non-finite"):
        read_precomputed(tmp_path / "nan.parquet", IDS)
    pd.DataFrame({"item_id": ["i1", "i2"], "v": [[1.0, 2.0], None]}).to_parquet(
        tmp_path / "null.parquet"
    )
    with pytest.raises(
        InputError, match="null.parquet: line 2: column 'v': vector is empty"
    ):
        read_precomputed(tmp_path / "null.parquet", IDS)
    values, mask, _ = read_precomputed(
        npy(tmp_path / "two.npy", np.ones((2, 3), np.float32)), IDS
    )
    assert (
        mask.tolist() == [True, True, False, False, False, False]
        and np.isfinite(values).all()
    )


# -- item 10: precomputed files named by their real fault -----------------------------------------------------
def test_precomputed_files_that_are_not_plain_vectors(tmp_path):
    (tmp_path / "loop.npy").symlink_to(tmp_path / "loop.npy")
    with pytest.raises(
        InputError, match="loop.npy: precomputed features file: symbolic link loop"
    ):
        read_precomputed(tmp_path / "loop.npy", IDS)
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(InputError, match="is a folder, not a file"):
        read_precomputed(tmp_path / "dir.npy", IDS)
    with pytest.raises(InputError, match="is not a regular file"):
        read_precomputed(Path("/dev/zero"), IDS)
    with pytest.raises(InputError, match="complex128"):
        read_precomputed(npy(tmp_path / "cx.npy", np.ones((2, 2), complex)), IDS)
    with pytest.raises(InputError, match="no dimensions"):
        read_precomputed(npy(tmp_path / "flat.npy", np.ones((2, 0))), IDS)
    ok = npy(tmp_path / "ok.npy", np.ones((2, 2), np.float32))
    (tmp_path / "bad.txt").write_bytes(b"i1\n\xff\xfe\n")
    with pytest.raises(InputError, match="bad.txt: item id list is not UTF-8"):
        read_precomputed(ok, IDS, tmp_path / "bad.txt")
    with pytest.raises(InputError, match="loop.npy: item id list: symbolic link loop"):
        read_precomputed(ok, IDS, tmp_path / "loop.npy")


# -- item 3: a model that yields NaN -----------------------------------------------------------------------
def test_a_model_yielding_nan_stops_in_one_line_and_keeps_the_features(ws, tmp_path):
    enc = load_clip(TINY_MODEL, "none", device="cpu")
    torch.save(
        {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
            for k, v in enc.model.state_dict().items()
        },
        tmp_path / "nan.pt",
    )
    line = refused(
        ws,
        "--modalities",
        "text",
        "--clip-model",
        TINY_MODEL,
        "--clip-checkpoint",
        str(tmp_path / "nan.pt"),
        "--device",
        "cpu",
        quiet=True,
    )
    assert (
        "modality clip_text: the encoder (checkpoint" in line
        and "NaN or infinite values" in line
    )
    assert "nothing was written" in line


# -- item 3: the reader, and the cache ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_reader_refuses_a_planted_non_finite_file(ws, bad):
    f = load_features(ws)["lexical"]
    values = f.values.copy()
    values[5, 0] = (
        bad  # i6 has no text: even a masked-out row must hold zeros, never NaN
    )
    save_file(
        {"values": values, "mask": f.mask.astype(np.uint8)},
        str(ws / "features" / "lexical.safetensors"),
    )
    with pytest.raises(
        InputError,
        match=r"features/lexical.safetensors holds NaN or infinite values for 1 items "
        r"\('i6' first\)",
    ):
        load_features(ws)


def test_a_re_encode_repairs_a_planted_nan_instead_of_copying_it(ws):
    f = load_features(ws)["lexical"]
    good = f.values.copy()
    values = f.values.copy()
    values[0] = np.nan
    save_file(
        {"values": values, "mask": f.mask.astype(np.uint8)},
        str(ws / "features" / "lexical.safetensors"),
    )
    # same settings: the cache would reuse every row
    run_encode(ws, ["lexical"], progress=False)
    assert np.array_equal(load_features(ws)["lexical"].values, good)


def test_unit_rows_keeps_the_direction_of_huge_and_tiny_vectors():
    v = np.array(
        [[1e30, 1e30, 0.0], [3e-30, 4e-30, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]],
        np.float32,
    )
    rows, present = unit_rows(v, np.ones(4, bool))
    assert present.tolist() == [True, True, True, False]
    assert np.allclose(
        rows[:3], [[2**-0.5, 2**-0.5, 0], [0.6, 0.8, 0], [0.6, 0.8, 0]], atol=1e-6
    )


def test_an_update_on_a_smaller_machine_keeps_the_recorded_workers_within_its_limit():
    from graphrec.stages.encode import _workers_here, max_workers

    assert _workers_here(None) is None and _workers_here(0) == 0
    assert _workers_here(10**6) == max_workers()
