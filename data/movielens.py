"""MovieLens 100K and latest-small: download (official GroupLens zips) and load into a canonical Dataset.

    100k          u.data (user, item, rating, timestamp; tab-separated), u.item (latin-1, '|'-separated:
                  id, title, release date, video date, IMDb URL, 19 genre flags), u.genre, u.user
                  (id|age|gender|occupation|zip). Users keep coarse attributes only: age_band, gender,
                  occupation and a US zip region; the raw zip code never leaves this module.
    latest-small  ratings.csv, movies.csv, tags.csv (per-movie lowercased unique tags), links.csv (imdbId,
                  tmdbId kept as item columns); optional posters folder holding <movieId>.jpg.

Both go through data.build.build_dataset, so every check of `graphrec data import` applies.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError
from graphrec.core.io import atomic_dir, file_sha256
from graphrec.core.progress import progress_bar
from graphrec.core.workspace import Workspace, writes
from graphrec.data.build import build_dataset, is_file_entry
from graphrec.data.dataset import Dataset
from graphrec.data.demographics import age_bands
from graphrec.data.readers import check_ids, fail_at, numeric_column, read_table

VARIANTS = ("100k", "latest-small")
FOLDER = {"100k": "ml-100k", "latest-small": "ml-latest-small"}
URLS = {
    v: f"https://files.grouplens.org/datasets/movielens/{FOLDER[v]}.zip"
    for v in VARIANTS
}
FILES = {
    "100k": ("u.data", "u.item", "u.genre", "u.user"),
    "latest-small": ("ratings.csv", "movies.csv", "tags.csv", "links.csv"),
}
# The official releases; other counts are allowed (edited copies) but reported in the notes.
EXPECTED = {
    "100k": {"interactions": 100_000, "users": 943, "items": 1_682},
    "latest-small": {"interactions": 100_836, "users": 610, "items": 9_742},
}
# First digit of a US ZIP code -> its national area (USPS zones 0-9).
ZIP_REGIONS = np.array(
    [
        "northeast",
        "ny-pa-de",
        "mid-atlantic",
        "southeast",
        "great-lakes",
        "upper-midwest",
        "central",
        "south-central",
        "mountain",
        "pacific",
    ],
    dtype=object,
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
YEAR_IN_TITLE = r"\((\d{4})\)\s*$"


# ------------------------------------------------------------------------------------------- loading
def load_movielens(
    path: str | os.PathLike,
    variant: str = "100k",
    posters: str | os.PathLike | None = None,
    min_rating: float | None = None,
) -> tuple[Dataset, list[str]]:
    """Read an unzipped MovieLens folder into a checked Dataset; returns it with human-readable notes.

    `posters`: folder of item images named <item id>.jpg (.jpeg/.png/.webp); items without one get image "".
    `min_rating`: keep only ratings of at least this (e.g. 4: the usual implicit-feedback positives).
    """
    if variant not in VARIANTS:
        raise InputError(
            f"unknown MovieLens variant {variant!r} (known: {', '.join(VARIANTS)})"
        )
    root = _find_root(Path(path), variant)
    notes: list[str] = []
    loader = _load_100k if variant == "100k" else _load_latest_small
    ds = loader(root, posters, notes, min_rating)
    got = {
        "interactions": len(ds.interactions),
        "users": ds.n_users,
        "items": ds.n_items,
    }
    if got != EXPECTED[variant]:
        notes.append(
            f"counts {got} differ from the official {FOLDER[variant]} release {EXPECTED[variant]}"
        )
    return ds, notes


@writes  # the lock refuses an --out that is not a folder before any download or load
def import_movielens(
    out: str | os.PathLike,
    path: str | os.PathLike,
    variant: str = "100k",
    posters: str | os.PathLike | None = None,
    download: bool = False,
    min_rating: float | None = None,
) -> tuple[Dataset, list[str]]:
    """Load a MovieLens release (downloading it first if asked) into the workspace's dataset/ stage.

    The `data movielens` stage: (download,) load, write WS/dataset atomically, and record the
    settings and the input files' hashes, under the workspace lock like every other writer (one
    writer at a time; an --out that is a file is refused, before any download or load). Every check
    of `graphrec data import` applies.

    Args:
        out: The workspace folder to write.
        path: The unzipped MovieLens folder (its files in it, or in its ml-100k / ml-latest-small
            sub-folder as unzipping leaves them); with `download`, where the release is downloaded
            to when it does not exist.
        variant: The release: "100k" or "latest-small".
        posters: A folder of item images named <item id>.jpg (.jpeg/.png/.webp); items without one
            get image "". None: no images.
        download: Fetch the official GroupLens zip into `path` when `path` does not exist (checked
            against the checksum GroupLens publishes).
        min_rating: Keep only ratings of at least this (e.g. 4: the usual implicit-feedback
            positives); None keeps every rating.

    Returns:
        The checked dataset, and the notes (human-readable lines: the download, the posters matched,
        counts that differ from the official release, ...).

    Raises:
        InputError: On bad input: an unknown variant, a folder that is missing (without `download`)
            or not a MovieLens folder, a failed or corrupt download, a bad file, or an `out` that is
            not a folder.

    Example::

        from graphrec.data.movielens import import_movielens

        ds, notes = import_movielens("ws", "data/ml-100k", download=True, min_rating=4)
    """
    path = Path(path)
    notes: list[str] = []
    if download and not path.exists():
        download_movielens(variant, path)
        notes.append(f"downloaded {URLS[variant]} into {path}")
    ds, load_notes = load_movielens(path, variant, posters, min_rating)
    root = _find_root(path, variant)
    ws = Workspace(out)
    ds.save(ws)
    settings = {
        "source": "movielens",
        "variant": variant,
        "path": str(path.resolve()),
        "posters": None if posters is None else str(Path(posters).resolve()),
        "download": download,
        "min_rating": min_rating,
    }
    ws.record(
        "dataset",
        settings,
        inputs={name: file_sha256(root / name) for name in FILES[variant]},
    )
    return ds, notes + load_notes


def _find_root(path: Path, variant: str) -> Path:
    """The folder holding the variant's files: `path` itself, or `path`/ml-100k as left by unzipping."""
    marker = FILES[variant][0]
    for root in (path, path / FOLDER[variant]):
        if (root / marker).is_file():
            return root
    if not path.exists():
        raise InputError(
            f"MovieLens {variant} folder not found (pass --download to fetch it)",
            file=path,
        )
    if not path.is_dir():
        raise InputError(
            f"expected the unzipped MovieLens {variant} folder, found a file", file=path
        )
    raise InputError(
        f"not a MovieLens {variant} folder: {marker} is missing", file=path / marker
    )


def _load_100k(
    root: Path,
    posters: str | os.PathLike | None,
    notes: list[str],
    min_rating: float | None,
) -> Dataset:
    """The 100K files (u.data, u.genre, u.item, u.user, read in that order) as a checked Dataset."""
    ratings = _read_fields(
        root / "u.data", "\t", ["user_id", "item_id", "rating", "timestamp"]
    )
    items = _movies_100k(root, _genre_names(root))
    image = _attach_posters(items, posters, notes)
    users = _users_100k(root, notes)
    return build_dataset(
        ratings,
        items,
        users,
        text_columns=["title"],
        attribute_columns=["genres", "year"],
        image_column=image,
        images_dir=posters,
        user_attribute_columns=["age_band", "gender", "occupation", "region"],
        name=FOLDER["100k"],
        notes=notes,
        min_weight=min_rating,
    )


def _genre_names(root: Path) -> np.ndarray:
    """The genre names of u.genre in the order of their indices (u.item's genre flag columns)."""
    genres = _read_fields(root / "u.genre", "|", ["genre", "index"])
    index = numeric_column(genres, "index", integer=True)
    if sorted(index.tolist()) != list(range(len(genres))):
        raise InputError(
            f"genre indices must be 0..{len(genres) - 1}, each once",
            file=genres.attrs["source"],
            column="index",
        )
    return genres["genre"].to_numpy()[np.argsort(index)]


def _movies_100k(root: Path, genre_names: np.ndarray) -> pd.DataFrame:
    """u.item as the item table: id, title, the genres joined by '|', and the release year ("" if none)."""
    flags = [f"genre_{i}" for i in range(len(genre_names))]
    raw = _read_fields(
        root / "u.item",
        "|",
        ["item_id", "title", "release_date", "video_date", "url"] + flags,
    )
    joined = _joined_genres(raw, raw[flags].to_numpy(), genre_names)
    year = raw["release_date"].str.extract(r"(\d{4})\s*$")[0]
    year = year.fillna(raw["title"].str.extract(YEAR_IN_TITLE)[0]).fillna("")
    return _with_source(
        pd.DataFrame(
            {
                "item_id": raw["item_id"].str.strip(),
                "title": raw["title"],
                "genres": joined.to_numpy(),
                "year": year.to_numpy(),
            }
        ),
        raw,
    )


def _joined_genres(
    raw: pd.DataFrame, flag_values: np.ndarray, genre_names: np.ndarray
) -> pd.Series:
    """Each movie's genres (the names whose 0/1 flag is "1") joined by '|'; a flag that is neither is an error."""
    bad = np.argwhere(~np.isin(flag_values, ["0", "1"]))
    if len(bad):
        row, col = bad[0]
        raise fail_at(
            raw,
            int(row),
            str(genre_names[col]),
            f"genre flag must be 0 or 1, found {flag_values[row, col]!r}",
        )
    # 'unknown' is MovieLens's placeholder for "no genre", like latest-small's "(no genres listed)".
    labels = np.where(
        genre_names == "unknown", "", np.char.add(genre_names.astype(str), "|")
    ).astype(object)
    return (
        pd.DataFrame(np.where(flag_values == "1", labels, ""))
        .sum(axis=1)
        .str.rstrip("|")
    )


def _users_100k(root: Path, notes: list[str]) -> pd.DataFrame:
    """u.user as coarse user attributes: age band, gender, occupation and the zip code's US region."""
    people = _read_fields(
        root / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"]
    )
    check_ids(people, "user_id", unique=True)
    age = numeric_column(people, "age", integer=True)
    zips = people["zip"].str.strip()
    numeric_zip = zips.str.fullmatch(r"\d{5}").to_numpy()
    region = np.full(len(zips), "other", dtype=object)
    region[numeric_zip] = ZIP_REGIONS[zips[numeric_zip].str[0].astype(int).to_numpy()]
    notes.append(
        f"user zip codes coarsened to {len(ZIP_REGIONS)} US regions; {int((~numeric_zip).sum())} "
        "non-US or malformed zip codes became 'other'; raw zip codes are not kept"
    )
    return _with_source(
        pd.DataFrame(
            {
                "user_id": people["user_id"],
                "age_band": age_bands(age),
                "gender": people["gender"].str.strip(),
                "occupation": people["occupation"].str.strip(),
                "region": region,
            }
        ),
        people,
    )


def _load_latest_small(
    root: Path,
    posters: str | os.PathLike | None,
    notes: list[str],
    min_rating: float | None,
) -> Dataset:
    """The latest-small CSV files (ratings, movies, tags, links, read in that order) as a checked Dataset; the
    links' imdbId and tmdbId ride along as item columns."""
    ratings = read_table(
        root / "ratings.csv", ("userId", "movieId", "rating", "timestamp")
    )
    ratings = _with_source(
        ratings.rename(columns={"userId": "user_id", "movieId": "item_id"}), ratings
    )
    items = _movies_latest_small(root)
    image = _attach_posters(items, posters, notes)
    ds = _build_latest_small(ratings, items, image, posters, notes, min_rating)
    # build_dataset keeps only role columns; the external ids ride along in the same (unchanged) row order.
    for col in ("imdbId", "tmdbId"):
        ds.items[col] = items[col].to_numpy()
    n_tagged = int((ds.items["tags"] != "").sum())
    notes.append(
        f"{n_tagged} movies carry user tags (lowercased, de-duplicated, '|' joined)"
    )
    return ds


def _movies_latest_small(root: Path) -> pd.DataFrame:
    """movies.csv as the item table (title, genres, year), with each movie's tags from tags.csv and its imdbId
    and tmdbId from links.csv ("" where a movie has no link row)."""
    movies = read_table(root / "movies.csv", ("movieId", "title", "genres"))
    check_ids(movies, "movieId", unique=True)
    items = _with_source(
        pd.DataFrame(
            {
                "item_id": movies["movieId"],
                "title": movies["title"].str.strip(),
                "genres": movies["genres"]
                .str.strip()
                .replace("(no genres listed)", ""),
                "year": movies["title"].str.extract(YEAR_IN_TITLE)[0].fillna(""),
            }
        ),
        movies,
    )
    items["tags"] = _tags(
        read_table(root / "tags.csv", ("movieId", "tag")), items["item_id"]
    ).to_numpy()
    links = read_table(root / "links.csv", ("movieId", "imdbId", "tmdbId"))
    check_ids(links, "movieId", unique=True)
    pos = pd.Index(links["movieId"]).get_indexer(items["item_id"])
    for col in ("imdbId", "tmdbId"):  # movies without a link row get ""
        items[col] = np.where(pos >= 0, links[col].str.strip().to_numpy()[pos], "")
    return items


def _build_latest_small(
    ratings: pd.DataFrame,
    items: pd.DataFrame,
    image: str | None,
    posters: str | os.PathLike | None,
    notes: list[str],
    min_rating: float | None,
) -> Dataset:
    """build_dataset over the latest-small tables; an error names the column as the file spells it."""
    try:
        return build_dataset(
            ratings,
            items,
            None,
            text_columns=["title", "tags"],
            attribute_columns=["genres", "year", "tags"],
            image_column=image,
            images_dir=posters,
            name=FOLDER["latest-small"],
            notes=notes,
            min_weight=min_rating,
        )
    except InputError as e:
        if e.column is not None:
            e.column = {"user_id": "userId", "item_id": "movieId"}.get(
                e.column, e.column
            )
        raise


def _tags(tags: pd.DataFrame, item_ids: pd.Series) -> pd.Series:
    """Per item: its sorted unique lowercased tags joined by '|' (a '|' inside a tag becomes a space)."""
    check_ids(tags, "movieId", unique=False)
    pos = pd.Index(item_ids).get_indexer(tags["movieId"])
    if (pos < 0).any():
        at = int(np.flatnonzero(pos < 0)[0])
        raise fail_at(
            tags,
            at,
            "movieId",
            f"tag for unknown movie {tags['movieId'].iloc[at]!r} (not in movies.csv)",
        )
    text = tags["tag"].str.strip().str.lower().str.replace("|", " ", regex=False)
    frame = pd.DataFrame({"pos": pos, "tag": text})
    frame = frame[frame["tag"] != ""].drop_duplicates().sort_values(["pos", "tag"])
    joined = frame.groupby("pos")["tag"].agg("|".join)
    return pd.Series(
        joined.reindex(range(len(item_ids)), fill_value="").to_numpy(),
        index=item_ids.index,
    )


def _attach_posters(
    items: pd.DataFrame, posters: str | os.PathLike | None, notes: list[str]
) -> str | None:
    """Add an 'image' column naming <item_id>.<ext> when the posters folder has it; returns the column name."""
    if posters is None:
        return None
    folder = Path(posters)
    if not folder.is_dir():
        raise InputError("posters folder not found", file=folder)
    by_stem: dict[str, str] = {}
    # one listing, not one stat per item
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() in IMAGE_SUFFIXES and is_file_entry(entry):
            by_stem.setdefault(stem, entry.name)
    items["image"] = items["item_id"].map(by_stem).fillna("").to_numpy()
    n = int((items["image"] != "").sum())
    unused = len(by_stem) - n
    notes.append(
        f"posters matched by file name <item id>.jpg: {n} items have one"
        + (f"; {unused} image files match no item" if unused else "")
    )
    return "image"


def _with_source(frame: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """Copy the file name and row numbering of the table a derived frame came from (for error messages)."""
    frame.attrs = dict(like.attrs)
    return frame


def _read_fields(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    """A headerless delimited file (UTF-8, else latin-1) with exactly len(names) fields per line, as strings."""
    if not path.is_file():
        raise InputError(
            "file not found" if not path.exists() else "is a folder, expected a file",
            file=path,
        )
    raw = path.read_bytes()
    if b"\0" in raw:
        raise InputError(
            "binary data (NUL byte), expected MovieLens text",
            file=path,
            row=raw[: raw.index(b"\0")].count(b"\n") + 1,
        )
    try:  # the GroupLens files are latin-1; some re-published copies were re-encoded to UTF-8
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    lines = decoded.splitlines()
    while lines and not lines[-1].strip():  # u.genre ends with a blank line
        lines.pop()
    if not lines:
        raise InputError("file is empty", file=path)
    n_fields = pd.Series(lines, dtype=object).str.count(re.escape(sep)).to_numpy() + 1
    wrong = np.flatnonzero(n_fields != len(names))
    if len(wrong):
        raise InputError(
            f"expected {len(names)} {sep!r}-separated fields, found {n_fields[wrong[0]]}",
            file=path,
            row=int(wrong[0]) + 1,
        )
    frame = pd.DataFrame(
        pd.Series(lines, dtype=object).str.split(sep, regex=False).tolist(),
        columns=names,
    )
    frame = frame.astype(str)
    frame.attrs.update(source=str(path), row_word="line", row_offset=1)
    return frame


# ------------------------------------------------------------------------------------------- download
def download_movielens(
    variant: str,
    dest: str | os.PathLike,
    url: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch the official GroupLens zip, check it and unzip its files into `dest` (created atomically).

    `md5` defaults to the checksum GroupLens publishes beside the zip (<url>.md5); where none is published
    the zip's own CRC-32 of every member (checked while extracting) still catches a damaged transfer.
    `url` may be any URL urllib opens (file:// included), for mirrors and tests.
    """
    if variant not in VARIANTS:
        raise InputError(
            f"unknown MovieLens variant {variant!r} (known: {', '.join(VARIANTS)})"
        )
    dest = Path(dest)
    if dest.exists():
        raise InputError("already exists; download into a new folder", file=dest)
    url = url or URLS[variant]
    if md5 is None:
        md5 = _published_md5(url + ".md5", timeout)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        dir=dest.parent, prefix=f".{dest.name}."
    ) as scratch:
        archive = Path(scratch) / "download.zip"
        digest = _fetch_to(url, archive, timeout)
        if md5 is not None and digest.lower() != md5.lower():
            raise InputError(
                f"download is corrupt: MD5 {digest} but GroupLens publishes {md5.lower()}",
                file=url,
            )
        with atomic_dir(dest) as tmp:
            _unzip(archive, tmp, variant, url)
    return dest


def _published_md5(url: str, timeout: float) -> str | None:
    """The checksum in a '<zip>.md5' file ("MD5 (x.zip) = <hex>" or "<hex>  x.zip"); None if not published."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("ascii", "replace")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise InputError(f"download failed: {_reason(e)}", file=url) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        # file:// mirror without a .md5
        if isinstance(getattr(e, "reason", None), FileNotFoundError):
            return None
        raise InputError(f"download failed: {_reason(e)}", file=url) from None
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if not found:
        raise InputError("no MD5 checksum in the published checksum file", file=url)
    return found.group(0)


def _fetch_to(url: str, target: Path, timeout: float) -> str:
    """Stream `url` into `target` with a progress bar; returns the MD5 of what was written."""
    digest = hashlib.md5()
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            open(target, "wb") as f,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(
                total=total, unit="B", unit_scale=True, desc=Path(url).name, leave=False
            ) as bar:
                while block := response.read(1 << 16):
                    f.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise InputError(f"download failed: {_reason(e)}", file=url) from None
    return digest.hexdigest()


def _reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or e)


def _unzip(archive: Path, into: Path, variant: str, url: str) -> None:
    """Extract the files under the zip's top folder (ml-100k/...) into `into`, refusing paths that escape it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            for m in members:
                parts = Path(m.filename).parts
                if (
                    m.filename.startswith(("/", "\\"))
                    or ".." in parts
                    or ":" in m.filename
                ):
                    raise InputError(
                        f"zip member {m.filename!r} would be written outside the folder",
                        file=url,
                    )
            prefix = f"{FOLDER[variant]}/"
            strip = all(m.filename.startswith(prefix) for m in members)
            for m in members:
                target = into / (m.filename[len(prefix) :] if strip else m.filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise InputError(f"not a readable zip file ({e})", file=url) from None
    missing = [f for f in FILES[variant] if not (into / f).is_file()]
    if missing:
        raise InputError(
            f"the zip lacks the MovieLens {variant} file(s) {', '.join(missing)}",
            file=url,
        )
