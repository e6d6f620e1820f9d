"""MovieLens loaders: hand-made miniature folders (always), the real releases (when ../shared/data has them),
the CLI command, and the download path against a local zip (never the network)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_DATA, shared_path

from graphrec.core.errors import InputError
from graphrec.core.workspace import Workspace
from graphrec.data import movielens
from graphrec.data.dataset import Dataset
from graphrec.data.movielens import download_movielens, import_movielens, load_movielens

GENRES = ["unknown", "Action", "Comedy", "Drama"]


def write_mini_100k(root: Path) -> Path:
    """Four movies, four users (one Canadian postcode), six ratings, in the 100K file formats."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.genre").write_text(
        "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n"
    )

    def item(i, title, date, flags):
        return f"{i}|{title}|{date}||http://x|{'|'.join(flags)}\n"

    (root / "u.item").write_bytes(
        "".join(
            [
                item(1, "Toy Story (1995)", "01-Jan-1995", "0011"),
                item(
                    2, "Misérables, Les (1995)", "", "0001"
                ),  # no release date: year from the title
                item(
                    3, "unknown", "", "1000"
                ),  # MovieLens's 'unknown' genre means none
                item(
                    4, "Heat (1995)", "15-Dec-1996", "0100"
                ),  # release date wins over the title
            ]
        ).encode("latin-1")
    )
    (root / "u.user").write_text(
        "1|24|M|technician|85711\n2|17|F|student|02138\n"
        "3|56|M|other|K7L5J\n4|45|F|writer|9410\n"
    )
    rows = [
        (1, 1, 5, 881250949),
        (1, 2, 3, 881250950),
        (2, 1, 4, 881250951),
        (3, 4, 1, 881250952),
        (4, 3, 2, 881250953),
        (4, 4, 4, 881250954),
    ]
    (root / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    return root


def write_mini_latest(root: Path) -> tuple[Path, Path]:
    """Four movies (one unrated, one without genres), three users, tags, links and two posters."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n2,"American President, The (1995)",'
        "Comedy|Drama|Romance\n3,Babylon 5,(no genres listed)\n4,Unrated (2001),Drama\n"
    )
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964982704\n"
        "2,1,5.0,964982705\n3,3,0.5,964982706\n"
    )
    (root / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,1,Pixar,1\n2,1,pixar ,2\n2,1,fun,3\n"
        '1,2,"a|b",4\n'
    )
    (root / "links.csv").write_text(
        "movieId,imdbId,tmdbId\n1,0114709,862\n2,0112346,9087\n3,0105946,\n"
        "4,0000001,1\n"
    )
    posters = root.parent / "posters"
    posters.mkdir()
    for name in ("1.jpg", "3.jpg", "999.jpg"):
        (posters / name).write_bytes(b"\xff\xd8jpeg")
    return root, posters


def test_mini_100k_items_users_and_privacy(tmp_path):
    ds, notes = load_movielens(write_mini_100k(tmp_path / "ml-100k"), "100k")
    items = ds.items.set_index("item_id")
    assert (
        items.loc["1", "genres"] == "Comedy|Drama" and items.loc["1", "year"] == "1995"
    )
    assert (
        items.loc["2", "title"] == "Misérables, Les (1995)"
        and items.loc["2", "year"] == "1995"
    )
    assert items.loc["3", "genres"] == "" and items.loc["3", "year"] == ""
    assert items.loc["4", "year"] == "1996"
    users = ds.users.set_index("user_id")
    assert list(users.columns) == ["age_band", "gender", "occupation", "region"]
    assert users["age_band"].tolist() == ["18-24", "<18", "56+", "45-49"]
    assert users["region"].tolist() == [
        "mountain",
        "northeast",
        "other",
        "other",
    ]  # 9410: not a 5-digit zip
    assert not any("zip" in c for c in ds.users.columns)
    assert not ds.users.isin(["85711", "02138", "K7L5J"]).any().any()
    assert ds.schema.user_attribute_columns == [
        "age_band",
        "gender",
        "occupation",
        "region",
    ]
    assert ds.schema.text_columns == ["title"] and ds.schema.attribute_columns == [
        "genres",
        "year",
    ]
    assert ds.interactions["weight"].tolist() == [5, 3, 4, 1, 2, 4]
    assert any("differ from the official" in n for n in notes)


def test_100k_reencoded_as_utf8_is_read_too(tmp_path):
    root = write_mini_100k(tmp_path / "ml-100k")
    (root / "u.item").write_text(
        (root / "u.item").read_text(encoding="latin-1"), encoding="utf-8"
    )
    ds, _ = load_movielens(root, "100k")
    assert ds.items["title"].iloc[1] == "Misérables, Les (1995)"


def test_mini_latest_small_tags_links_posters(tmp_path):
    root, posters = write_mini_latest(tmp_path / "ml-latest-small")
    ds, notes = load_movielens(root, "latest-small", posters=posters)
    items = ds.items.set_index("item_id")
    assert items.loc["1", "tags"] == "fun|pixar"  # lowercased, stripped, unique, sorted
    assert items.loc["2", "tags"] == "a b"  # '|' inside a tag is not a separator
    assert items.loc["2", "title"] == "American President, The (1995)"
    assert items.loc["3", "genres"] == "" and items.loc["3", "year"] == ""
    assert items.loc["1", "imdbId"] == "0114709" and items.loc["3", "tmdbId"] == ""
    assert items["image"].tolist() == ["1.jpg", "", "3.jpg", ""]
    assert (
        ds.schema.images_dir == str(posters.resolve())
        and ds.schema.image_column == "image"
    )
    assert ds.n_items == 4 and ds.n_users == 3  # the unrated movie stays an item
    assert any("1 image files match no item" in n for n in notes)
    ds2, _ = load_movielens(root, "latest-small")
    assert ds2.schema.image_column is None and "image" not in ds2.items.columns


def test_import_records_settings_and_input_hashes(tmp_path):
    root = write_mini_100k(tmp_path / "ml-100k")
    # the parent of ml-100k/ is accepted too
    ds, _ = import_movielens(tmp_path / "ws", tmp_path, "100k")
    rec = Workspace(tmp_path / "ws").stage_record("dataset")
    assert rec.settings["variant"] == "100k" and rec.settings["source"] == "movielens"
    assert (
        rec.inputs["u.data"]
        == hashlib.sha256((root / "u.data").read_bytes()).hexdigest()
    )
    back = Dataset.load(tmp_path / "ws")
    pd.testing.assert_frame_equal(back.users, ds.users)
    assert back.schema.user_attribute_columns == ds.schema.user_attribute_columns


@pytest.mark.parametrize("variant", ["100k", "latest-small"])
def test_missing_file_is_named(tmp_path, variant):
    root = (
        write_mini_100k(tmp_path / "ml")
        if variant == "100k"
        else write_mini_latest(tmp_path / "ml")[0]
    )
    victim = "u.user" if variant == "100k" else "links.csv"
    (root / victim).unlink()
    with pytest.raises(InputError, match=f"{victim}: file not found"):
        load_movielens(root, variant)


def test_real_100k_counts_and_known_movie():
    ds, _ = load_movielens(shared_path("ml-100k"), "100k")
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (100_000, 943, 1_682)
    assert "zip" not in ds.users.columns and "region" in ds.users.columns
    assert set(ds.users["region"]) <= set(movielens.ZIP_REGIONS) | {"other"}
    assert (ds.users["region"] == "other").sum() == 18  # the Canadian postcodes
    toy = ds.items.set_index("item_id").loc["1"]
    assert (toy["title"], toy["genres"], toy["year"]) == (
        "Toy Story (1995)",
        "Animation|Children's|Comedy",
        "1995",
    )
    # latin-1 decoded
    assert ds.items.set_index("item_id").loc["543", "title"] == "Misérables, Les (1995)"
    assert ds.interactions["weight"].between(1, 5).all()


def test_real_latest_small_counts_and_known_movies():
    posters = shared_path("ml-latest-small-posters", "posters")
    ds, _ = load_movielens(
        shared_path("ml-latest-small"), "latest-small", posters=posters
    )
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (100_836, 610, 9_742)
    assert int((ds.items["image"] != "").sum()) == 4_888
    items = ds.items.set_index("item_id")
    toy = items.loc["1"]
    assert (
        toy["title"] == "Toy Story (1995)"
        and toy["year"] == "1995"
        and toy["image"] == "1.jpg"
    )
    assert toy["genres"] == "Adventure|Animation|Children|Comedy|Fantasy"
    assert toy["tags"] == "fun|pixar" and toy["tmdbId"] == "862"
    assert items.loc["2", "tags"] == "fantasy|game|magic board game|robin williams"
    assert (items["genres"] == "").sum() == 34 and not items["genres"].str.contains(
        "no genres"
    ).any()


def test_latest_small_items_agree_with_contract_protocol(tmp_path):
    """The outside benchmark builds its own items.csv; graphrec's loader must produce the same table."""
    data, posters = (
        shared_path("ml-latest-small"),
        shared_path("ml-latest-small-posters", "posters"),
    )
    script = SHARED_DATA.parent / "contract" / "protocol.py"
    if not script.exists():
        pytest.skip(f"{script} not present")
    spec = importlib.util.spec_from_file_location("protocol", script)
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    protocol.write_items(str(data), str(posters), str(tmp_path / "items.csv"))
    # `data import` strips every role cell (a few titles end in a space), so compare stripped text.
    theirs = pd.read_csv(
        tmp_path / "items.csv", dtype=str, keep_default_na=False
    ).apply(lambda c: c.str.strip())
    ours, _ = load_movielens(data, "latest-small", posters=posters)
    pd.testing.assert_frame_equal(
        ours.items[list(theirs.columns)].astype(object), theirs.astype(object)
    )


def test_cli_movielens_then_stats(tmp_path):
    data = shared_path("ml-100k")
    ws = tmp_path / "ws"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphrec",
            "data",
            "movielens",
            str(data),
            "--variant",
            "100k",
            "--out",
            str(ws),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert (
        "943 users" in run.stdout
        and "1682 items" in run.stdout
        and "100000 ratings" in run.stdout
    )
    assert "regions" in run.stdout  # the notes are printed
    stats = subprocess.run(
        [sys.executable, "-m", "graphrec", "data", "stats", str(ws), "--json"],
        capture_output=True,
        text=True,
    )
    assert stats.returncode == 0, stats.stderr
    got = json.loads(stats.stdout)
    assert (got["users"], got["items"], got["interactions"]) == (943, 1682, 100000)
    assert got["user_attributes"] == {
        "age_band": 7,
        "gender": 2,
        "occupation": 21,
        "region": 11,
    }
    assert got["attributes"]["genres"] == 18


# ------------------------------------------------------------------------------------------- download
def _zip(
    folder: Path,
    target: Path,
    prefix: str = "ml-100k/",
    extra: dict[str, bytes] | None = None,
) -> str:
    with zipfile.ZipFile(target, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, prefix + f.name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    md5 = hashlib.md5(target.read_bytes()).hexdigest()
    # GroupLens's sidecar format
    Path(str(target) + ".md5").write_text(f"MD5 ({target.name}) = {md5}\n")
    return target.as_uri()


def test_download_verifies_and_unzips(tmp_path):
    url = _zip(write_mini_100k(tmp_path / "src"), tmp_path / "ml-100k.zip")
    dest = download_movielens("100k", tmp_path / "data" / "ml-100k", url=url)
    assert sorted(p.name for p in dest.iterdir()) == [
        "u.data",
        "u.genre",
        "u.item",
        "u.user",
    ]
    ds, _ = load_movielens(dest, "100k")
    assert ds.n_items == 4
    # no scratch left behind
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ml-100k"]


def test_download_rejects_bad_checksum_escaping_member_and_missing_files(tmp_path):
    src = write_mini_100k(tmp_path / "src")
    url = _zip(src, tmp_path / "a.zip")
    with pytest.raises(InputError, match="corrupt: MD5"):
        download_movielens("100k", tmp_path / "d1", url=url, md5="0" * 32)
    url = _zip(src, tmp_path / "b.zip", extra={"ml-100k/../../evil.txt": b"x"})
    with pytest.raises(InputError, match="outside the folder"):
        download_movielens("100k", tmp_path / "d2", url=url)
    (src / "u.user").unlink()
    url = _zip(src, tmp_path / "c.zip")
    with pytest.raises(InputError, match="lacks the MovieLens 100k file"):
        download_movielens("100k", tmp_path / "d3", url=url)
    with pytest.raises(InputError, match="download failed"):
        download_movielens(
            "100k", tmp_path / "d4", url=(tmp_path / "absent.zip").as_uri()
        )
    assert not any((tmp_path / d).exists() for d in ("d1", "d2", "d3", "d4"))
    assert not (tmp_path / "evil.txt").exists() and not list(tmp_path.glob(".d*"))


def test_download_without_published_checksum_still_checks_crc(tmp_path):
    src = write_mini_100k(tmp_path / "src")
    url = _zip(src, tmp_path / "ml-100k.zip")
    Path(str(tmp_path / "ml-100k.zip") + ".md5").unlink()
    assert (download_movielens("100k", tmp_path / "ok", url=url) / "u.data").is_file()
    data = bytearray((tmp_path / "ml-100k.zip").read_bytes())
    at = bytes(data).index(b"881250949")  # inside u.data's stored (uncompressed) bytes
    data[at] = ord("7")
    (tmp_path / "ml-100k.zip").write_bytes(bytes(data))
    with pytest.raises(InputError, match="CRC"):
        download_movielens("100k", tmp_path / "bad", url=url)
    assert not (tmp_path / "bad").exists()


def test_import_downloads_only_when_missing(tmp_path, monkeypatch):
    url = _zip(
        write_mini_latest(tmp_path / "src")[0],
        tmp_path / "ml-latest-small.zip",
        prefix="ml-latest-small/",
    )
    monkeypatch.setitem(movielens.URLS, "latest-small", url)
    ds, notes = import_movielens(
        tmp_path / "ws", tmp_path / "fetched", "latest-small", download=True
    )
    assert ds.n_items == 4 and notes[0].startswith("downloaded")
    ds, notes = import_movielens(
        tmp_path / "ws", tmp_path / "fetched", "latest-small", download=True
    )
    assert not any(n.startswith("downloaded") for n in notes)
