"""The bad-input corpus: every malformed input, driven through the real CLI in a subprocess, must give
exit code 2, exactly one line on stderr naming the file (and line/column where there is one) and what is
wrong, no traceback, and no dataset/ written - an existing good dataset/ survives a failed re-import."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import write_csv
from test_movielens import write_mini_100k, write_mini_latest

from graphrec.data.importer import import_files
from graphrec.workspace import LOCK

Case = tuple[list[str], list[str]]   # (CLI arguments without --out, fragments the error line must contain)


def base(d: Path) -> dict[str, Path]:
    """A small valid input set; cases break one thing in it."""
    (d / "images").mkdir()
    (d / "images" / "a.png").write_bytes(b"\x89PNG")
    f = {"dir": d, "images": d / "images"}
    f["items"] = write_csv(d / "items.csv", [
        {"item_id": "i1", "title": "Red", "genres": "Drama", "image": "a.png"},
        {"item_id": "i2", "title": "Blue", "genres": "Drama|Comedy", "image": ""},
        {"item_id": "i3", "title": "Green", "genres": "", "image": ""}])
    f["users"] = write_csv(d / "users.csv", [{"user_id": u, "gender": g, "zip": z}
                                             for u, g, z in (("u1", "F", "12345"), ("u2", "M", "54321"))])
    f["inter"] = write_csv(d / "inter.csv", [{"user_id": u, "item_id": i, "rating": 4, "timestamp": 100 + k}
                                             for k, (u, i) in enumerate([("u1", "i1"), ("u1", "i2"), ("u2", "i3")])])
    return f


def text(path: Path, body: str | bytes) -> str:
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return str(path)


def imp(f: dict[str, Path], *extra: str, items: bool = True, users: bool = False, inter: bool = True) -> list[str]:
    args = ["data", "import"] + (["--interactions", str(f["inter"])] if inter else [])
    args += (["--items", str(f["items"]), "--images-dir", str(f["images"])] if items else [])
    return args + (["--users", str(f["users"])] if users else []) + list(extra)


INTER = "user_id,item_id,rating,timestamp\n"
ITEMS = "item_id,title,genres,image\n"


def _missing_column(f):
    f["inter"] = text(f["dir"] / "inter.csv", "user_id,thing\nu1,i1\n")
    return imp(f), ["inter.csv", "column 'item_id'", "missing required column"]


def _empty(f):
    f["inter"] = text(f["dir"] / "inter.csv", b"")
    return imp(f), ["inter.csv", "file is empty"]


def _header_only(f):
    f["inter"] = text(f["dir"] / "inter.csv", INTER)
    return imp(f), ["inter.csv", "header but no rows"]


def _duplicate_item(f):
    text(f["items"], ITEMS + "i1,Red,Drama,\ni2,Blue,Drama,\ni2,Again,Drama,\ni3,Green,,\n")
    return imp(f), ["items.csv", "line 4", "column 'item_id'", "duplicate id 'i2'"]


def _duplicate_user(f):
    text(f["users"], "user_id,gender\nu1,F\nu2,M\nu1,M\n")
    return imp(f, users=True), ["users.csv", "line 4", "column 'user_id'", "duplicate id 'u1'"]


def _blank_id(f):
    text(f["inter"], INTER + "u1,i1,4,1\n,i2,4,2\n")
    return imp(f), ["inter.csv", "line 3", "column 'user_id'", "blank or NaN id"]


def _nan_id(f):
    text(f["items"], ITEMS + "i1,Red,Drama,\nNaN,Blue,Drama,\n")
    return imp(f), ["items.csv", "line 3", "column 'item_id'", "blank or NaN id"]


def _unknown_item(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu1,i2,4,2\nu2,i99,4,3\n")
    return imp(f), ["inter.csv", "line 4", "column 'item_id'", "unknown item id 'i99'", "items.csv"]


def _unknown_user(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu7,i2,4,2\n")
    return imp(f, users=True), ["inter.csv", "line 3", "column 'user_id'", "unknown user id 'u7'"]


def _timestamp_text(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu1,i2,4,yesterday\n")
    return imp(f), ["inter.csv", "line 3", "column 'timestamp'", "not a finite number: 'yesterday'"]


def _rating_text(f):
    text(f["inter"], INTER + "u1,i1,five,1\n")
    return imp(f), ["inter.csv", "line 2", "column 'rating'", "not a finite number: 'five'"]


def _rating_infinite(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu1,i2,4,2\nu2,i3,inf,3\n")
    return imp(f), ["inter.csv", "line 4", "column 'rating'", "not a finite number: 'inf'"]


def _latin1(f):
    text(f["items"], (ITEMS + "i1,Red,Drama,\ni2,Mis\xe9rables,Drama,\ni3,Green,,\n").encode("latin-1"))
    return imp(f), ["items.csv", "line 3", "not valid utf-8", "latin-1"]


def _unknown_encoding(f):
    return imp(f, "--encoding", "klingon"), ["inter.csv", "unknown text encoding 'klingon'"]


def _image_dotdot(f):
    text(f["items"], ITEMS + "i1,Red,Drama,a.png\ni2,Blue,Drama,../x.png\ni3,Green,,\n")
    return imp(f), ["items.csv", "line 3", "column 'image'", "'../x.png' escapes the images folder"]


def _image_absolute(f):
    text(f["items"], ITEMS + "i1,Red,Drama,/etc/hostname\ni2,Blue,Drama,\ni3,Green,,\n")
    return imp(f), ["items.csv", "line 2", "column 'image'", "'/etc/hostname' escapes the images folder"]


def _images_dir_missing(f):
    f["images"] = f["dir"] / "no-such-folder"
    return imp(f), ["no-such-folder", "images folder not found"]


def _corrupt_parquet(f):
    f["inter"] = text(f["dir"] / "inter.parquet", b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
    return imp(f), ["inter.parquet", "not a readable Parquet file"]


def _nul_garbage(f):
    f["inter"] = text(f["dir"] / "inter.csv", b"user_id,item_id\n\x00\x13\xfe\x00\x00garbage\n")
    return imp(f), ["inter.csv", "line 2", "binary data"]


def _unbalanced_quote(f):
    text(f["inter"], 'user_id,item_id\nu1,i1\nu2,"i2\nu1,i3\n')
    return imp(f), ["inter.csv", "line 3", "quoted field is never closed"]


def _extra_field(f):
    text(f["inter"], "user_id,item_id\nu1,i1\nu2,i2,oops\n")
    return imp(f), ["inter.csv", "line 3", "3 fields where the header has 2"]


def _surplus_leading_field(f):
    text(f["inter"], "user_id,item_id\nu1,i1,x\nu2,i2,y\n")
    return imp(f), ["inter.csv", "line 2", "more fields than the header"]


def _duplicate_header(f):
    text(f["inter"], "user_id,item_id,item_id\nu1,i1,i2\n")
    return imp(f), ["inter.csv", "column 'item_id'", "appears twice"]


def _role_column_missing(f):
    return imp(f, "--text-columns", "title,nope"), ["items.csv", "column 'nope'", "text column not in the table"]


def _personal_column(f):
    return imp(f, "--user-attribute-columns", "gender,zip", users=True), \
        ["users.csv", "column 'zip'", "personal data"]


def _not_found(f):
    f["inter"] = f["dir"] / "absent.csv"
    return imp(f), ["absent.csv", "file not found"]


def _folder_as_file(f):
    f["inter"] = f["images"]
    return imp(f), ["images", "is a folder"]


def _presplit(f, parts: dict[str, str]) -> list[str]:
    args = ["data", "import", "--items", str(f["items"]), "--images-dir", str(f["images"])]
    for part, body in parts.items():
        args += [f"--{part.replace('_', '-')}", text(f["dir"] / f"{part}.csv", "user_id,item_id\n" + body)]
    return args


def _cold_item_in_train(f):
    args = _presplit(f, {"train": "u1,i1\nu2,i2\n", "valid": "u1,i2\n", "cold_valid": "u1,i3\nu2,i1\n"})
    return args, ["cold_valid.csv", "line 3", "column 'item_id'", "cold item 'i1' also has warm interactions"]


def _pair_in_train_and_valid(f):
    args = _presplit(f, {"train": "u1,i1\nu2,i2\n", "valid": "u2,i2\n"})
    return args, ["valid.csv", "line 2", "also given in the train part"]


def _presplit_without_train(f):
    return _presplit(f, {"valid": "u1,i1\n"}), ["pre-split input needs --train"]


def _both_kinds_of_input(f):
    return imp(f) + _presplit(f, {"train": "u1,i1\n"})[2:], ["either one interactions file or pre-split files"]


def _ml(root: Path, variant: str = "100k", *extra: str) -> list[str]:
    return ["data", "movielens", str(root), "--variant", variant, *extra]


def _ml_fields(f):
    root = write_mini_100k(f["dir"] / "ml-100k")
    text(root / "u.data", "1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\n")
    return _ml(root), ["u.data", "line 3", "expected 4 '\\t'-separated fields, found 3"]


def _ml_missing_file(f):
    root = write_mini_100k(f["dir"] / "ml-100k")
    (root / "u.item").unlink()
    return _ml(root), ["u.item", "file not found"]


def _ml_genre_flag(f):
    root = write_mini_100k(f["dir"] / "ml-100k")
    lines = (root / "u.item").read_bytes().split(b"\n")
    lines[1] = lines[1][:-1] + b"2"
    (root / "u.item").write_bytes(b"\n".join(lines))
    return _ml(root), ["u.item", "line 2", "column 'Drama'", "genre flag must be 0 or 1, found '2'"]


def _ml_age_text(f):
    root = write_mini_100k(f["dir"] / "ml-100k")
    text(root / "u.user", "1|24|M|technician|85711\n2|old|F|student|02138\n3|56|M|other|K7L5J\n4|45|F|writer|9410\n")
    return _ml(root), ["u.user", "line 2", "column 'age'", "not a finite number: 'old'"]


def _ml_not_a_folder(f):
    return _ml(f["dir"] / "nowhere"), ["nowhere", "folder not found", "--download"]


def _ml_tag_unknown_movie(f):
    root, posters = write_mini_latest(f["dir"] / "ml-latest-small")
    text(root / "tags.csv", "userId,movieId,tag,timestamp\n1,1,fun,1\n1,77,lost,2\n")
    return _ml(root, "latest-small"), ["tags.csv", "line 3", "column 'movieId'", "tag for unknown movie '77'"]


def _ml_rating_unknown_movie(f):
    root, posters = write_mini_latest(f["dir"] / "ml-latest-small")
    text(root / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,78,4.0,2\n")
    return _ml(root, "latest-small", "--posters", str(posters)), \
        ["ratings.csv", "line 3", "column 'movieId'", "unknown item id '78'", "movies.csv"]


def _ml_unknown_variant(f):
    return _ml(f["dir"], "1m"), ["unknown MovieLens variant '1m'"]


CASES: dict[str, Callable[[dict[str, Path]], Case]] = {
    name[1:]: fn for name, fn in sorted(globals().items()) if name.startswith("_") and callable(fn)
    and name not in ("_presplit", "_ml") and fn.__module__ == __name__}
# Failures at each stage of an import: reading, id checks, roles/images, indexing, split checks, MovieLens.
SURVIVORS = ("latin1", "duplicate_item", "image_dotdot", "unknown_item", "cold_item_in_train", "ml_genre_flag")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphrec", *args], capture_output=True, text=True, timeout=120)


def _snapshot(ws: Path) -> dict[str, str]:
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(ws.rglob("*")) if p.name != LOCK}  # the lock file names its last holder: not data


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[tuple[str, bool], tuple[Case, subprocess.CompletedProcess, Path, dict]]:
    """Run every case (and the survivor cases again over a good workspace), a few subprocesses at a time."""
    good = tmp_path_factory.mktemp("good")
    f = base(good)
    import_files(good / "ws", interactions=str(f["inter"]), items=str(f["items"]), images_dir=str(f["images"]))
    jobs = []
    for name, build in CASES.items():
        for existing in (False, True) if name in SURVIVORS else (False,):
            d = tmp_path_factory.mktemp(name)
            case = build(base(d))
            ws = d / "ws"
            if existing:
                shutil.copytree(good / "ws", ws)
            jobs.append(((name, existing), case, ws, _snapshot(ws) if existing else {}))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        runs = list(pool.map(lambda job: _run(job[1][0] + ["--out", str(job[2])]), jobs))
    return {key: (case, run, ws, before) for (key, case, ws, before), run in zip(jobs, runs)}


def test_corpus_is_large_enough():
    assert len(CASES) >= 15 and set(SURVIVORS) <= set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_line_and_writes_nothing(results, name):
    (args, expect), run, ws, _ = results[(name, False)]
    assert "Traceback" not in run.stdout + run.stderr, run.stderr
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("graphrec: error: ")
    for fragment in expect:
        assert fragment in lines[0], (fragment, lines[0])
    assert not ws.exists() or not any(ws.iterdir()), sorted(p.name for p in ws.iterdir())


@pytest.mark.parametrize("name", SURVIVORS)
def test_failed_reimport_keeps_existing_dataset(results, name):
    _, run, ws, before = results[(name, True)]
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1, run.stderr
    assert "dataset/dataset.json" in before and "config.json" in before
    assert _snapshot(ws) == before     # same files, same bytes, no temp folders left beside them


@pytest.mark.parametrize("args, says", [
    (["trian"], "No such command 'trian'"),
    (["train", "ws", "--epoch", "3"], "No such option: --epoch"),
    (["data", "split"], "Missing argument"),
])
def test_usage_mistakes_exit_2_with_one_short_message(args, says, tmp_path):
    run = subprocess.run([sys.executable, "-m", "graphrec", *args], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and says in run.stderr


def test_presplit_import_takes_cold_user_parts(tmp_path):
    from graphrec.data.dataset import Dataset
    from graphrec.errors import InputError

    rows = {"train": "u1,a\nu1,b\nu2,b\n", "valid": "u2,a\n", "cold_user_context": "u3,a\n",
            "cold_user_valid": "u3,b\n", "cold_user_test": "u4,b\n"}
    files = {}
    for part, text in rows.items():
        (tmp_path / f"{part}.csv").write_text("user_id,item_id\n" + text)
        files[part] = str(tmp_path / f"{part}.csv")
    ds, _ = import_files(tmp_path / "ws", **files)
    assert set(Dataset.load(tmp_path / "ws").cold_users()) == set(ds.user_index(["u3", "u4"]))
    (tmp_path / "bad.csv").write_text("user_id,item_id\nu1,c\n")  # u1 trains: it cannot be a cold user
    with pytest.raises(InputError, match="bad.csv: line 2.*cold user 'u1' also has training interactions"):
        import_files(tmp_path / "ws2", train=files["train"], cold_user_test=str(tmp_path / "bad.csv"))


def test_version_flag():
    from typer.testing import CliRunner

    import graphrec
    import graphrec.cli as cli

    res = CliRunner().invoke(cli.app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"graphrec {graphrec.__version__}"
