"""Every command a script reads gives one strict JSON object on stdout with --json, and nothing else there."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import graphrec.app.cli as cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _json(args: list[str]) -> dict:
    res = CliRunner().invoke(cli.app, [*args, "--json"])
    assert res.exit_code == 0, (args, res.output)
    return json.loads(res.stdout)  # the whole of stdout: one object


def test_the_pipeline_speaks_json(tmp_path):
    ws = str(tmp_path / "ws")
    assert (
        _json(
            [
                "data",
                "synth",
                "--out",
                ws,
                "--users",
                "60",
                "--items",
                "50",
                "--interactions",
                "1500",
                "--no-images",
            ]
        )["interactions"]
        == 1500
    )
    assert _json(["data", "split", ws, "--seed", "1"])["parts"]["train"] > 0
    assert _json(["data", "stats", ws])["users"] == 60
    assert "lexical" in _json(["encode", ws, "--modalities", "lexical"])["modalities"]
    assert _json(["build", ws])["edges"] > 0
    assert "nodes" in _json(["kg", "stats", ws])
    trained = _json(
        [
            "train",
            ws,
            "--epochs",
            "2",
            "--dim",
            "8",
            "--layers",
            "1",
            "--ease-dim",
            "16",
        ]
    )
    assert trained["selected_epoch"] >= 1 and "score" in trained["validation"]
    metrics = _json(["evaluate", ws, "--k", "10,20"])
    assert "warm" in metrics["tasks"] and metrics["report"].endswith("report.html")
    assert _json(["export", ws, "--out", str(tmp_path / "exp")])["users"] == 60
    recs = _json(["recommend", ws, "--k", "3", "--out", str(tmp_path / "recs.csv")])
    assert recs["rows"] == 180 and recs["users"] == 60
    ids = json.loads((tmp_path / "ws" / "dataset" / "ids.json").read_text())
    why = _json(
        ["kg", "explain", ws, "--user", ids["users"][0], "--item", ids["items"][0]]
    )
    assert why["reason"] and all(
        {"score", "kind", "path"} <= set(p) for p in why["paths"]
    )


def test_quiet_may_follow_the_command():
    assert cli.hoist_quiet(["evaluate", "ws", "-q", "--ks", "10"]) == [
        "--quiet",
        "evaluate",
        "ws",
        "--ks",
        "10",
    ]
    assert cli.hoist_quiet(["evaluate", "ws"]) == ["evaluate", "ws"]


def test_switches_show_no_value_in_help():
    """A switch takes no value (`--json true` is a usage error), so its help line shows none (Typer's default
    would print `<bool>` beside it)."""
    import typer.main

    def commands(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from commands(sub, [*path, name])

    switches = [
        (path, p.name, p.metavar)
        for path, cmd in commands(typer.main.get_command(cli.app), ["graphrec"])
        for p in cmd.params
        if getattr(p, "is_flag", False)
        and p.name not in ("help", "install_completion", "show_completion")
    ]
    assert len(switches) > 20 and all(metavar == "" for _, _, metavar in switches), [
        s for s in switches if s[2] != ""
    ]
    help_text = (
        CliRunner()
        .invoke(cli.app, ["recommend", "--help"], env={"COLUMNS": "200"})
        .output
    )
    assert "--json" in help_text and help_text.count("<bool>") == 1  # --help's own
