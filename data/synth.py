"""A synthetic shop whose content predicts behaviour, so cold-start is learnable and measurable.

Every item belongs to a hidden *segment*; a segment has a prototype colour, shape, pattern and category,
and its items mostly follow it (a trait is the prototype's with probability `TRAIT_FIDELITY`). The traits
are visible in the item's picture (shape filled with the colour, the pattern drawn inside it), its text
("Striped red star, a home piece by Acme") and its attributes (category, brand, price_band, tags).
Users have hidden tastes: a sparse mixture over segments, nudged by their age band and region (so even
user attributes carry signal). An interaction picks a segment from the user's mixture, then an item from
that segment by a Zipf law (popularity skew); `EXPLORE` of them pick from the global popularity instead.

Sampling is vectorised numpy in chunks: categorical draws use one flat CDF per group laid end to end
(group g's CDF shifted by g), so `searchsorted(cdf, g + u)` draws from group g for millions of rows at
once. Pairs are deduplicated with int64 keys and topped up in rounds, so tens of millions of interactions
need no per-row Python. Images are only drawn when `images_dir` is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError
from graphrec.core.io import atomic_dir
from graphrec.core.memory import check_fits
from graphrec.core.progress import progress_bar
from graphrec.core.workspace import writes
from graphrec.data.dataset import Dataset, Schema
from graphrec.data.importer import save_dataset

COLOURS = {
    "red": (210, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (235, 210, 40),
    "green": (50, 160, 70),
    "teal": (30, 150, 150),
    "blue": (40, 80, 210),
    "purple": (130, 60, 180),
    "pink": (235, 110, 170),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
PATTERNS = ("solid", "striped", "dotted", "checked")
CATEGORIES = ("home", "garden", "toys", "fashion", "sports", "office")
BRANDS = (
    "Acme",
    "Borealis",
    "Cobalt",
    "Dune",
    "Ember",
    "Fjord",
    "Granite",
    "Halcyon",
    "Iris",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Meridian",
    "Nimbus",
    "Orchid",
    "Pinnacle",
    "Quartz",
    "Riverstone",
    "Solace",
    "Tundra",
)
PRICE_BANDS = ("budget", "mid", "high", "premium")
EXTRA_TAGS = (
    "bestseller",
    "eco",
    "handmade",
    "limited",
    "new",
    "vintage",
    "gift",
    "compact",
)
# The generator's own illustrative bands (real data is banded by graphrec.data.demographics); changing them
# would reshuffle every synthetic dataset the tests and benchmarks are calibrated on.
AGE_BANDS = ("under-18", "18-24", "25-34", "35-44", "45-54", "55+")
REGIONS = ("north", "south", "east", "west", "central")
ADJECTIVES = (
    "Classic",
    "Bold",
    "Tiny",
    "Grand",
    "Soft",
    "Bright",
    "Quiet",
    "Lucky",
    "Swift",
    "Noble",
)

N_SEGMENTS = 12
TRAIT_FIDELITY = 0.8  # chance an item's trait equals its segment's prototype
EXPLORE = 0.1  # share of interactions drawn from global popularity rather than taste
TASTE_ALPHA = (
    0.15  # Dirichlet concentration of tastes: small = each user likes few segments
)
ZIPF_A = 0.9  # popularity exponent within a segment
T0, SPAN = 1_577_836_800, 3 * 365 * 86_400  # 2020-01-01, three years of activity
CHUNK = 2_000_000  # draws per vectorised chunk (bounds memory)


@dataclass
class SynthTruth:
    """The hidden generative state, for tests and diagnostics (never part of the dataset)."""

    item_segment: np.ndarray  # int [n_items]
    item_colour: np.ndarray  # int index into COLOURS [n_items]
    item_shape: np.ndarray  # int index into SHAPES
    item_pattern: np.ndarray  # int index into PATTERNS
    user_taste: np.ndarray  # float [n_users, n_segments], rows sum to 1
    prototypes: np.ndarray  # int [n_segments, 4]: colour, shape, pattern, category


def generate(
    n_users: int = 300,
    n_items: int = 400,
    n_interactions: int = 15000,
    seed: int = 0,
    images_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    missing_images: float = 0.0,
    progress: bool = True,
) -> Dataset:
    """A synthetic Dataset (split column ""). PNGs go to `images_dir` when given (else no image column)."""
    return synthesize(
        n_users,
        n_items,
        n_interactions,
        seed,
        images_dir,
        image_size,
        missing_images,
        progress,
    )[0]


def synthesize(
    n_users: int = 300,
    n_items: int = 400,
    n_interactions: int = 15000,
    seed: int = 0,
    images_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    missing_images: float = 0.0,
    progress: bool = True,
) -> tuple[Dataset, SynthTruth]:
    """Like `generate`, also returning the hidden traits and tastes. `n_interactions=0` gives users/items only."""
    if n_users < 1 or n_items < 1 or n_interactions < 0:
        raise InputError("need at least 1 user, 1 item and 0 interactions")
    if not 0.0 <= missing_images <= 1.0:
        raise InputError(f"missing_images must be in [0, 1], got {missing_images}")
    picture_size = image_size if images_dir is not None else None
    _check_size(n_users, n_items, n_interactions, picture_size, seed)
    rng = np.random.default_rng(seed)
    n_seg = min(N_SEGMENTS, n_items)
    prototypes = _prototypes(rng, n_seg)
    items, item_traits = _items(rng, n_items, prototypes)
    users, taste = _users(rng, n_users, n_seg)
    truth = SynthTruth(**item_traits, user_taste=taste, prototypes=prototypes)
    inter = _interactions(rng, taste, truth.item_segment, n_interactions, progress)
    schema = _schema(seed)
    if images_dir is not None:
        root = Path(images_dir)
        items["image"] = _item_images(
            rng,
            items["item_id"],
            truth,
            root,
            image_size,
            missing_images,
            seed,
            progress,
        )
        schema.image_column, schema.images_dir = "image", str(root.resolve())
    return Dataset(schema, items, users, inter), truth


def _schema(seed: int) -> Schema:
    """The synthetic shop's schema: its text, item attribute and user attribute columns."""
    return Schema(
        name=f"synth-{seed}",
        text_columns=["title", "description"],
        attribute_columns=["category", "brand", "price_band", "tags"],
        user_attribute_columns=["age_band", "region"],
    )


def _item_images(
    rng: np.random.Generator,
    item_ids: pd.Series,
    truth: SynthTruth,
    root: Path,
    image_size: int,
    missing_images: float,
    seed: int,
    progress: bool,
) -> np.ndarray:
    """Each item's picture file name ("" for the `missing_images` share drawn to have none), the pictures drawn
    into `root` (created if missing) from `seed`."""
    root.mkdir(parents=True, exist_ok=True)
    names = pd.Series(item_ids + ".png")
    names[rng.random(len(item_ids)) < missing_images] = ""
    draw_images(root, names.to_numpy(), truth, image_size, seed, progress)
    return names.to_numpy()


MAX_IMAGE_SIZE = 1024  # pixels a side: the pictures are flat shapes; larger ones only cost disk and time
# bytes per item / user / interaction while generating: the tables' columns, text, and the sampling's arrays
ITEM_BYTES, USER_BYTES, INTERACTION_BYTES = 2_000, 300, 100


def _check_size(
    n_users: int, n_items: int, n_interactions: int, image_size: int | None, seed: int
) -> None:
    """One line for a size that is out of range or cannot fit in memory, before anything is allocated
    (`image_size` None: no pictures are drawn)."""
    if image_size is not None and not 8 <= image_size <= MAX_IMAGE_SIZE:
        raise InputError(
            f"--image-size must be in 8 .. {MAX_IMAGE_SIZE} pixels, got {image_size}"
        )
    if not 0 <= seed < 2**63:
        raise InputError(f"--seed must be in 0 .. 2^63-1, got {seed}")
    check_fits(
        n_items * ITEM_BYTES
        + n_users * USER_BYTES
        + n_interactions * INTERACTION_BYTES,
        f"a synthetic dataset of {n_users:,} users, {n_items:,} items and {n_interactions:,} interactions",
        "--users, --items or --interactions",
    )


@writes
def run_synth(
    out: str | os.PathLike,
    n_users: int = 300,
    n_items: int = 400,
    n_interactions: int = 15000,
    seed: int = 0,
    images: bool = True,
    image_size: int = 64,
    missing_images: float = 0.0,
) -> Dataset:
    """Generate the synthetic shop into a workspace: the `data synth` stage.

    Pictures go into WS/images/ and the dataset into WS/dataset/, both atomically, under the
    workspace lock, with the settings recorded. The shop's content predicts behaviour (see the
    module doc), so cold-start is learnable and measurable.

    Args:
        out: The workspace folder to write.
        n_users: Users to generate (at least 1).
        n_items: Items to generate (at least 1).
        n_interactions: Interactions to generate (0: users and items only).
        seed: The random seed, in 0 .. 2^63-1.
        images: Draw each item's picture into WS/images/; False: the dataset has no image column.
        image_size: The pictures' side in pixels, 8 .. 1024 (checked only when pictures are drawn).
        missing_images: The share of items drawn to have no picture (image ""), in [0, 1].

    Returns:
        The generated dataset, not split yet (`data split` splits it).

    Raises:
        InputError: On bad input: a count, seed, size or share out of range, or a dataset too large
            for the available memory.

    Example::

        from graphrec.data.synth import run_synth

        ds = run_synth("ws", n_users=1000, n_items=2000, n_interactions=50_000, seed=7)
    """
    settings = {
        "source": "synth",
        "users": n_users,
        "items": n_items,
        "interactions": n_interactions,
        "seed": seed,
        "images": images,
        "image_size": image_size,
        "missing_images": missing_images,
    }
    final = Path(out) / "images"
    if images:
        with atomic_dir(final) as tmp:
            ds = generate(
                n_users, n_items, n_interactions, seed, tmp, image_size, missing_images
            )
        ds.schema.images_dir = str(final.resolve())
    else:
        ds = generate(n_users, n_items, n_interactions, seed)
    save_dataset(out, ds, settings)
    return ds


# -- entities ---------------------------------------------------------------------------------------
def _prototypes(rng: np.random.Generator, n_seg: int) -> np.ndarray:
    """Distinct (colour, shape, pattern) per segment, so segments are told apart by content."""
    combos = rng.permutation(len(COLOURS) * len(SHAPES) * len(PATTERNS))[:n_seg]
    colour, rest = np.divmod(combos, len(SHAPES) * len(PATTERNS))
    shape, pattern = np.divmod(rest, len(PATTERNS))
    category = (np.arange(n_seg) + rng.integers(len(CATEGORIES))) % len(CATEGORIES)
    return np.stack([colour, shape, pattern, category], axis=1)


def _items(
    rng: np.random.Generator, n: int, proto: np.ndarray
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The item table (id, title, description, category, brand, price band, tags) and each item's hidden segment,
    colour, shape and pattern (keyed by their SynthTruth field); a trait follows the segment's prototype with
    probability TRAIT_FIDELITY."""
    segment = _segments(rng, n, len(proto))
    colour = _trait(rng, proto[segment, 0], len(COLOURS))
    shape = _trait(rng, proto[segment, 1], len(SHAPES))
    pattern = _trait(rng, proto[segment, 2], len(PATTERNS))
    category = _trait(rng, proto[segment, 3], len(CATEGORIES))
    brand, price = _brands_and_prices(rng, segment, len(proto))
    colour_name = _labels(list(COLOURS), colour)
    shape_name, pattern_name = _labels(SHAPES, shape), _labels(PATTERNS, pattern)
    brand_name, category_name = _labels(BRANDS, brand), _labels(CATEGORIES, category)
    # the draws keep their order: titles' adjectives, then the tags' extra labels
    title = _titles(rng, colour_name, shape_name)
    tags = _tags(rng, pattern_name)
    items = pd.DataFrame(
        {
            "item_id": _numbered_ids("i", n),
            "title": title,
            "description": _descriptions(
                pattern_name, colour_name, shape_name, category_name, brand_name
            ),
            "category": category_name,
            "brand": brand_name,
            "price_band": _labels(PRICE_BANDS, price),
            "tags": tags,
        }
    ).astype(str)
    traits = {
        "item_segment": segment,
        "item_colour": colour,
        "item_shape": shape,
        "item_pattern": pattern,
    }
    return items, traits


def _segments(rng: np.random.Generator, n: int, n_seg: int) -> np.ndarray:
    """Each item's segment: every segment gets at least one item, the rest follow uneven segment sizes."""
    seg_pop = rng.dirichlet(np.full(n_seg, 2.0))
    return rng.permutation(
        np.concatenate([np.arange(n_seg), rng.choice(n_seg, n - n_seg, p=seg_pop)])
    )


def _trait(rng: np.random.Generator, prototype: np.ndarray, k: int) -> np.ndarray:
    """Each item's trait (an index below `k`): its segment's `prototype` value, else (1 - TRAIT_FIDELITY) random."""
    n = len(prototype)
    keep = rng.random(n) < TRAIT_FIDELITY
    return np.where(keep, prototype, rng.integers(k, size=n))


def _brands_and_prices(
    rng: np.random.Generator, segment: np.ndarray, n_seg: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's brand and price band (indices): each segment favours three brands, and the price band
    follows the brand with some noise."""
    n = len(segment)
    fav = rng.integers(len(BRANDS), size=(n_seg, 3))
    brand = np.where(
        rng.random(n) < 0.7,
        fav[segment, rng.integers(3, size=n)],
        rng.integers(len(BRANDS), size=n),
    )
    price = np.clip(
        brand % len(PRICE_BANDS) + rng.integers(-1, 2, size=n) * (rng.random(n) < 0.3),
        0,
        len(PRICE_BANDS) - 1,
    )
    return brand, price


def _labels(names: Any, idx: np.ndarray) -> pd.Series:
    """The names at the indices `idx` (a vectorised index -> label lookup)."""
    return pd.Series(np.asarray(names, dtype=object)[idx])


def _numbered_ids(prefix: str, n: int) -> np.ndarray:
    """`prefix` + 0 .. n-1, zero-padded to one width so that the ids sort as they number."""
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), len(str(n - 1))))


def _titles(
    rng: np.random.Generator, colour_name: pd.Series, shape_name: pd.Series
) -> pd.Series:
    """Titles like "Bold Red Star 7": a random adjective, the colour, the shape and the item's number."""
    n = len(colour_name)
    return (
        _labels(ADJECTIVES, rng.integers(len(ADJECTIVES), size=n))
        + " "
        + colour_name.str.capitalize()
        + " "
        + shape_name.str.capitalize()
        + " "
        + pd.Series(np.arange(1, n + 1).astype(str))
    )


def _descriptions(
    pattern: pd.Series,
    colour: pd.Series,
    shape: pd.Series,
    category: pd.Series,
    brand: pd.Series,
) -> pd.Series:
    """Descriptions like "A striped red star, a home piece by Acme.": every visible trait in words."""
    return (
        "A "
        + pattern
        + " "
        + colour
        + " "
        + shape
        + ", a "
        + category
        + " piece by "
        + brand
        + "."
    )


def _tags(rng: np.random.Generator, pattern_name: pd.Series) -> pd.Series:
    """Tags: the pattern plus 0-2 extra labels, '|'-separated (a multi-valued attribute)."""
    n = len(pattern_name)
    extra = rng.integers(len(EXTRA_TAGS), size=(n, 2))
    n_extra = rng.integers(0, 3, size=n)
    first, second = _labels(EXTRA_TAGS, extra[:, 0]), _labels(EXTRA_TAGS, extra[:, 1])
    tags = pattern_name.where(n_extra == 0, pattern_name + "|" + first)
    return tags.where((n_extra < 2) | (first == second), tags + "|" + second)


def _users(
    rng: np.random.Generator, n: int, n_seg: int
) -> tuple[pd.DataFrame, np.ndarray]:
    age = rng.choice(len(AGE_BANDS), size=n, p=[0.05, 0.2, 0.3, 0.2, 0.15, 0.1])
    region = rng.integers(len(REGIONS), size=n)
    # each age band and region lifts a few segments, so coarse attributes hint at taste
    lift_age = rng.random((len(AGE_BANDS), n_seg)) < 0.25
    lift_region = rng.random((len(REGIONS), n_seg)) < 0.25
    alpha = TASTE_ALPHA * (1.0 + 3.0 * lift_age[age] + 2.0 * lift_region[region])
    g = rng.gamma(alpha) + 1e-12
    taste = g / g.sum(axis=1, keepdims=True)
    users = pd.DataFrame(
        {
            "user_id": _numbered_ids("u", n),
            "age_band": np.asarray(AGE_BANDS, dtype=object)[age],
            "region": np.asarray(REGIONS, dtype=object)[region],
        }
    ).astype(str)
    return users, taste


# -- interactions -----------------------------------------------------------------------------------
def _grouped_cdf(probs: np.ndarray, group: np.ndarray) -> np.ndarray:
    """CDFs of consecutive groups laid end to end: entry j is group[j] + P(group member <= j)."""
    cum = np.cumsum(probs)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    base = np.repeat(cum[starts] - probs[starts], np.diff(np.r_[starts, len(group)]))
    total = np.repeat(
        np.add.reduceat(probs, starts), np.diff(np.r_[starts, len(group)])
    )
    cdf = group + (cum - base) / total
    ends = np.r_[starts[1:], len(group)] - 1
    # exact upper end, so g + u (u < 1) never falls past its group
    cdf[ends] = group[ends] + 1.0
    return cdf


def _interactions(
    rng: np.random.Generator,
    taste: np.ndarray,
    item_seg: np.ndarray,
    n_target: int,
    progress: bool,
) -> pd.DataFrame:
    """The interaction table of `n_target` distinct (user, item) pairs: log-normal quotas per user, items drawn
    from each user's taste (EXPLORE of them from global popularity), then dated and rated."""
    n_users = int(taste.shape[0])
    n_items = len(item_seg)
    if n_target == 0:
        columns = {
            "user": np.int32,
            "item": np.int32,
            "weight": np.float32,
            "timestamp": np.int64,
        }
        return pd.DataFrame({c: np.zeros(0, t) for c, t in columns.items()}).assign(
            split=""
        )
    cap = max(1, int(0.5 * n_items))  # a user may touch at most half the catalogue
    if n_target > cap * n_users:
        raise InputError(
            f"{n_target} interactions exceed {cap} per user (half the items) x {n_users} users"
        )
    quota = _quotas(rng, n_users, n_target, cap)
    draw = _item_sampler(rng, taste, item_seg)
    keys = _sample_keys(draw, quota, n_items, n_target, progress)
    return _dated_and_rated(rng, keys, taste, item_seg)


def _item_sampler(
    rng: np.random.Generator, taste: np.ndarray, item_seg: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """A function drawing one item for each of the given users: a segment from the user's taste, then an item of
    that segment by a Zipf law over a random order; EXPLORE of the draws take an item by global popularity."""
    # ints, so the rng draws below are typed as arrays
    n_users, n_seg = map(int, taste.shape)
    n_items = len(item_seg)
    # items sorted by segment, Zipf popularity within each segment over a random order
    order = np.lexsort((rng.random(n_items), item_seg))
    seg_sorted = item_seg[order]
    rank = np.arange(n_items) - np.searchsorted(seg_sorted, seg_sorted)
    item_cdf = _grouped_cdf(1.0 / (rank + 1.0) ** ZIPF_A, seg_sorted)
    global_p = rng.permutation(1.0 / (np.arange(n_items) + 1.0) ** ZIPF_A)
    global_cdf = np.cumsum(global_p / global_p.sum())
    global_cdf[-1] = 1.0
    taste_cdf = _grouped_cdf(taste.ravel(), np.repeat(np.arange(n_users), n_seg))
    seg_first = np.searchsorted(seg_sorted, np.arange(n_seg))
    seg_last = np.searchsorted(seg_sorted, np.arange(n_seg), side="right") - 1

    def draw(users: np.ndarray) -> np.ndarray:
        # side="right" skips zero-mass entries; the clips guard float rounding at group edges
        flat = np.searchsorted(taste_cdf, users + rng.random(len(users)), side="right")
        seg = np.clip(flat - users * n_seg, 0, n_seg - 1)
        pos = np.searchsorted(item_cdf, seg + rng.random(len(users)), side="right")
        item = order[np.clip(pos, seg_first[seg], seg_last[seg])]
        explore = rng.random(len(users)) < EXPLORE
        pick = np.searchsorted(global_cdf, rng.random(int(explore.sum())), side="right")
        item[explore] = np.minimum(pick, n_items - 1)
        return item

    return draw


def _sample_keys(
    draw: Callable[[np.ndarray], np.ndarray],
    quota: np.ndarray,
    n_items: int,
    n_target: int,
    progress: bool,
) -> np.ndarray:
    """Distinct (user * n_items + item) keys, quota[user] per user (`n_target` in all), drawn in vectorised
    chunks; each round redraws what duplicates took away."""
    n_users = len(quota)
    keys = np.zeros(0, np.int64)
    have = np.zeros(n_users, np.int64)
    bar = progress_bar(
        show=progress,
        total=n_target,
        desc="sampling interactions",
        unit="pair",
        leave=False,
    )
    # top-up rounds redraw duplicates; heavy users need ever more draws per new pair
    for round_ in range(12):
        need = quota - have
        if need.sum() == 0:
            break
        ask = np.ceil(need * 1.25 * 2.0**round_).astype(np.int64) + (need > 0)
        users = np.repeat(np.arange(n_users), ask)
        new = [
            users[i : i + CHUNK] * n_items + draw(users[i : i + CHUNK])
            for i in range(0, len(users), CHUNK)
        ]
        keys = _keep_first(np.concatenate([keys, *new]), quota, n_items)
        have = np.bincount(keys // n_items, minlength=n_users)
        bar.update(int(have.sum()) - bar.n)
    bar.close()
    return keys


def _dated_and_rated(
    rng: np.random.Generator, keys: np.ndarray, taste: np.ndarray, item_seg: np.ndarray
) -> pd.DataFrame:
    """The interaction table of the (user * n_items + item) `keys`: timestamps after the user's start and the
    item's release, ratings that follow the user's taste, rows by user then time."""
    n_users, n_items = len(taste), len(item_seg)
    user, item = np.divmod(np.sort(keys), n_items)
    n = len(user)
    # timestamps: a user is active from a start date on; an item exists from its release on
    start = T0 + (rng.random(n_users) * 0.8 * SPAN).astype(np.int64)
    release = T0 + (rng.random(n_items) * 0.7 * SPAN).astype(np.int64)
    begin = np.maximum(start[user], release[item])
    ts = begin + (rng.random(n) * (T0 + SPAN - begin)).astype(np.int64)
    # ratings 1..5 in halves: higher where the item's segment is central to the user's taste
    affinity = taste[user, item_seg[item]] / taste.max(axis=1)[user]
    rating = np.clip(
        np.round((1.5 + 3.0 * affinity + rng.normal(0.0, 0.6, n)) * 2) / 2, 1.0, 5.0
    )
    by_time = np.lexsort((ts, user))
    out = pd.DataFrame(
        {
            "user": user[by_time].astype(np.int32),
            "item": item[by_time].astype(np.int32),
            "weight": rating[by_time].astype(np.float32),
            "timestamp": ts[by_time],
        }
    )
    out["split"] = ""
    return out


def _quotas(
    rng: np.random.Generator, n_users: int, n_target: int, cap: int
) -> np.ndarray:
    """Per-user counts: log-normal activity, at least one each (when possible), at most `cap`, summing to n_target."""
    act = rng.lognormal(0.0, 1.0, n_users)
    floor = 1 if n_target >= n_users else 0
    quota = np.minimum(
        floor
        + np.floor(act / act.sum() * (n_target - floor * n_users)).astype(np.int64),
        cap,
    )
    # hand out the remainder where room is left
    while (short := n_target - int(quota.sum())) > 0:
        room = np.flatnonzero(quota < cap)
        pick = room[rng.permutation(len(room))[:short]]
        quota[pick] += 1
    return quota


def _keep_first(keys: np.ndarray, quota: np.ndarray, n_items: int) -> np.ndarray:
    """Unique keys in first-seen order, at most quota[user] per user."""
    _, first = np.unique(keys, return_index=True)
    keys = keys[np.sort(first)]
    user = keys // n_items
    by_user = np.argsort(user, kind="stable")
    u_sorted = user[by_user]
    rank = np.arange(len(keys)) - np.searchsorted(u_sorted, u_sorted)
    return keys[by_user[rank < quota[u_sorted]]]


# -- images -----------------------------------------------------------------------------------------
def draw_images(
    root: Path,
    names: np.ndarray,
    truth: SynthTruth,
    size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> None:
    """One PNG per item with a name: its shape filled with its colour, its pattern drawn inside."""
    rng = np.random.default_rng(seed + 1)
    todo = np.flatnonzero(names != "")
    # position and scale, so pictures differ
    jitter = rng.uniform(-0.08, 0.08, size=(len(names), 3))
    tint = rng.integers(225, 256, size=(len(names), 3))
    for i in progress_bar(
        todo, show=progress, desc="drawing images", unit="img", leave=False
    ):
        img = _picture(
            size,
            tuple(COLOURS.values())[truth.item_colour[i]],
            SHAPES[truth.item_shape[i]],
            PATTERNS[truth.item_pattern[i]],
            jitter[i],
            (int(tint[i, 0]), int(tint[i, 1]), int(tint[i, 2])),
        )
        img.save(root / names[i], format="PNG")


def _picture(
    size: int,
    rgb: tuple[int, int, int],
    shape: str,
    pattern: str,
    jitter: np.ndarray,
    background: tuple[int, int, int],
) -> Any:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), background)
    mask = Image.new("L", (size, size), 0)
    cx, cy = size * (0.5 + jitter[0]), size * (0.5 + jitter[1])
    r = size * (0.36 + jitter[2])
    _shape(ImageDraw.Draw(mask), shape, cx, cy, r)
    fill = Image.new("RGB", (size, size), rgb)
    if pattern != "solid":
        light = tuple(int(c + (255 - c) * 0.7) for c in rgb)
        d = ImageDraw.Draw(fill)
        step = max(4, size // 8)
        for k in range(0, size, step):
            if pattern == "striped":
                d.rectangle([k, 0, k + step // 2 - 1, size], fill=light)
            else:
                for m in range(0, size, step):
                    if pattern == "dotted":
                        d.ellipse(
                            [k + 1, m + 1, k + step // 2, m + step // 2], fill=light
                        )
                    elif (k // step + m // step) % 2:
                        d.rectangle([k, m, k + step - 1, m + step - 1], fill=light)
    img.paste(fill, (0, 0), mask)
    return img


def _shape(d: Any, shape: str, cx: float, cy: float, r: float) -> None:
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        d.rectangle(
            [cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=255
        )
    elif shape == "triangle":
        d.polygon(
            [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=255
        )
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=255)
    elif shape == "cross":
        w = r * 0.35
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=255)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=255)
    else:  # star: ten points alternating outer and inner radius
        ang = np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        d.polygon(
            list(
                zip(
                    (cx + rad * np.cos(ang)).tolist(), (cy - rad * np.sin(ang)).tolist()
                )
            ),
            fill=255,
        )
