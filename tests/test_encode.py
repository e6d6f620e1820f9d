"""The encode stage with CLIP: masks, bad images, the cache, weights handling, the CLI (tiny random-init model)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_csv
from PIL import Image

from graphrec.core.errors import InputError
from graphrec.core.feature_store import load_features
from graphrec.data.importer import import_files
from graphrec.model.encoders.clip import TINY_MODEL, load_clip
from graphrec.stages.encode import run_encode

TINY = dict(clip_model=TINY_MODEL, clip_pretrained="none", device="cpu", progress=False)


def _catalogue(
    d: Path,
    extra_items: list[dict] | None = None,
    red: tuple[int, int, int] = (200, 30, 30),
) -> Path:
    """A workspace whose items carry good, corrupt, truncated, non-image, bomb, missing and absent images."""
    img = d / "images"
    img.mkdir(exist_ok=True)
    Image.new("RGB", (40, 30), red).save(img / "red.png")
    noise = np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)
    # noisy, so half the bytes cut the scan data
    Image.fromarray(noise).save(img / "blue.jpg", quality=90)
    Image.new("RGB", (50, 50), (90, 90, 90)).save(img / "new.png")
    good = (img / "blue.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (img / "corrupt.jpg").write_bytes(
        b"\xff\xd8\xff\xe0" + np.random.default_rng(1).bytes(400)
    )
    (img / "notes.png").write_text("this is not an image\n")
    Image.new("1", (9000, 9000)).save(img / "bomb.png")  # 81 Mpx, a few kB on disk
    items = [
        {
            "item_id": "red",
            "title": "Red Circle",
            "tags": "bright|round",
            "image": "red.png",
        },
        {
            "item_id": "blue",
            "title": "Blue Square",
            "tags": "cold",
            "image": "blue.jpg",
        },
        {
            "item_id": "trunc",
            "title": "Half Picture",
            "tags": "",
            "image": "truncated.jpg",
        },
        {"item_id": "corrupt", "title": "Noise", "tags": "", "image": "corrupt.jpg"},
        {"item_id": "text", "title": "Notes", "tags": "", "image": "notes.png"},
        {"item_id": "bomb", "title": "Bomb", "tags": "", "image": "bomb.png"},
        {"item_id": "gone", "title": "Lost Poster", "tags": "", "image": "gone.jpg"},
        {
            "item_id": "plain",
            "title": "No Picture At All",
            "tags": "quiet",
            "image": "",
        },
        {"item_id": "blank", "title": "", "tags": "", "image": ""},
    ] + (extra_items or [])
    write_csv(d / "items.csv", items)
    users = [f"u{k}" for k in range(4)]
    write_csv(
        d / "inter.csv",
        [
            {"user_id": users[k % 4], "item_id": it["item_id"], "rating": 4}
            for k, it in enumerate(items)
        ],
    )
    import_files(
        d / "ws",
        interactions=str(d / "inter.csv"),
        items=str(d / "items.csv"),
        images_dir=str(img),
        text_columns=["title", "tags"],
        attribute_columns=["tags"],
        image_column="image",
    )
    return d / "ws"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("enc")
    ws = _catalogue(d)
    return ws, run_encode(
        ws, ["image", "text", "lexical"], num_workers=2, batch_size=2, **TINY
    )


def test_masks_and_bad_images(first_run):
    ws, res = first_run
    feats = load_features(ws)
    assert set(feats) == {"clip_image", "clip_text", "lexical"}
    ids = feats["clip_image"].meta["item_ids"]
    img = feats["clip_image"]
    assert [ids[i] for i in np.flatnonzero(img.mask)] == ["red", "blue"]
    assert np.allclose(np.linalg.norm(img.values[img.mask], axis=1), 1.0, atol=1e-5)
    # zeros there mean "no content", flagged by the mask
    assert not img.values[~img.mask].any()
    reasons = {b["item_id"]: b["reason"] for b in img.meta["bad"]}
    assert set(reasons) == {"trunc", "corrupt", "text", "bomb", "gone"}
    assert "decompression bomb" in reasons["bomb"]
    assert "not an image" in reasons["text"]
    assert "file not found" in reasons["gone"]
    assert "truncated" in reasons["trunc"] or "corrupt" in reasons["trunc"]
    assert (
        img.meta["bad_count"] == 5
        and img.meta["missing"] == 2
        and img.meta["random_weights"] is True
    )
    assert img.meta["model"] == TINY_MODEL and img.meta["weights"].startswith("RANDOM")
    assert (
        res.reports["clip_image"].missing == 2
        and len(res.reports["clip_image"].bad) == 5
    )
    text = feats["clip_text"]
    assert [ids[i] for i in np.flatnonzero(~text.mask)] == ["blank"]
    assert (
        feats["lexical"].mask.sum() == 8
        and not feats["lexical"].mask[ids.index("blank")]
    )
    log = json.loads((ws / "features" / "logs" / "encode.json").read_text())
    assert len(log["modalities"]["clip_image"]["bad"]) == 5
    assert ws.joinpath("config.json").exists()
    stage = json.loads(ws.joinpath("config.json").read_text())["stages"]["features"]
    assert stage["settings"]["clip_model"] == TINY_MODEL


def test_pillow_bomb_guard_without_our_limit(tmp_path):
    from graphrec.model.encoders.images import open_image

    # above Pillow's own 89 Mpx warning threshold
    Image.new("1", (12000, 12000)).save(tmp_path / "b.png")
    img, reason = open_image(tmp_path / "b.png", max_pixels=10**12)
    assert img is None and "decompression bomb" in reason


def test_second_run_encodes_nothing_and_equals_first(first_run):
    ws, _ = first_run
    before = {k: (f.values.copy(), f.mask.copy()) for k, f in load_features(ws).items()}
    res = run_encode(
        ws, ["image", "text", "lexical"], num_workers=0, batch_size=3, **TINY
    )
    assert {k: r.encoded for k, r in res.reports.items()} == {
        "clip_image": 0,
        "clip_text": 0,
        "lexical": 0,
    }
    assert (
        res.reports["clip_image"].reused == 7 and res.reports["clip_text"].reused == 8
    )
    assert len(res.reports["clip_image"].bad) == 5  # bad files stay listed when reused
    after = load_features(ws)
    for k, (v, m) in before.items():
        assert np.array_equal(after[k].values, v) and np.array_equal(after[k].mask, m)


def test_only_new_and_changed_items_are_encoded(tmp_path):
    run_encode(_catalogue(tmp_path), ["image", "text"], **TINY)
    extra = [{"item_id": "new", "title": "Grey Box", "tags": "", "image": "new.png"}]
    # one more item; red.png gets new bytes
    ws = _catalogue(tmp_path, extra, red=(20, 220, 30))
    res = run_encode(ws, ["image", "text"], **TINY)
    assert (
        res.reports["clip_image"].encoded == 2 and res.reports["clip_image"].reused == 6
    )
    assert (
        res.reports["clip_text"].encoded == 1 and res.reports["clip_text"].reused == 8
    )
    # a fresh run over the same catalogue gives the same vectors
    fresh_ws = tmp_path / "fresh_ws"
    shutil.copytree(ws, fresh_ws)
    shutil.rmtree(fresh_ws / "features")
    res2 = run_encode(fresh_ws, ["image", "text"], **TINY)
    assert res2.reports["clip_image"].reused == 0
    a, b = load_features(ws), load_features(fresh_ws)
    for k in a:
        assert np.array_equal(a[k].mask, b[k].mask)
        assert np.allclose(a[k].values, b[k].values, atol=1e-5)


def test_changed_encoder_re_encodes_everything(tmp_path, first_run):
    ws0, _ = first_run
    ws = tmp_path / "ws"
    shutil.copytree(ws0, ws)
    res = run_encode(ws, ["text"], **{**TINY, "seed": 1})
    assert (
        res.reports["clip_text"].reused == 0 and res.reports["clip_text"].encoded == 8
    )
    # features/ holds exactly this run's modalities
    assert set(load_features(ws)) == {"clip_text"}


def test_long_text_is_chunk_averaged():
    enc = load_clip(TINY_MODEL, "none", device="cpu")
    short = "Toy Story (1995). animation, pixar"
    tokens, owner, _ = enc._tokenize([short])
    assert np.array_equal(tokens.numpy(), enc.tokenizer([short]).numpy())
    long = " ".join(f"word{k}" for k in range(120))
    tokens, owner, weight = enc._tokenize([short, long])
    assert owner.tolist().count(1) > 1 and weight[owner == 1].sum() > 75
    parts = tokens[owner == 1]
    v_parts = enc.model.encode_text(parts).detach()
    v_parts = v_parts / v_parts.norm(dim=-1, keepdim=True)
    expect = (v_parts * weight[owner == 1, None]).sum(0)
    expect = (expect / expect.norm()).numpy()
    got = enc.encode_texts([short, long], batch_size=2, progress=False)
    assert np.allclose(got[1], expect, atol=1e-5)


def test_checkpoint_file_and_clear_weight_errors(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    enc = load_clip(TINY_MODEL, "none", device="cpu")
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in enc.model.state_dict().items()}, str(ckpt))
    loaded = load_clip(TINY_MODEL, checkpoint=ckpt, device="cpu")
    assert (
        loaded.identity["random_weights"] is False
        and len(loaded.identity["checkpoint_sha256"]) == 64
    )
    assert np.allclose(
        loaded.encode_texts(["a red circle"], progress=False),
        enc.encode_texts(["a red circle"], progress=False),
        atol=1e-6,
    )

    with pytest.raises(InputError, match="checkpoint file not found"):
        load_clip(TINY_MODEL, checkpoint=tmp_path / "absent.pt", device="cpu")
    save_file(
        {"nothing": enc.model.logit_scale.detach().reshape(1)},
        str(tmp_path / "wrong.safetensors"),
    )
    with pytest.raises(InputError, match="cannot load this checkpoint"):
        load_clip(TINY_MODEL, checkpoint=tmp_path / "wrong.safetensors", device="cpu")
    with pytest.raises(InputError, match="no published weights"):
        load_clip(TINY_MODEL, device="cpu")
    with pytest.raises(InputError, match="unknown CLIP model"):
        load_clip("ViT-B-33", "none", device="cpu")
    with pytest.raises(InputError, match="no pretrained weights 'nope'"):
        load_clip("ViT-B-32", "nope", device="cpu")
    with pytest.raises(InputError, match="not both"):
        load_clip(TINY_MODEL, "none", checkpoint=ckpt, device="cpu")
    import huggingface_hub.constants

    # no network: fail fast, not retry
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        InputError,
        match="could not get the CLIP weights ViT-B-32/laion2b_s34b_b79k.*--clip-chec",
    ):
        load_clip("ViT-B-32", device="cpu")


def test_cli_encode_and_one_line_weights_error(
    first_run, tmp_path, monkeypatch, capsys
):
    from typer.testing import CliRunner

    from graphrec.app.cli import app

    ws0, _ = first_run
    ws = tmp_path / "ws"
    shutil.copytree(ws0, ws)
    r = CliRunner().invoke(
        app,
        [
            "encode",
            str(ws),
            "--clip-model",
            TINY_MODEL,
            "--clip-pretrained",
            "none",
            "--modalities",
            "image,text",
            "--device",
            "cpu",
            "--num-workers",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "random weights" in r.output and "decompression bomb" in r.output

    import huggingface_hub.constants

    import graphrec.app.cli as cli

    # no network: fail fast, not retry
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(
        sys,
        "argv",
        ["graphrec", "encode", str(ws), "--modalities", "text", "--device", "cpu"],
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "could not get the CLIP weights" in err[0]
        and "--clip-checkpoint" in err[0]
    ), err


def test_unsafe_image_files_are_not_read_and_count_as_missing(tmp_path):
    """A symlink to /dev/zero, a FIFO, a symlink out of the folder, a symlink loop and a huge file are never
    opened (reading the first two blocks forever): the encode finishes, and they get mask 0 with a warning."""
    import os
    import subprocess

    from graphrec.model.encoders.images import MAX_IMAGE_BYTES

    img = tmp_path / "images"
    img.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(img / "red.png")
    Image.new("RGB", (40, 30), (30, 30, 200)).save(tmp_path / "elsewhere.png")
    names = {
        "red": "red.png",
        "zero": "zero.png",
        "fifo": "fifo.png",
        "outside": "out.png",
        "loop": "loop.png",
        "big": "big.png",
        "gone": "gone.png",
    }
    write_csv(
        tmp_path / "items.csv",
        [{"item_id": i, "title": i, "image": f} for i, f in names.items()],
    )
    write_csv(tmp_path / "inter.csv", [{"user_id": "u1", "item_id": i} for i in names])
    ws = tmp_path / "ws"
    import_files(
        ws,
        interactions=str(tmp_path / "inter.csv"),
        items=str(tmp_path / "items.csv"),
        images_dir=str(img),
        text_columns=["title"],
        image_column="image",
    )
    (img / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(img / "fifo.png")
    (img / "out.png").symlink_to(tmp_path / "elsewhere.png")
    # the second: named by no item
    for a, b in (
        ("loop.png", "loop2.png"),
        ("unused.png", "unused2.png"),
    ):
        (img / a).symlink_to(img / b)
        (img / b).symlink_to(img / a)
    # sparse: a PNG header, then holes up to one byte over the limit
    with open(img / "big.png", "wb") as f:
        f.write((img / "red.png").read_bytes())
        f.truncate(MAX_IMAGE_BYTES + 1)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphrec",
            "encode",
            str(ws),
            "--clip-model",
            TINY_MODEL,
            "--clip-pretrained",
            "none",
            "--modalities",
            "image",
            "--device",
            "cpu",
            "--num-workers",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "5 item image files skipped as missing (mask 0)" in run.stderr, run.stderr
    for reason in (
        "2 outside the images folder",
        "1 not a regular file",
        "1 over 50 MB",
        "1 cannot be resolved (Too many levels",
    ):  # /dev/zero is outside too
        assert reason in run.stderr, (reason, run.stderr)
    feats = load_features(ws)["clip_image"]
    ids = feats.meta["item_ids"]
    assert [ids[i] for i in np.flatnonzero(feats.mask)] == ["red"]
    assert feats.meta["missing"] == 5  # as if they named no image
    # a file that is not there is still reported
    assert [b["item_id"] for b in feats.meta["bad"]] == ["gone"]
