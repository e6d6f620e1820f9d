"""The synthetic generator: deterministic, well-formed, pictures that show the traits, content that predicts taste."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from graphrec.core.errors import InputError
from graphrec.data.dataset import Dataset
from graphrec.data.synth import (
    COLOURS,
    PATTERNS,
    SHAPES,
    generate,
    run_synth,
    synthesize,
)


@pytest.fixture(scope="module")
def small():
    return synthesize(
        n_users=120, n_items=150, n_interactions=4000, seed=3, progress=False
    )


def test_same_seed_same_data_other_seed_other_data():
    a = generate(50, 60, 900, seed=7, progress=False)
    b = generate(50, 60, 900, seed=7, progress=False)
    c = generate(50, 60, 900, seed=8, progress=False)
    for name in ("items", "users", "interactions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.interactions[["user", "item"]].equals(c.interactions[["user", "item"]])


def test_shapes_dtypes_and_ranges(small):
    ds, truth = small
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (120, 150, 4000)
    inter = ds.interactions
    assert {c: str(t) for c, t in inter.dtypes.items() if c != "split"} == {
        "user": "int32",
        "item": "int32",
        "weight": "float32",
        "timestamp": "int64",
    }
    assert (inter["split"] == "").all() and not ds.is_split
    assert inter["user"].between(0, 119).all() and inter["item"].between(0, 149).all()
    assert inter["weight"].between(1, 5).all()
    assert ds.items["item_id"].is_unique and ds.users["user_id"].is_unique
    assert set(ds.schema.attribute_columns) == {
        "category",
        "brand",
        "price_band",
        "tags",
    }
    assert ds.schema.user_attribute_columns == ["age_band", "region"]
    assert ds.schema.image_column is None and "image" not in ds.items.columns
    # a multi-valued attribute
    assert ds.items["tags"].str.contains("|", regex=False).any()
    assert truth.user_taste.shape == (120, 12) and np.allclose(
        truth.user_taste.sum(1), 1
    )
    # interactions come ordered by user, then time
    assert (np.diff(inter["user"].to_numpy()) >= 0).all()
    same_user = np.diff(inter["user"].to_numpy()) == 0
    assert (np.diff(inter["timestamp"].to_numpy())[same_user] >= 0).all()


def test_no_duplicate_pairs_even_when_dense():
    # every user at the cap: half the catalogue
    ds = generate(30, 40, 30 * 20, seed=1, progress=False)
    assert len(ds.interactions) == 600
    assert not ds.interactions.duplicated(["user", "item"]).any()
    assert np.bincount(ds.interactions["user"], minlength=30).max() <= 20


def test_text_names_the_traits(small):
    ds, truth = small
    colour = np.asarray(list(COLOURS))[truth.item_colour]
    shape = np.asarray(SHAPES)[truth.item_shape]
    pattern = np.asarray(PATTERNS)[truth.item_pattern]
    expected = [f"A {p} {c} {s}, a " for p, c, s in zip(pattern, colour, shape)]
    assert all(d.startswith(e) for d, e in zip(ds.items["description"], expected))
    assert all(c.capitalize() in t for c, t in zip(colour, ds.items["title"]))
    assert all(p in t.split("|") for p, t in zip(pattern, ds.items["tags"]))


def test_content_predicts_interactions(small):
    """Users interact with their preferred segments far more than uniform choice would, and segments show in content."""
    ds, truth = small
    u, i = ds.interactions["user"].to_numpy(), ds.interactions["item"].to_numpy()
    seg = truth.item_segment[i]
    n_seg = truth.user_taste.shape[1]
    assert truth.user_taste[u, seg].mean() > 2.0 / n_seg
    # each user's top segment gets several times its share of the catalogue
    top = truth.user_taste.argmax(1)[u]
    share_of_catalogue = (
        np.bincount(truth.item_segment, minlength=n_seg)[top] / ds.n_items
    )
    assert (seg == top).mean() > 2.5 * share_of_catalogue.mean()
    # items of one segment mostly share the prototype colour
    same_colour = truth.item_colour == truth.prototypes[truth.item_segment, 0]
    assert same_colour.mean() > 0.75


def test_popularity_is_skewed(small):
    ds, _ = small
    per_item = np.sort(np.bincount(ds.interactions["item"], minlength=ds.n_items))[::-1]
    assert per_item[: len(per_item) // 10].sum() > 0.2 * per_item.sum()


def test_images_written_show_colour(tmp_path):
    ds, truth = synthesize(
        20,
        25,
        200,
        seed=2,
        images_dir=tmp_path / "img",
        image_size=48,
        missing_images=0.2,
        progress=False,
    )
    assert ds.schema.image_column == "image" and ds.schema.images_dir == str(
        (tmp_path / "img").resolve()
    )
    names = ds.items["image"].to_numpy()
    assert (names == "").any() and (names != "").sum() >= 10
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == sorted(
        n for n in names if n
    )
    for k, name in enumerate(names):
        if not name:
            continue
        with Image.open(tmp_path / "img" / name) as im:
            assert im.size == (48, 48) and im.mode == "RGB"
            px = np.asarray(im).reshape(-1, 3)
        rgb = np.asarray(list(COLOURS.values())[truth.item_colour[k]])
        assert (px == rgb).all(1).mean() > 0.05, f"{name} does not show its colour"


def test_users_and_items_only():
    ds = generate(10, 12, 0, progress=False)
    assert len(ds.interactions) == 0 and list(ds.interactions.columns)[:4] == [
        "user",
        "item",
        "weight",
        "timestamp",
    ]


def test_bad_sizes_are_input_errors():
    with pytest.raises(InputError, match="exceed"):
        generate(5, 10, 1000, progress=False)
    with pytest.raises(InputError):
        generate(0, 10, 10, progress=False)


def test_run_synth_roundtrip(tmp_path):
    ws = tmp_path / "ws"
    ds = run_synth(ws, 15, 20, 150, seed=4, image_size=32)
    back = Dataset.load(ws)
    pd.testing.assert_frame_equal(back.interactions, ds.interactions, check_dtype=False)
    assert back.schema.images_dir == str((ws / "images").resolve())
    assert (ws / "images" / back.items["image"].iloc[0]).is_file()
    assert not list(ws.glob(".images.*"))  # no temp folder left behind


def test_cli_synth_and_split(tmp_path):
    from graphrec.app.cli import app

    ws = tmp_path / "ws"
    r = CliRunner().invoke(
        app,
        [
            "data",
            "synth",
            "--out",
            str(ws),
            "--users",
            "40",
            "--items",
            "50",
            "--interactions",
            "600",
            "--no-images",
        ],
    )
    assert r.exit_code == 0, r.output
    assert not (ws / "images").exists() and Dataset.load(ws).schema.image_column is None
    r = CliRunner().invoke(
        app, ["data", "split", str(ws), "--method", "temporal", "--cold-users", "0.1"]
    )
    assert r.exit_code == 0, r.output
    assert "cold_user_test" in r.output and Dataset.load(ws).is_split
    cfg = __import__("json").loads((ws / "config.json").read_text())["stages"][
        "dataset"
    ]
    assert (
        cfg["settings"]["source"] == "synth"
        and cfg["settings"]["split"]["method"] == "temporal"
    )
    # a second split without --force is refused with a one-line error and exit code 2
    p = subprocess.run(
        [sys.executable, "-m", "graphrec", "data", "split", str(ws)],
        capture_output=True,
        text=True,
    )
    assert (
        p.returncode == 2
        and "already split" in p.stderr
        and len(p.stderr.strip().splitlines()) == 1
    )
