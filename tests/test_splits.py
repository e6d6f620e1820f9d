"""Splits: properties over random small datasets (hypothesis), plus hand-checked cases and the leak checker."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphrec.core.errors import InputError
from graphrec.data.dataset import SPLITS, Dataset, Schema
from graphrec.data.splits import check_no_leak, run_split, split_dataset
from graphrec.data.synth import generate

WARM = ("train", "valid", "test")
COLD_ITEM = ("cold_valid", "cold_test")
COLD_USER = ("cold_user_context", "cold_user_valid", "cold_user_test")


def make_dataset(
    pairs: np.ndarray, n_users: int, n_items: int, ts: np.ndarray | None
) -> Dataset:
    inter = pd.DataFrame(
        {
            "user": pairs[:, 0].astype(np.int32),
            "item": pairs[:, 1].astype(np.int32),
            "weight": np.ones(len(pairs), np.float32),
        }
    )
    if ts is not None:
        inter["timestamp"] = ts.astype(np.int64)
    inter["split"] = ""
    users = pd.DataFrame(
        {"user_id": [f"u{k}" for k in range(n_users)], "age_band": ["25-34"] * n_users}
    )
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(n_items)]})
    return Dataset(Schema(user_attribute_columns=["age_band"]), items, users, inter)


@st.composite
def datasets(draw):
    n_users, n_items = draw(st.integers(1, 12)), draw(st.integers(1, 15))
    cells = draw(
        st.lists(
            st.integers(0, n_users * n_items - 1), min_size=1, max_size=80, unique=True
        )
    )
    pairs = np.stack(np.divmod(np.asarray(cells), n_items), axis=1)
    ts = None
    if draw(st.booleans()):  # small range: ties on purpose
        ts = np.asarray(
            draw(st.lists(st.integers(0, 30), min_size=len(cells), max_size=len(cells)))
        )
    return make_dataset(pairs, n_users, n_items, ts)


@st.composite
def split_args(draw, temporal_ok: bool):
    valid = draw(st.sampled_from([0.0, 0.1, 0.25, 1.0, 2.0]))
    test = draw(st.sampled_from([0.0, 0.1, 0.3, 1.0, 2.0]))
    if valid < 1 and test < 1 and valid + test >= 1:
        test = 0.0
    return dict(
        method=draw(
            st.sampled_from(["random", "temporal"] if temporal_ok else ["random"])
        ),
        valid=valid,
        test=test,
        cold_items=draw(st.sampled_from([0.0, 0.2, 0.5])),
        cold_users=draw(st.sampled_from([0.0, 0.2, 0.5])),
        cold_user_context=draw(st.integers(0, 3)),
        cold_by=draw(st.sampled_from(["item", "interaction"])),
        seed=draw(st.integers(0, 2**16)),
    )


def parts_of(ds: Dataset) -> dict[str, pd.DataFrame]:
    return {p: ds.part(p) for p in SPLITS}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_split_properties(data):
    ds = data.draw(datasets())
    args = data.draw(split_args("timestamp" in ds.interactions.columns))
    most = int(np.bincount(ds.interactions["user"].to_numpy()).max())
    if max(args["valid"], args["test"]) > most or (
        args["cold_users"] > 0 and args["cold_user_context"] >= most
    ):
        with pytest.raises(
            InputError,
            match="more interactions per user than any user has|no cold user could",
        ):
            # a count no user reaches, or cold users none could be: refused, not empty
            split_dataset(ds, **args)
        return
    out = split_dataset(ds, **args)
    inter, parts = out.interactions, parts_of(out)

    # every original interaction lands in exactly one known part, rows unchanged otherwise
    assert inter["split"].isin(SPLITS).all()
    pd.testing.assert_frame_equal(
        inter.drop(columns="split"), ds.interactions.drop(columns="split")
    )
    check_no_leak(out)

    pair = lambda f: set(zip(f["user"], f["item"]))  # noqa: E731
    train = parts["train"]
    assert not pair(train) & pair(out.part(*[p for p in SPLITS if p != "train"]))
    # cold items and cold users never reach training (nor the warm parts)
    cold_items = set(out.part(*COLD_ITEM)["item"])
    cold_users = set(out.part(*COLD_USER)["user"])
    assert not cold_items & set(out.part(*WARM)["item"])
    assert not cold_users & set(out.part(*WARM, *COLD_ITEM)["user"])
    # warm held-out parts only hold warm items; cold-item parts only users with training data
    assert set(out.part("valid", "test")["item"]) <= set(train["item"])
    assert set(out.part(*COLD_ITEM)["user"]) <= set(train["user"])
    # chosen cold items split by item: no item in both cold_valid and cold_test
    if args["cold_by"] == "item":
        assert not set(parts["cold_valid"]["item"]) & set(parts["cold_test"]["item"])
    assert not set(parts["cold_user_valid"]["user"]) & set(
        parts["cold_user_test"]["user"]
    )
    # context: at most N per cold user, taken before the user's other interactions
    ctx = parts["cold_user_context"]
    assert (ctx.groupby("user").size() <= args["cold_user_context"]).all()
    if "timestamp" in inter.columns and len(ctx):
        rest = (
            out.part("cold_user_valid", "cold_user_test")
            .groupby("user")["timestamp"]
            .min()
        )
        first = ctx.groupby("user")["timestamp"].max()
        common = first.index.intersection(rest.index)
        assert (first[common] <= rest[common]).all()
    if args["method"] == "temporal":
        _check_temporal(out)
    # deterministic by seed
    again = split_dataset(ds, **args)
    assert again.interactions["split"].equals(inter["split"])
    assert out.schema.split["seed"] == args["seed"] and out.is_split


def _check_temporal(out: Dataset) -> None:
    """Per user: test rows are the latest; with no row moved back to train, later than all of train too."""
    warm = out.part(*WARM)
    last = {p: warm[warm["split"] == p].groupby("user")["timestamp"] for p in WARM}
    test_min, valid_max, valid_min = (
        last["test"].min(),
        last["valid"].max(),
        last["valid"].min(),
    )
    common = test_min.index.intersection(valid_max.index)
    assert (test_min[common] >= valid_max[common]).all()
    if out.schema.split["moved_to_train"] == 0:
        train_max = last["train"].max()
        for held in (test_min, valid_min):
            common = held.index.intersection(train_max.index)
            assert (held[common] >= train_max[common]).all()


@pytest.fixture(scope="module")
def synth() -> Dataset:
    return generate(200, 300, 8000, seed=5, progress=False)


def test_leave_last_out_and_counts(synth):
    out = split_dataset(synth, method="temporal", valid=1, test=1, cold_items=0.0)
    assert out.schema.split["moved_to_train"] == 0  # dense enough that nothing moves
    inter = out.interactions.sort_values(["user", "timestamp"], kind="stable")
    last_two = inter.groupby("user").tail(2)
    assert (
        last_two.groupby("user")["split"].agg(list).tolist()
        == [["valid", "test"]] * 200
    )
    assert (out.part("test").groupby("user").size() == 1).all()


def test_ratio_counts_match_the_benchmark_protocol(synth):
    out = split_dataset(synth, valid=0.1, test=0.1, cold_items=0.0, seed=1)
    n = np.bincount(synth.interactions["user"], minlength=200)
    expect = np.where(n >= 3, np.maximum(1, np.array([round(x * 0.1) for x in n])), 0)
    got = np.bincount(out.part("test")["user"], minlength=200)
    assert out.schema.split["moved_to_train"] == 0 and (got == expect).all()
    assert (np.bincount(out.part("valid")["user"], minlength=200) == expect).all()


def test_cold_items_and_users_sizes(synth):
    out = split_dataset(
        synth, cold_items=0.2, cold_users=0.1, cold_user_context=2, seed=3
    )
    check_no_leak(out)
    # cold items met only by cold users drop out
    assert len(out.cold_items()) == pytest.approx(60, abs=3)
    assert len(out.cold_users()) == 20 + out.schema.split["promoted_cold_users"]
    assert (out.part("cold_user_context").groupby("user").size() == 2).all()
    # cold users keep their attributes
    pd.testing.assert_frame_equal(out.users, synth.users)
    by_inter = split_dataset(synth, cold_items=0.2, cold_by="interaction", seed=3)
    sizes = by_inter.counts()["parts"]
    assert abs(sizes["cold_valid"] - sizes["cold_test"]) <= 1


def test_user_left_without_training_becomes_cold_user():
    # user 0 only ever met item 0; every other user met everything
    pairs = [(0, 0)] + [(u, i) for u in range(1, 8) for i in range(10)]
    ds = make_dataset(np.asarray(pairs), 8, 10, np.arange(len(pairs)))
    for seed in range(40):
        out = split_dataset(ds, cold_items=0.3, seed=seed)
        if (
            0 in out.cold_items()
            or 0 in out.part("cold_user_test", "cold_user_valid")["item"].to_numpy()
        ):
            break
    else:
        pytest.fail("item 0 never chosen cold")
    assert out.schema.split["promoted_cold_users"] == 1 and 0 in out.cold_users()
    assert out.interactions["split"].iloc[0].startswith("cold_user")
    check_no_leak(out)


def test_refuses_resplit_and_bad_settings(synth):
    out = split_dataset(synth)
    with pytest.raises(InputError, match="already split"):
        split_dataset(out)
    assert split_dataset(out, force=True, seed=9).is_split
    no_ts = make_dataset(np.asarray([(0, 0), (0, 1)]), 1, 2, None)
    with pytest.raises(InputError, match="timestamp"):
        split_dataset(no_ts, method="temporal")
    for bad in (
        dict(method="chrono"),
        dict(valid=0.6, test=0.5),
        dict(valid=1.5),
        dict(cold_items=1.0),
        dict(cold_users=-0.1),
        dict(cold_user_context=-1),
        dict(cold_by="user"),
    ):
        with pytest.raises(InputError):
            split_dataset(synth, **bad)


def test_check_no_leak_catches_leaks(synth):
    with pytest.raises(InputError, match="not split"):
        check_no_leak(synth)
    good = split_dataset(synth, cold_users=0.1)
    check_no_leak(good)
    cases = {
        "cold item": lambda s: s["split"] == "cold_test",
        # a cold user's row on a warm item, so only the cold-user rule is broken
        "cold user": lambda s: (
            (s["split"] == "cold_user_test") & ~s["item"].isin(good.cold_items())
        ),
    }
    for what, rows in cases.items():
        bad = Dataset(good.schema, good.items, good.users, good.interactions.copy())
        first = np.flatnonzero(rows(bad.interactions).to_numpy())[0]
        bad.interactions.loc[first, "split"] = "train"
        with pytest.raises(InputError, match=what):
            check_no_leak(bad)
    dup = good.part("test").head(1).assign(split="train")
    bad = Dataset(
        good.schema,
        good.items,
        good.users,
        pd.concat([good.interactions, dup], ignore_index=True),
    )
    with pytest.raises(InputError, match="in both"):
        check_no_leak(bad)


def test_run_split_rewrites_workspace(tmp_path, synth):
    from graphrec.data.importer import save_dataset

    save_dataset(tmp_path, synth, {"source": "synth"})
    ds = run_split(tmp_path, method="temporal", cold_users=0.1)
    back = Dataset.load(tmp_path)
    assert back.schema.split == ds.schema.split and back.interactions["split"].equals(
        ds.interactions["split"]
    )
    rec = __import__("json").loads((tmp_path / "config.json").read_text())["stages"][
        "dataset"
    ]
    assert (
        rec["settings"]["source"] == "synth"
        and rec["settings"]["split"]["cold_users"] == 0.1
    )
    with pytest.raises(InputError, match="already split"):
        run_split(tmp_path)


def test_movielens_100k_temporal_split():
    path = shared_path("ml-100k", "u.data")
    raw = pd.read_csv(path, sep="\t", names=["u", "i", "r", "t"])
    uid, users = pd.factorize(raw["u"])
    iid, items = pd.factorize(raw["i"])
    ds = make_dataset(
        np.stack([uid, iid], 1), len(users), len(items), raw["t"].to_numpy()
    )
    out = split_dataset(
        ds,
        method="temporal",
        valid=1,
        test=1,
        cold_items=0.2,
        cold_users=0.1,
        cold_user_context=5,
    )
    check_no_leak(out)
    parts = out.counts()["parts"]
    assert sum(parts.values()) == 100_000 and parts["test"] > 700


def test_cold_by_time_holds_out_the_items_first_seen_last(synth):
    """New items: the cold ones are those whose first interaction is latest; the earlier half selects (cold_valid),
    the newest half is the test; nothing leaks; without timestamps it is one line."""
    out = split_dataset(synth, cold_items=0.2, cold_by="time", seed=3)
    check_no_leak(out)
    inter = out.interactions
    first = inter.groupby("item")["timestamp"].min()
    cold_valid = set(inter.loc[inter["split"] == "cold_valid", "item"])
    cold_test = set(inter.loc[inter["split"] == "cold_test", "item"])
    warm = set(inter.loc[inter["split"].isin(["train", "valid", "test"]), "item"])
    assert cold_valid and cold_test and not (cold_valid | cold_test) & warm
    # newer than every warm item
    assert first[list(cold_valid | cold_test)].min() >= first[list(warm)].max()
    # the newest half is the test
    assert first[list(cold_test)].min() >= first[list(cold_valid)].max()
    assert out.schema.split["cold_by"] == "time"
    with pytest.raises(InputError, match="no timestamps"):
        split_dataset(
            dataclasses.replace(
                synth, interactions=synth.interactions.drop(columns="timestamp")
            ),
            cold_by="time",
        )
