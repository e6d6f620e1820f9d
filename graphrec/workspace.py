"""A workspace folder holds one run: one sub-folder per stage and `config.json` with every stage's settings.

    WS/config.json   {"stages": {stage: {"settings": {...}, "command": "...", "inputs": {...}, "finished": ...}}}
    WS/dataset/      canonical tables (data stage)
    WS/features/     per-modality content vectors (encode stage)
    WS/graph/        the knowledge graph (build stage)
    WS/model/        checkpoints and training history (train stage)
    WS/eval/         metrics and reports (evaluate stage)

A stage reads the folders of the stages before it and writes only its own.
"""
from __future__ import annotations

import datetime as _dt
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from graphrec.errors import InputError
from graphrec.io import read_json, write_json

STAGES = ("dataset", "features", "graph", "model", "eval")


def command_line() -> str:
    """The command line of this process, as a user would retype it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("cli.py", "/graphrec", "graphrec/__main__.py")):
        argv[0] = "graphrec"
    return shlex.join(argv)


class Workspace:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def of(cls, workspace: Workspace | str | os.PathLike) -> Workspace:
        """Accept a Workspace or a path, as every stage function does."""
        return workspace if isinstance(workspace, Workspace) else cls(workspace)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        return self.path / stage

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            return {"stages": {}}
        return read_json(self.config_path)

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.config()["stages"].get(stage)

    def record(self, stage: str, settings: dict[str, Any], inputs: dict[str, Any] | None = None,
               command: str | None = None) -> None:
        """Store a finished stage's settings, inputs and command line; drops records of later stages."""
        cfg = self.config()
        stages = cfg.setdefault("stages", {})
        stages[stage] = {
            "settings": settings,
            "inputs": inputs or {},
            "command": command if command is not None else command_line(),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(self.config_path, cfg)

    def require(self, stage: str) -> Path:
        """The folder of an earlier stage, or an InputError saying which command makes it."""
        d = self.stage_dir(stage)
        if not d.is_dir():
            make = {"dataset": "graphrec data import|movielens|synth", "features": "graphrec encode",
                    "graph": "graphrec build", "model": "graphrec train", "eval": "graphrec evaluate"}[stage]
            raise InputError(f"workspace has no {stage}/ yet: run `{make}` first", file=self.path)
        return d
