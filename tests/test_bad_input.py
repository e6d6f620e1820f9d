"""The bad-input corpus: every malformed input, driven through the real CLI in a subprocess, must give
exit code 2, exactly one line on stderr naming the file (and line/column where there is one) and what is
wrong, no traceback, and no dataset/ written - an existing good dataset/ survives a failed re-import."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import write_csv
from test_movielens import write_mini_100k, write_mini_latest

from graphrec.core.errors import InputError
from graphrec.core.workspace import LOCK
from graphrec.data.importer import import_files

# (CLI arguments without --out, fragments the error line must contain)
Case = tuple[list[str], list[str]]


def base(d: Path) -> dict[str, Path]:
    """A small valid input set; cases break one thing in it."""
    (d / "images").mkdir()
    (d / "images" / "a.png").write_bytes(b"\x89PNG")
    f = {"dir": d, "images": d / "images"}
    f["items"] = write_csv(
        d / "items.csv",
        [
            {"item_id": "i1", "title": "Red", "genres": "Drama", "image": "a.png"},
            {"item_id": "i2", "title": "Blue", "genres": "Drama|Comedy", "image": ""},
            {"item_id": "i3", "title": "Green", "genres": "", "image": ""},
        ],
    )
    f["users"] = write_csv(
        d / "users.csv",
        [
            {"user_id": u, "gender": g, "zip": z}
            for u, g, z in (("u1", "F", "12345"), ("u2", "M", "54321"))
        ],
    )
    f["inter"] = write_csv(
        d / "inter.csv",
        [
            {"user_id": u, "item_id": i, "rating": 4, "timestamp": 100 + k}
            for k, (u, i) in enumerate([("u1", "i1"), ("u1", "i2"), ("u2", "i3")])
        ],
    )
    return f


def text(path: Path, body: str | bytes) -> str:
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return str(path)


def imp(
    f: dict[str, Path],
    *extra: str,
    items: bool = True,
    users: bool = False,
    inter: bool = True,
) -> list[str]:
    args = ["data", "import"] + (["--interactions", str(f["inter"])] if inter else [])
    args += (
        ["--items", str(f["items"]), "--images-dir", str(f["images"])] if items else []
    )
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
    text(
        f["items"],
        ITEMS + "i1,Red,Drama,\ni2,Blue,Drama,\ni2,Again,Drama,\ni3,Green,,\n",
    )
    return imp(f), ["items.csv", "line 4", "column 'item_id'", "duplicate id 'i2'"]


def _duplicate_user(f):
    text(f["users"], "user_id,gender\nu1,F\nu2,M\nu1,M\n")
    return imp(f, users=True), [
        "users.csv",
        "line 4",
        "column 'user_id'",
        "duplicate id 'u1'",
    ]


def _blank_id(f):
    text(f["inter"], INTER + "u1,i1,4,1\n,i2,4,2\n")
    return imp(f), ["inter.csv", "line 3", "column 'user_id'", "blank or NaN id"]


def _nan_id(f):
    text(f["items"], ITEMS + "i1,Red,Drama,\nNaN,Blue,Drama,\n")
    return imp(f), ["items.csv", "line 3", "column 'item_id'", "blank or NaN id"]


def _unknown_item(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu1,i2,4,2\nu2,i99,4,3\n")
    return imp(f), [
        "inter.csv",
        "line 4",
        "column 'item_id'",
        "unknown item id 'i99'",
        "items.csv",
    ]


def _unknown_user(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu7,i2,4,2\n")
    return imp(f, users=True), [
        "inter.csv",
        "line 3",
        "column 'user_id'",
        "unknown user id 'u7'",
    ]


def _timestamp_text(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu1,i2,4,yesterday\n")
    return imp(f), [
        "inter.csv",
        "line 3",
        "column 'timestamp'",
        "not a finite number: 'yesterday'",
    ]


def _rating_text(f):
    text(f["inter"], INTER + "u1,i1,five,1\n")
    return imp(f), [
        "inter.csv",
        "line 2",
        "column 'rating'",
        "not a finite number: 'five'",
    ]


def _rating_infinite(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu1,i2,4,2\nu2,i3,inf,3\n")
    return imp(f), [
        "inter.csv",
        "line 4",
        "column 'rating'",
        "not a finite number: 'inf'",
    ]


def _rating_nan(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu1,i2,NaN,2\n")
    return imp(f), [
        "inter.csv",
        "line 3",
        "column 'rating'",
        "not a finite number: 'NaN'",
    ]


def _rating_overflows_float32(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu1,i2,4,2\nu2,i3,1e300,3\n")
    return imp(f), [
        "inter.csv",
        "line 4",
        "column 'rating'",
        "weight '1e300' overflows float32",
    ]


def _weight_negative(f):
    text(f["inter"], "user_id,item_id,weight\nu1,i1,1\nu1,i2,-0.5\n")
    return imp(f), [
        "inter.csv",
        "line 3",
        "column 'weight'",
        "negative weight '-0.5'",
        "must be positive",
    ]


def _weights_all_zero(f):
    text(f["inter"], "user_id,item_id,weight\nu1,i1,0\nu1,i2,0.0\n")
    return imp(f), ["inter.csv", "column 'weight'", "every row has weight 0"]


def _timestamp_beyond_int64(f):
    text(f["inter"], INTER + "u1,i1,4,1\nu1,i2,4,1e30\n")
    return imp(f), [
        "inter.csv",
        "line 3",
        "column 'timestamp'",
        "timestamp '1e30' is outside the int64 range",
    ]


def _id_ansi_escape(f):
    text(f["items"], ITEMS + "i1,Red,Drama,\ni2\x1b[31m,Blue,Drama,\ni3,Green,,\n")
    return imp(f), [
        "items.csv",
        "line 3",
        "column 'item_id'",
        "id 'i2\\x1b[31m' contains a control character",
    ]


def _id_newline(f):
    text(f["inter"], 'user_id,item_id\n"u\n1",i1\n')
    return imp(f), [
        "inter.csv",
        "line 2",
        "column 'user_id'",
        "id 'u\\n1' contains a control character",
    ]


def _id_tab(f):
    text(f["inter"], 'user_id,item_id\nu1,i1\nu1,"i\t2"\n')
    return imp(f), [
        "inter.csv",
        "line 3",
        "column 'item_id'",
        "id 'i\\t2' contains a control character",
    ]


def _id_bidi_override(f):
    text(f["users"], "user_id,gender\nu1,F\nu\u202e2,M\n")
    return imp(f, users=True), [
        "users.csv",
        "line 3",
        "column 'user_id'",
        "id 'u\\u202e2'",
        "bidi override",
    ]


def _parquet(path: Path, columns: dict) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return str(path)


def _parquet_struct_cell(f):
    f["items"] = _parquet(
        f["dir"] / "items.parquet",
        {
            "item_id": ["i1", "i2", "i3"],
            "title": ["Red", "Blue", "Green"],
            "genres": [None, {"main": "Drama", "sub": "Noir"}, None],
        },
    )
    return imp(f), [
        "items.parquet",
        "row 2",
        "column 'genres'",
        "struct cells are not supported",
    ]


def _parquet_list_id(f):
    f["inter"] = _parquet(
        f["dir"] / "inter.parquet", {"user_id": [["u1", "u2"]], "item_id": ["i1"]}
    )
    return imp(f), [
        "inter.parquet",
        "row 1",
        "column 'user_id'",
        "a list where one value is expected",
    ]


def _latin1(f):
    text(
        f["items"],
        (ITEMS + "i1,Red,Drama,\ni2,Mis\xe9rables,Drama,\ni3,Green,,\n").encode(
            "latin-1"
        ),
    )
    return imp(f), ["items.csv", "line 3", "not valid utf-8", "latin-1"]


def _unknown_encoding(f):
    return imp(f, "--encoding", "klingon"), [
        "inter.csv",
        "unknown text encoding 'klingon'",
    ]


def _image_dotdot(f):
    text(f["items"], ITEMS + "i1,Red,Drama,a.png\ni2,Blue,Drama,../x.png\ni3,Green,,\n")
    return imp(f), [
        "items.csv",
        "line 3",
        "column 'image'",
        "'../x.png' escapes the images folder",
    ]


def _image_absolute(f):
    text(f["items"], ITEMS + "i1,Red,Drama,/etc/hostname\ni2,Blue,Drama,\ni3,Green,,\n")
    return imp(f), [
        "items.csv",
        "line 2",
        "column 'image'",
        "'/etc/hostname' escapes the images folder",
    ]


def _images_dir_missing(f):
    f["images"] = f["dir"] / "no-such-folder"
    return imp(f), ["no-such-folder", "images folder not found"]


def _corrupt_parquet(f):
    f["inter"] = text(
        f["dir"] / "inter.parquet", b"PAR1" + bytes(range(256)) * 4 + b"PAR1"
    )
    return imp(f), ["inter.parquet", "not a readable Parquet file"]


def _nul_garbage(f):
    f["inter"] = text(
        f["dir"] / "inter.csv", b"user_id,item_id\n\x00\x13\xfe\x00\x00garbage\n"
    )
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
    return imp(f, "--text-columns", "title,nope"), [
        "items.csv",
        "column 'nope'",
        "text column not in the table",
    ]


def _personal_column(f):
    return imp(f, "--user-attribute-columns", "gender,zip", users=True), [
        "users.csv",
        "column 'zip'",
        "personal data",
    ]


def _not_found(f):
    f["inter"] = f["dir"] / "absent.csv"
    return imp(f), ["absent.csv", "file not found"]


def _folder_as_file(f):
    f["inter"] = f["images"]
    return imp(f), ["images", "is a folder"]


def _presplit(f, parts: dict[str, str]) -> list[str]:
    args = [
        "data",
        "import",
        "--items",
        str(f["items"]),
        "--images-dir",
        str(f["images"]),
    ]
    for part, body in parts.items():
        args += [
            f"--{part.replace('_', '-')}",
            text(f["dir"] / f"{part}.csv", "user_id,item_id\n" + body),
        ]
    return args


def _cold_item_in_train(f):
    args = _presplit(
        f,
        {"train": "u1,i1\nu2,i2\n", "valid": "u1,i2\n", "cold_valid": "u1,i3\nu2,i1\n"},
    )
    return args, [
        "cold_valid.csv",
        "line 3",
        "column 'item_id'",
        "cold item 'i1' also has warm interactions",
    ]


def _pair_in_train_and_valid(f):
    args = _presplit(f, {"train": "u1,i1\nu2,i2\n", "valid": "u2,i2\n"})
    return args, ["valid.csv", "line 2", "also given in the train part"]


def _presplit_without_train(f):
    return _presplit(f, {"valid": "u1,i1\n"}), ["pre-split input needs --train"]


def _both_kinds_of_input(f):
    return imp(f) + _presplit(f, {"train": "u1,i1\n"})[2:], [
        "either one interactions file or pre-split files"
    ]


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
    return _ml(root), [
        "u.item",
        "line 2",
        "column 'Drama'",
        "genre flag must be 0 or 1, found '2'",
    ]


def _ml_age_text(f):
    root = write_mini_100k(f["dir"] / "ml-100k")
    text(
        root / "u.user",
        "1|24|M|technician|85711\n2|old|F|student|02138\n3|56|M|other|K7L5J\n4|45|F|writer|9410\n",
    )
    return _ml(root), ["u.user", "line 2", "column 'age'", "not a finite number: 'old'"]


def _ml_not_a_folder(f):
    return _ml(f["dir"] / "nowhere"), ["nowhere", "folder not found", "--download"]


def _ml_tag_unknown_movie(f):
    root, posters = write_mini_latest(f["dir"] / "ml-latest-small")
    text(root / "tags.csv", "userId,movieId,tag,timestamp\n1,1,fun,1\n1,77,lost,2\n")
    return _ml(root, "latest-small"), [
        "tags.csv",
        "line 3",
        "column 'movieId'",
        "tag for unknown movie '77'",
    ]


def _ml_rating_unknown_movie(f):
    root, posters = write_mini_latest(f["dir"] / "ml-latest-small")
    text(
        root / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,78,4.0,2\n"
    )
    return _ml(root, "latest-small", "--posters", str(posters)), [
        "ratings.csv",
        "line 3",
        "column 'movieId'",
        "unknown item id '78'",
        "movies.csv",
    ]


def _ml_unknown_variant(f):
    return _ml(f["dir"], "1m"), ["unknown MovieLens variant '1m'"]


CASES: dict[str, Callable[[dict[str, Path]], Case]] = {
    name[1:]: fn
    for name, fn in sorted(globals().items())
    if name.startswith("_")
    and callable(fn)
    and name not in ("_presplit", "_ml", "_parquet")
    and fn.__module__ == __name__
}
# Failures at each stage of an import: reading, id checks, roles/images, indexing, split checks, MovieLens.
SURVIVORS = (
    "latin1",
    "duplicate_item",
    "image_dotdot",
    "unknown_item",
    "cold_item_in_train",
    "ml_genre_flag",
)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "graphrec", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _snapshot(ws: Path) -> dict[str, str]:
    return {
        str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(ws.rglob("*"))
        if p.name != LOCK
    }  # the lock file names its last holder: not data


@pytest.fixture(scope="module")
def results(
    tmp_path_factory,
) -> dict[tuple[str, bool], tuple[Case, subprocess.CompletedProcess, Path, dict]]:
    """Run every case (and the survivor cases again over a good workspace), a few subprocesses at a time."""
    good = tmp_path_factory.mktemp("good")
    f = base(good)
    import_files(
        good / "ws",
        interactions=str(f["inter"]),
        items=str(f["items"]),
        images_dir=str(f["images"]),
    )
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
        runs = list(
            pool.map(lambda job: _run(job[1][0] + ["--out", str(job[2])]), jobs)
        )
    return {
        key: (case, run, ws, before) for (key, case, ws, before), run in zip(jobs, runs)
    }


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
    assert not ws.exists() or not any(ws.iterdir()), sorted(
        p.name for p in ws.iterdir()
    )


@pytest.mark.parametrize("name", SURVIVORS)
def test_failed_reimport_keeps_existing_dataset(results, name):
    _, run, ws, before = results[(name, True)]
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1, run.stderr
    assert "dataset/dataset.json" in before and "config.json" in before
    # same files, same bytes, no temp folders left beside them
    assert _snapshot(ws) == before


@pytest.mark.parametrize(
    "args, says",
    [
        (["trian"], "No such command 'trian'"),
        (["train", "ws", "--epoch", "3"], "No such option: --epoch"),
        (["data", "split"], "Missing argument"),
    ],
)
def test_usage_mistakes_exit_2_with_one_short_message(args, says, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "graphrec", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and says in run.stderr


def test_presplit_import_takes_cold_user_parts(tmp_path):
    from graphrec.core.errors import InputError
    from graphrec.data.dataset import Dataset

    rows = {
        "train": "u1,a\nu1,b\nu2,b\n",
        "valid": "u2,a\n",
        "cold_user_context": "u3,a\n",
        "cold_user_valid": "u3,b\n",
        "cold_user_test": "u4,b\n",
    }
    files = {}
    for part, text in rows.items():
        (tmp_path / f"{part}.csv").write_text("user_id,item_id\n" + text)
        files[part] = str(tmp_path / f"{part}.csv")
    ds, _ = import_files(tmp_path / "ws", **files)
    assert set(Dataset.load(tmp_path / "ws").cold_users()) == set(
        ds.user_index(["u3", "u4"])
    )
    # u1 trains: it cannot be a cold user
    (tmp_path / "bad.csv").write_text("user_id,item_id\nu1,c\n")
    with pytest.raises(
        InputError,
        match="bad.csv: line 2.*cold user 'u1' also has training interactions",
    ):
        import_files(
            tmp_path / "ws2",
            train=files["train"],
            cold_user_test=str(tmp_path / "bad.csv"),
        )


def test_version_flag():
    from typer.testing import CliRunner

    import graphrec
    import graphrec.app.cli as cli

    res = CliRunner().invoke(cli.app, ["--version"])
    assert (
        res.exit_code == 0 and res.output.strip() == f"graphrec {graphrec.__version__}"
    )


@pytest.mark.parametrize(
    "code, says",
    [
        (
            errno.ENOSPC,
            "/x/y: No space left on device; free some space and run the command again",
        ),
        (errno.EACCES, "/x/y: Permission denied"),
        (errno.EROFS, "/x/y: Read-only file system"),
    ],
)
def test_full_disk_or_denied_file_is_one_line(
    code, says, tmp_path, monkeypatch, capsys
):
    import graphrec.app.cli as cli

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), "/x/y")

    monkeypatch.setattr(cli, "run_split", fail)
    monkeypatch.setattr(
        sys, "argv", ["graphrec", "data", "split", str(tmp_path / "ws")]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert (
        "Traceback" not in err
        and len(lines) == 1
        and lines[0].startswith(f"graphrec: error: {says}")
    ), err


def test_other_os_errors_keep_their_traceback(tmp_path, monkeypatch):
    import graphrec.app.cli as cli

    def fail(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", "/x/y")

    monkeypatch.setattr(cli, "run_split", fail)
    monkeypatch.setattr(
        sys, "argv", ["graphrec", "data", "split", str(tmp_path / "ws")]
    )
    # a bug or a broken disk: the traceback is wanted
    with pytest.raises(OSError, match="Input/output error"):
        cli.main()


def test_rich_markup_in_paths_is_printed_literally(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from graphrec.app.cli import app

    monkeypatch.chdir(tmp_path)  # short relative paths: Rich wraps long lines
    ws = "w[/dim]:fire:"
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "data",
            "synth",
            "--out",
            ws,
            "--users",
            "20",
            "--items",
            "30",
            "--interactions",
            "300",
            "--no-images",
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"-> {ws}/dataset" in r.output
    r = runner.invoke(app, ["data", "split", ws])
    assert r.exit_code == 0, r.output
    assert f"split of {ws}" in r.output


def test_writing_command_removes_leftovers_of_a_killed_run(tmp_path):
    import fcntl

    from graphrec.core.errors import InputError
    from graphrec.data.splits import run_split
    from graphrec.data.synth import run_synth

    ws = tmp_path / "ws"
    run_synth(ws, 20, 30, 300, images=False)
    (ws / "model").mkdir()
    leftovers = [
        ws / ".eval.k2j3h4g5.tmp" / "report.md",
        ws / ".dataset.ab_cd123.old" / "x" / "items.parquet",
        ws / ".config.json.q1w2e3r4.tmp",
        ws / "model" / ".epoch-3.safetensors.z9y8x7w6.tmp",
        ws / ".staging-abcd1234" / "config.json",
    ]  # an update killed before its commit point
    kept = [
        ws
        / ".images.abcd1234.tmp"
        / "0.png",  # data synth writes WS/images/ without the lock
        ws / ".export.abcd1234.tmp" / "manifest.json",
        ws / ".eval.tmp",
        ws / "eval.abcd1234.tmp",
        ws / "model" / "notes.abcd1234.tmp",
    ]
    for p in leftovers + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("left behind")
    fd = os.open(ws / LOCK, os.O_RDWR)
    try:  # another writer holds the lock: its temp files are live, nothing is touched
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="in use by another graphrec run"):
            run_split(ws)
        assert all(p.exists() for p in leftovers + kept)
    finally:
        os.close(fd)
    run_split(ws)
    assert not any(p.exists() or p.parent.exists() for p in leftovers[:2])
    assert not any(p.exists() for p in leftovers[2:])
    assert all(p.exists() for p in kept)


def _good_inputs(d: Path) -> dict[str, Path]:
    f = base(d)
    f["ws"] = d / "ws"
    return f


def test_zero_weight_rows_are_dropped_with_a_warning(tmp_path, caplog):
    f = _good_inputs(tmp_path)
    # (u1, i1) at weight 0 first: the later positive row of the pair is the one kept, not a "repeat".
    text(
        f["inter"], INTER + "u1,i1,0,1\nu1,i2,4,2\nu1,i1,5,3\nu2,i3,0.0,4\nu2,i2,3,5\n"
    )
    with caplog.at_level("WARNING", logger="graphrec.data.build"):
        ds, notes = import_files(
            f["ws"],
            interactions=str(f["inter"]),
            items=str(f["items"]),
            images_dir=str(f["images"]),
        )
    assert "dropped 2 rows with rating 0" in caplog.text and "inter.csv" in caplog.text
    inter = ds.interactions
    assert (
        len(inter) == 3
        and (inter["weight"] > 0).all()
        and not any("repeated" in n for n in notes)
    )
    got = {
        (ds.user_ids[u], ds.item_ids[i]): w
        for u, i, w in inter[["user", "item", "weight"]].itertuples(index=False)
    }
    assert got == {("u1", "i2"): 4.0, ("u1", "i1"): 5.0, ("u2", "i2"): 3.0}


def test_parquet_list_cells_are_multi_valued_attributes(tmp_path):
    from graphrec.data.dataset import Dataset

    f = _good_inputs(tmp_path)
    items = _parquet(
        tmp_path / "items.parquet",
        {
            "item_id": ["i1", "i2", "i3"],
            "title": ["Red", "Blue", "Green"],
            "genres": [["Drama"], ["Drama", None, "Comedy"], None],
        },
    )
    import_files(f["ws"], interactions=str(f["inter"]), items=items)
    ds = Dataset.load(f["ws"])
    # what the CSV spelling gives
    assert ds.items["genres"].tolist() == [
        "Drama",
        "Drama|Comedy",
        "",
    ]
    assert ds.attribute_values("genres") == [["Drama"], ["Drama", "Comedy"], []]


@pytest.mark.parametrize(
    "genres, says",
    [
        (
            [["Drama"], ["Drama|Comedy"], None],
            "row 2.*list element 'Drama\\|Comedy' contains '\\|'",
        ),
        ([[1], None, [2, 3]], "row 1.*list of int64: list cells must hold strings"),
    ],
)
def test_parquet_list_cells_that_cannot_be_values(tmp_path, genres, says):
    from graphrec.core.errors import InputError

    f = _good_inputs(tmp_path)
    items = _parquet(
        tmp_path / "items.parquet", {"item_id": ["i1", "i2", "i3"], "genres": genres}
    )
    with pytest.raises(InputError, match=f"items.parquet: {says}"):
        import_files(f["ws"], interactions=str(f["inter"]), items=items)


def test_parquet_float_timestamp_beyond_int64_is_not_wrapped(tmp_path):
    from graphrec.core.errors import InputError

    f = _good_inputs(tmp_path)
    inter = _parquet(
        tmp_path / "inter.parquet",
        {"user_id": ["u1", "u1"], "item_id": ["i1", "i2"], "timestamp": [1.0, 1e30]},
    )
    with pytest.raises(
        InputError,
        match="inter.parquet: row 2: column 'timestamp': timestamp '1e.?30' is outside",
    ):
        import_files(f["ws"], interactions=inter)


def test_update_checks_values_like_import(tmp_path, caplog):
    from graphrec.core.errors import InputError
    from graphrec.data.append import grow_dataset

    f = _good_inputs(tmp_path)
    ds, _ = import_files(
        f["ws"],
        interactions=str(f["inter"]),
        items=str(f["items"]),
        images_dir=str(f["images"]),
    )
    new = tmp_path / "new.csv"
    for body, says in (
        (INTER + "u2,i1,-1,7\n", "line 2: column 'rating': negative weight '-1'"),
        (
            INTER + "u2,i1,1e39,7\n",
            "line 2: column 'rating': weight '1e39' overflows float32",
        ),
        (
            INTER + "u2,i1,4,-1e19\n",
            "line 2: column 'timestamp': timestamp '-1e19' is outside",
        ),
        ("user_id,item_id\nu2,i\u20661\n", "line 2: column 'item_id': id 'i\\u20661'"),
    ):
        text(new, body)
        with pytest.raises(InputError, match=re.escape(f"new.csv: {says}")):
            grow_dataset(ds, interactions=new)
    # u9 is named only by a 0-weight row: neither the row nor the user is added; (u1, i3) at 0 then 2 is added.
    text(new, INTER + "u9,i1,0,7\nu1,i3,0,8\nu1,i3,2,9\n")
    with caplog.at_level("WARNING", logger="graphrec.data.append"):
        grown = grow_dataset(ds, interactions=new)
    assert "dropped 2 rows with rating 0" in caplog.text
    assert (grown.users_added, grown.interactions_added, grown.duplicates_skipped) == (
        0,
        1,
        0,
    )
    assert grown.dataset.interactions["weight"].iloc[-1] == 2.0


def test_csv_output_neutralises_formulas(tmp_path):
    import pandas as pd

    from graphrec.stages.recommend import csv_safe, write_recommendations

    ids = ['=HYPERLINK("http://x")', "+1", "-5", "@SUM(A1)", "\tx", "ok", "a=b"]
    frame = pd.DataFrame(
        {"user_id": ids, "item_id": ids[::-1], "rank": range(1, 8), "score": [-1.5] * 7}
    )
    back = pd.read_csv(
        write_recommendations(frame, tmp_path / "recs.csv"),
        dtype=str,
        keep_default_na=False,
    )
    safe = ['\'=HYPERLINK("http://x")', "'+1", "'-5", "'@SUM(A1)", "'\tx", "ok", "a=b"]
    assert back["user_id"].tolist() == safe and back["item_id"].tolist() == safe[::-1]
    assert back["score"].tolist() == ["-1.5"] * 7  # numbers are not text: unchanged
    assert frame["user_id"].tolist() == ids  # csv_safe works on a copy
    assert csv_safe(pd.DataFrame({"id": ["\rx", None]}))["id"].tolist()[0] == "'\rx"
    exact = pd.read_parquet(write_recommendations(frame, tmp_path / "recs.parquet"))
    assert exact["user_id"].tolist() == ids  # Parquet keeps ids exactly


def test_a_symlink_loop_in_the_images_folder_does_not_stop_the_import(tmp_path):
    f = _good_inputs(tmp_path)
    os.symlink("loop", f["images"] / "loop")  # points at itself: ELOOP when resolved
    ds, _ = import_files(
        f["ws"],
        interactions=str(f["inter"]),
        items=str(f["items"]),
        images_dir=str(f["images"]),
    )
    assert ds.n_items > 0


def test_min_rating_keeps_the_positives_and_counts_the_rest(tmp_path):
    f = _good_inputs(tmp_path)
    text(f["inter"], INTER + "u1,i1,5,1\nu1,i2,3,2\nu2,i3,4,3\nu2,i2,1,4\n")
    ds, notes = import_files(
        f["ws"],
        interactions=str(f["inter"]),
        items=str(f["items"]),
        images_dir=str(f["images"]),
        min_rating=4,
    )
    assert sorted(ds.interactions["weight"].tolist()) == [4.0, 5.0]
    assert any("dropped 2 rows with rating below 4 (--min-rating)" in n for n in notes)
    with pytest.raises(InputError, match="no row has rating 9"):
        import_files(
            tmp_path / "ws2",
            interactions=str(f["inter"]),
            items=str(f["items"]),
            images_dir=str(f["images"]),
            min_rating=9,
        )
    res = _run(
        [
            "data",
            "import",
            "--out",
            str(tmp_path / "ws3"),
            "--interactions",
            str(f["inter"]),
            "--items",
            str(f["items"]),
            "--images-dir",
            str(f["images"]),
            "--min-rating",
            "4",
        ]
    )
    assert res.returncode == 0 and "below 4" in res.stdout, res.stderr


def _leaf_commands() -> list[list[str]]:
    import typer.main

    import graphrec.app.cli as cli

    found = []

    def walk(cmd, path):
        # a group (typer vendors its own click: no isinstance check)
        if hasattr(cmd, "commands"):
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, [*path, name])
        else:
            found.append(path)

    walk(typer.main.get_command(cli.app), [])
    return found


@pytest.mark.parametrize("path", _leaf_commands(), ids=" ".join)
def test_every_command_names_a_misspelt_flag_and_a_missing_parameter(path):
    """Usage mistakes on every command: exit 2, Click's short message naming what the user typed or forgot."""
    import typer.main
    from typer.testing import CliRunner

    import graphrec.app.cli as cli

    res = CliRunner().invoke(cli.app, [*path, "--no-such-flag"])
    assert res.exit_code == 2 and "No such option: --no-such-flag" in res.output, (
        res.output
    )
    cmd = typer.main.get_command(cli.app)
    for name in path:
        cmd = cmd.commands[name]
    required = [p for p in cmd.params if p.required]
    if required:  # nothing given: Click names the first missing one as it is spelt on the command line
        res = CliRunner().invoke(cli.app, path)
        first = required[0]
        spelt = (
            first.opts[0] if first.param_type_name == "option" else f"'{first.name}'"
        )
        assert res.exit_code == 2 and "Missing" in res.output and spelt in res.output, (
            res.output
        )


def test_version_exits_0():
    run = subprocess.run(
        [sys.executable, "-m", "graphrec", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and run.stdout.startswith("graphrec ") and not run.stderr
