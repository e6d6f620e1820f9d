"""Split interactions into warm, cold-item and cold-user parts (vectorised), and check a split for leaks.

Order of decisions (each interaction lands in exactly one part of data.dataset.SPLITS):

1. Cold users: a fraction of the users with more than `cold_user_context` interactions is held out with
   all their interactions (their attributes stay in the users table). Their first `cold_user_context`
   interactions (by timestamp, random order without one) are `cold_user_context`, the side input a model
   may use at inference; the rest go to `cold_user_valid` or `cold_user_test` *by user*: half of the cold
   users are validation users, the other half test users.
2. Cold items: a fraction of the items with interactions is held out with all their interactions (of
   non-cold users), into `cold_valid` / `cold_test` by item (default: half of the cold items are
   validation items, so model selection never sees a test item) or, with `cold_by="interaction"`, by
   interaction, as the outside benchmark protocol does. With `cold_by="time"` the cold items are not drawn at
   random but are the new ones, those whose first interaction is latest (a shop's new arrivals, usually
   little known; random cold items are often popular ones); the earlier half of them are validation items,
   the newest half test items.
3. Warm: each remaining user's interactions go to train / valid / test, randomly or by time (latest ->
   test, the ones before -> valid). `valid`/`test` below 1 are fractions of the user's interactions
   (at least one each); whole numbers >= 1 are counts (`--valid 1 --test 1 --method temporal` is
   leave-last-out). Users with fewer than 3 interactions keep all in train; every user keeps one.
4. A valid/test interaction whose item has no training interaction moves to train, so the warm tasks
   only hold warm items.
5. A user left without training interactions (all theirs were on cold items) is a cold user in fact:
   they join the cold users of step 1 rather than being dropped, so cold-item parts only hold users
   with training data and nothing is lost.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError
from graphrec.core.settings import SplitSettings
from graphrec.core.workspace import Workspace, writes
from graphrec.data.dataset import SERVE, SPLITS, Dataset

TRAIN, VALID, TEST, COLD_VALID, COLD_TEST, CU_CONTEXT, CU_VALID, CU_TEST = range(
    len(SPLITS)
)
METHODS = ("random", "temporal")
COLD_BY = ("item", "interaction", "time")


def split_dataset(
    ds: Dataset,
    method: str = SplitSettings.method,
    valid: float = SplitSettings.valid,
    test: float = SplitSettings.test,
    cold_items: float = SplitSettings.cold_items,
    cold_users: float = SplitSettings.cold_users,
    cold_user_context: int = SplitSettings.cold_user_context,
    seed: int = SplitSettings.seed,
    cold_by: str = SplitSettings.cold_by,
    force: bool = False,
) -> Dataset:
    """A copy of `ds` whose `split` column is filled and whose `schema.split` records these settings."""
    settings = {
        "method": method,
        "valid": valid,
        "test": test,
        "cold_items": cold_items,
        "cold_users": cold_users,
        "cold_user_context": cold_user_context,
        "cold_by": cold_by,
        "seed": seed,
    }
    _check_settings(ds, settings, force)
    part, moved, promoted = _parts(ds, settings)
    interactions = ds.interactions.copy()
    interactions["split"] = np.asarray(SPLITS, dtype=object)[part]
    record = {**settings, "moved_to_train": moved, "promoted_cold_users": promoted}
    schema = dataclasses.replace(ds.schema, split=record)
    return Dataset(schema, ds.items, ds.users, interactions, ds.triples)


def _parts(ds: Dataset, settings: dict[str, Any]) -> tuple[np.ndarray, int, int]:
    """Each interaction's part code (steps 1-5 of the module doc), how many held-out pairs moved to train, and how
    many users without training data became cold users. The draws keep one order (shuffle, cold users, cold
    items, the cold users' halves, the cold items' halves), so a seed always gives the same split."""
    inter = ds.interactions
    user = inter["user"].to_numpy().astype(np.int64)
    item = inter["item"].to_numpy().astype(np.int64)
    timestamps = inter["timestamp"].to_numpy() if "timestamp" in inter.columns else None
    rng = np.random.default_rng(settings["seed"])
    # random order key: warm random split, cold-user context without timestamps
    shuffle = rng.permutation(len(inter))
    cold_user, cold_item, first_seen = _draw_cold(
        rng, user, item, timestamps, ds.n_users, ds.n_items, settings
    )
    # _check_settings: a temporal split has timestamps
    temporal = settings["method"] == "temporal"
    order_key = cast(np.ndarray, timestamps) if temporal else shuffle
    part, moved, promoted = _warm_parts(
        user, item, order_key, cold_user, cold_item, settings["valid"], settings["test"]
    )
    in_cold_user = cold_user[user]
    context_order = timestamps if timestamps is not None else shuffle
    context = settings["cold_user_context"]
    _assign_cold_users(
        rng, part, user, in_cold_user, context_order, cold_user, context, ds.n_users
    )
    in_cold_item = cold_item[item] & ~in_cold_user
    _assign_cold_items(
        rng, part, item, in_cold_item, cold_item, settings["cold_by"], first_seen
    )
    assert (part >= 0).all(), "every interaction gets a part"
    return part, moved, promoted


def _draw_cold(
    rng: np.random.Generator,
    user: np.ndarray,
    item: np.ndarray,
    timestamps: np.ndarray | None,
    n_users: int,
    n_items: int,
    settings: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Steps 1-2: the cold user mask (drawn among the users with more than `cold_user_context` interactions),
    the cold item mask, and each item's first timestamp when the cold items are chosen by time."""
    per_user = np.bincount(user, minlength=n_users)
    cold_user = np.zeros(n_users, bool)
    eligible = np.flatnonzero(per_user > settings["cold_user_context"])
    active_users = (per_user > 0).sum()
    cold_user[_choose(rng, eligible, settings["cold_users"], active_users)] = True
    per_item = np.bincount(item, minlength=n_items)
    cold_item, first_seen = _cold_items(
        rng, item, per_item, settings["cold_items"], settings["cold_by"], timestamps
    )
    return cold_user, cold_item, first_seen


def _warm_parts(
    user: np.ndarray,
    item: np.ndarray,
    order_key: np.ndarray,
    cold_user: np.ndarray,
    cold_item: np.ndarray,
    valid: float,
    test: float,
) -> tuple[np.ndarray, int, int]:
    """Steps 3-5: part codes with the warm interactions placed (the cold ones still -1), how many held-out pairs
    moved to train, and how many users were promoted to cold users (added to `cold_user` in place)."""
    n_users, n_items = len(cold_user), len(cold_item)
    part = np.full(len(user), -1, np.int8)
    warm = ~cold_user[user] & ~cold_item[item]
    _split_warm(part, user, warm, order_key, n_users, test, valid)
    # 4. held-out pairs on items unseen in training move to train (one pass: moving only adds train items)
    train_item = np.bincount(item[part == TRAIN], minlength=n_items) > 0
    move = ((part == VALID) | (part == TEST)) & ~train_item[item]
    part[move] = TRAIN
    # 5. users without training data become cold users
    has_train = np.bincount(user[part == TRAIN], minlength=n_users) > 0
    promoted = (np.bincount(user, minlength=n_users) > 0) & ~has_train & ~cold_user
    cold_user |= promoted
    return part, int(move.sum()), int(promoted.sum())


def _cold_items(
    rng: np.random.Generator,
    item: np.ndarray,
    per_item: np.ndarray,
    share: float,
    cold_by: str,
    ts: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(cold item mask, each item's first timestamp when cold by time): `share` of the items with interactions,
    drawn at random or, by time, the ones first seen last (new items)."""
    n_items = len(per_item)
    cold_i = np.zeros(n_items, bool)
    if cold_by != "time":
        cold_i[
            _choose(rng, np.flatnonzero(per_item > 0), share, (per_item > 0).sum())
        ] = True
        return cold_i, None
    first_seen = np.full(n_items, np.iinfo(np.int64).max)
    # _check_settings: timestamps
    np.minimum.at(first_seen, item, cast(np.ndarray, ts).astype(np.int64))
    active = np.flatnonzero(per_item > 0)
    n_cold = min(len(active), int(round(share * len(active))))
    cold_i[
        active[np.argsort(first_seen[active], kind="stable")][len(active) - n_cold :]
    ] = True
    return cold_i, first_seen


def _split_warm(
    part: np.ndarray,
    user: np.ndarray,
    warm: np.ndarray,
    order_key: np.ndarray,
    n_users: int,
    test: float,
    valid: float,
) -> None:
    """Each user's warm interactions into `part`: the last `test` share by `order_key` to TEST, the `valid` share
    before them to VALID, the rest to TRAIN."""
    rank, count = _rank_within_user(user, order_key, warm, n_users)
    from_end = count[user] - 1 - rank
    n_test, n_valid = _held_counts(count, test, valid)
    part[warm] = TRAIN
    is_test = warm & (from_end < n_test[user])
    is_valid = warm & ~is_test & (from_end < n_test[user] + n_valid[user])
    part[is_test], part[is_valid] = TEST, VALID


def check_no_leak(ds: Dataset) -> None:
    """Raise InputError if a held-out pair, cold item or cold user reaches training (or a pair is in two parts)."""
    if not ds.is_split:
        raise InputError("dataset is not split yet: run `graphrec data split` first")
    code = _part_codes(ds.interactions["split"])
    user = ds.interactions["user"].to_numpy().astype(np.int64)
    item = ds.interactions["item"].to_numpy().astype(np.int64)
    _check_pairs_in_one_part(ds, user, item, code)
    _check_cold_apart(ds, user, item, code)


def _part_codes(split: pd.Series) -> np.ndarray:
    """Each interaction's index in SPLITS; an unknown part name is an error naming the first such row."""
    code = pd.Categorical(split, categories=SPLITS).codes.astype(np.int8)
    if (code < 0).any():
        at = int(np.argmax(code < 0))
        raise InputError(
            f"interaction {at} has unknown split part {split.iloc[at]!r} (known: {', '.join(SPLITS)})",
            column="split",
        )
    return code


def _check_pairs_in_one_part(
    ds: Dataset, user: np.ndarray, item: np.ndarray, code: np.ndarray
) -> None:
    """Refuse a (user, item) pair that appears in two different parts."""
    key = user * max(1, ds.n_items) + item
    order = np.argsort(key, kind="stable")
    clash = np.flatnonzero(
        (key[order][1:] == key[order][:-1]) & (code[order][1:] != code[order][:-1])
    )
    if len(clash):
        first, second = order[clash[0]], order[clash[0] + 1]
        raise InputError(
            f"split leak: pair (user {ds.user_ids[user[first]]!r}, item {ds.item_ids[item[first]]!r}) is in "
            f"both {SPLITS[code[first]]} and {SPLITS[code[second]]}"
        )


def _check_cold_apart(
    ds: Dataset, user: np.ndarray, item: np.ndarray, code: np.ndarray
) -> None:
    """Refuse a cold item with warm interactions, and a cold user with warm or cold-item interactions."""
    cold_item = (
        np.bincount(
            item[(code == COLD_VALID) | (code == COLD_TEST)], minlength=ds.n_items
        )
        > 0
    )
    bad = np.flatnonzero((code <= TEST) & cold_item[item])
    if len(bad):
        row = bad[0]
        raise InputError(
            f"split leak: cold item {ds.item_ids[item[row]]!r} also has interactions in {SPLITS[code[row]]}"
        )
    cold_user = np.bincount(user[code >= CU_CONTEXT], minlength=ds.n_users) > 0
    bad = np.flatnonzero((code < CU_CONTEXT) & cold_user[user])
    if len(bad):
        row = bad[0]
        raise InputError(
            f"split leak: cold user {ds.user_ids[user[row]]!r} also has interactions in {SPLITS[code[row]]}"
        )


# The split `graphrec train` chooses its settings on when the dataset is not split (serve mode): a tenth of each
# user's interactions to validate the warm lists, a tenth of the items held out whole for the cold ones.
SELECTION: dict[str, Any] = {
    "method": "random",
    "valid": 0.1,
    "test": 0.0,
    "cold_items": 0.1,
    "cold_users": 0.0,
}


def selection_split(ds: Dataset, seed: int = 0) -> Dataset:
    """Serve mode's split of a dataset that is not split (a shop's whole data): SELECTION's parts, in memory,
    only to choose the settings on validation; the served model is then refit on every interaction
    (`Dataset.refit_parts`), and its lists exclude every interaction the user has. The cold items' second half
    (cold_test) takes no part: nothing is scored."""
    out = split_dataset(ds, **SELECTION, seed=seed)
    check_no_leak(out)
    return dataclasses.replace(
        out,
        schema=dataclasses.replace(
            out.schema, split={**out.schema.split, "mode": SERVE}
        ),
    )


@writes
def run_split(
    workspace: Workspace | str | Path,
    settings: SplitSettings | None = None,
    *,
    force: bool = False,
    **overrides: Any,
) -> Dataset:
    """Split the workspace's dataset into warm, cold-item and cold-user parts: the `data split` stage.

    Loads dataset/, splits it (the module doc gives the order of decisions), checks the split for
    leaks, rewrites dataset/ atomically and records the settings, under the workspace lock. Every
    setting is checked before the first draw, so a refused split leaves dataset/ as it was.

    Args:
        workspace: The workspace (or its folder) whose dataset/ is split.
        settings: The `SplitSettings`; None: the defaults.
        force: Re-split a dataset that is already split.
        **overrides: `SplitSettings` fields as keywords (e.g. method="temporal"), applied over
            `settings`.

    Returns:
        The split dataset.

    Raises:
        InputError: On bad input: a dataset already split (without `force`) or without interactions,
            an unknown method or cold_by, a by-time choice on interactions without timestamps, or a
            share or count out of range.
        TypeError: When an override names no `SplitSettings` field.

    Example::

        from graphrec.data.splits import run_split

        # leave-last-out for warm users, a fifth of the items held out cold
        ds = run_split("ws", method="temporal", valid=1, test=1, cold_items=0.2)
    """
    s = dataclasses.replace(settings or SplitSettings(), **overrides)
    ws = Workspace.of(workspace)
    ds = split_dataset(Dataset.load(ws), **dataclasses.asdict(s), force=force)
    check_no_leak(ds)
    ds.save(ws)
    before = ws.stage_record("dataset")
    inputs = before.inputs if before else {}
    made_by = inputs.get("made_by", before.command if before else None)
    # keep the command that made the tables, not that of an earlier split
    ws.record(
        "dataset",
        {**(before.settings if before else {}), "split": ds.schema.split},
        inputs={**inputs, "made_by": made_by},
    )
    return ds


# -- helpers ----------------------------------------------------------------------------------------
def _check_settings(ds: Dataset, settings: dict[str, Any], force: bool) -> None:
    """Raise InputError, naming the CLI option, when `ds` cannot be split with these settings; everything is
    checked before the first draw, so a refused split leaves nothing half-done."""
    if ds.is_split and not force:
        raise InputError(
            f"dataset is already split ({ds.schema.split.get('method', '?')}); pass --force to re-split"
        )
    if len(ds.interactions) == 0:
        raise InputError("dataset has no interactions to split")
    _check_choices(settings, "timestamp" in ds.interactions.columns)
    # the longest user history
    most = int(np.bincount(ds.interactions["user"].to_numpy()).max())
    _check_held_out(settings, most)
    _check_cold_shares(settings, most)
    if not 0 <= settings["seed"] < 2**63:
        raise InputError(f"--seed must be in 0 .. 2^63-1, got {settings['seed']}")


def _check_choices(settings: dict[str, Any], has_timestamps: bool) -> None:
    """Refuse an unknown method or cold_by, and a by-time choice on interactions without timestamps."""
    if settings["method"] not in METHODS:
        raise InputError(
            f"unknown split method {settings['method']!r} (use {' or '.join(METHODS)})"
        )
    if settings["cold_by"] not in COLD_BY:
        raise InputError(
            f"unknown cold_by {settings['cold_by']!r} (use {' or '.join(COLD_BY)})"
        )
    if settings["method"] == "temporal" and not has_timestamps:
        raise InputError(
            "the temporal split needs timestamps, and the interactions have none "
            "(use --method random)",
            column="timestamp",
        )
    if settings["cold_by"] == "time" and not has_timestamps:
        raise InputError(
            "--cold-by time picks the items first seen last, and the interactions have no timestamps "
            "(use --cold-by item)",
            column="timestamp",
        )


def _check_held_out(settings: dict[str, Any], most: int) -> None:
    """Refuse a valid/test amount that is no fraction or whole count, a count above the longest history (`most`),
    and fractions that leave nothing to train on."""
    for name in ("valid", "test"):
        amount = settings[name]
        # NaN would drop the part silently
        if (
            not math.isfinite(amount)
            or amount < 0
            or (amount >= 1 and amount != int(amount))
        ):
            raise InputError(
                f"--{name} must be a fraction in [0, 1) or a whole count >= 1, got {amount}"
            )
        if amount >= 1 and amount > most:
            raise InputError(
                f"--{name} {amount:g} holds out more interactions per user than any user has ({most})"
            )
    valid, test = settings["valid"], settings["test"]
    if valid < 1 and test < 1 and valid + test >= 1:
        raise InputError(f"--valid + --test must stay below 1 (got {valid + test:g})")


def _check_cold_shares(settings: dict[str, Any], most: int) -> None:
    """Refuse cold shares outside [0, 1), and a cold-user context that is no whole number or that no user's
    history (at most `most` interactions) exceeds while cold users are asked for."""
    for name in ("cold_items", "cold_users"):
        if not 0 <= settings[name] < 1:
            raise InputError(
                f"--{name.replace('_', '-')} must be a fraction in [0, 1), got {settings[name]}"
            )
    context = settings["cold_user_context"]
    if not math.isfinite(context) or context < 0 or context != int(context):
        raise InputError(
            f"--cold-user-context must be a whole number >= 0, got {context}"
        )
    if settings["cold_users"] > 0 and context >= most:
        raise InputError(
            f"--cold-user-context {context:g} leaves no user with more interactions than that (the "
            f"most is {most}): no cold user could be held out"
        )


def _choose(
    rng: np.random.Generator, pool: np.ndarray, fraction: float, active: int
) -> np.ndarray:
    """round(fraction * active) members of pool (fewer if the pool is smaller)."""
    k = min(len(pool), int(round(fraction * int(active))))
    return rng.choice(pool, size=k, replace=False) if k else np.zeros(0, np.int64)


def _rank_within_user(
    user: np.ndarray, key: np.ndarray, mask: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each masked row within its user by (key, row) ascending, and masked rows per user.

    `key` is an integer array (timestamps or a permutation). One stable argsort of user * span + key is
    several times faster than a three-key lexsort; lexsort remains for spans that could overflow int64.
    """
    rows = np.flatnonzero(mask)
    k = key[rows].astype(np.int64)
    lo, hi = (int(k.min()), int(k.max())) if len(rows) else (0, 0)
    span = hi - lo + 1
    if n_users * span < 2**62:
        rows = rows[np.argsort(user[rows] * span + (k - lo), kind="stable")]
    else:
        rows = rows[np.lexsort((rows, k, user[rows]))]
    u = user[rows]
    rank = np.full(len(user), -1, np.int64)
    rank[rows] = np.arange(len(rows)) - np.searchsorted(u, u)
    return rank, np.bincount(u, minlength=n_users)


def _held_counts(
    count: np.ndarray, test: float, valid: float
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out test and valid counts per user: none below 3 interactions, always one left for training."""

    def k(v: float) -> np.ndarray:
        if v >= 1:
            return np.full(len(count), int(v), np.int64)
        return np.where(v > 0, np.maximum(1, np.rint(count * v)), 0).astype(np.int64)

    kt, kv = np.where(count >= 3, k(test), 0), np.where(count >= 3, k(valid), 0)
    total = np.minimum(kt + kv, np.maximum(count - 1, 0))
    kt = np.minimum(kt, total)
    return kt, total - kt


def _assign_cold_users(
    rng: np.random.Generator,
    part: np.ndarray,
    user: np.ndarray,
    rows: np.ndarray,
    order_key: np.ndarray,
    cold_u: np.ndarray,
    n_context: int,
    n_users: int,
) -> None:
    users = np.flatnonzero(cold_u)
    valid_user = np.zeros(n_users, bool)
    valid_user[rng.permutation(users)[: len(users) // 2]] = True
    rank, _ = _rank_within_user(user, order_key, rows, n_users)
    part[rows] = np.where(valid_user[user[rows]], CU_VALID, CU_TEST)
    part[rows & (rank < n_context)] = CU_CONTEXT


def _assign_cold_items(
    rng: np.random.Generator,
    part: np.ndarray,
    item: np.ndarray,
    rows: np.ndarray,
    cold_i: np.ndarray,
    cold_by: str,
    first_seen: np.ndarray | None,
) -> None:
    idx = np.flatnonzero(rows)
    if cold_by in ("item", "time"):
        items = np.flatnonzero(cold_i)
        # by time (first_seen given): the earlier half of the new items selects, the newest half is the test
        order = (
            items[np.argsort(first_seen[items], kind="stable")]
            if first_seen is not None
            else rng.permutation(items)
        )
        valid_item = np.zeros(len(cold_i), bool)
        valid_item[order[: len(items) // 2]] = True
        part[idx] = np.where(valid_item[item[idx]], COLD_VALID, COLD_TEST)
    else:
        idx = rng.permutation(idx)
        part[idx[: len(idx) // 2]], part[idx[len(idx) // 2 :]] = COLD_VALID, COLD_TEST
