"""A workspace folder holds one run: one sub-folder per stage and `config.json` with every stage's settings.

    WS/config.json   {"stages": {stage: {"settings": {...}, "command": "...", "inputs": {...}, "lineage": {...},
                                     "finished": ...}}}
    WS/dataset/      canonical tables (data stage)
    WS/features/     per-modality content vectors (encode stage)
    WS/graph/        the knowledge graph (build stage)
    WS/model/        checkpoints and training history (train stage)
    WS/eval/         metrics and reports (evaluate stage)

A stage reads the folders of the stages before it and writes only its own.

Lineage: a stage's record holds the fingerprints (sha256 over the data files) of the earlier stage
folders it was made from (`LINEAGE`: dataset, features, graph). `require(stage)`, which every reader
of an earlier stage's folder goes through, refuses a folder whose inputs have changed since it was
made (a re-import, a re-encode, a rebuild) with one line naming the command to rerun, so a stale
stage is never used silently.

Switches: a stage writes its whole folder under a temp name and puts it in place in one step
(graphrec.core.io.switch_dir). A writer that replaces several folders and files together
(graphrec.stages.update) stages them in `staging()` and hands them to `switch()`:
WS/switch-journal.json, the commit point, lists the moves with what each target was before and what
it is after; the moves follow; the journal goes. Whoever finds a journal (the next writer when it
takes the lock, a reader when it starts) finishes the moves or, where a target is neither its before
nor its after (changed by other means since), discards them with a warning: never replayed over
newer work. Readers (`reading()`) hold WS/.switch shared, writers hold it exclusively while they
switch, so a reader sees every folder of one moment, never a half-switched workspace.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from graphrec.core.errors import InputError
from graphrec.core.io import (
    LEFTOVER,
    atomic_dir,
    file_sha256,
    restore_dir,
    switch_dir,
    write_json,
)
from graphrec.core.records import Record

STAGES = ("dataset", "features", "graph", "model", "eval")
LINEAGE = ("dataset", "features", "graph")  # the folders later stages are made from
MAKE = {
    "dataset": "graphrec data import|movielens|synth",
    "features": "graphrec encode",
    "graph": "graphrec build",
    "model": "graphrec train",
    "eval": "graphrec evaluate",
}
LOCK = ".lock"
SWITCH = ".switch"  # held shared by readers, exclusively by a writer while it switches folders in
JOURNAL = "switch-journal.json"
STAGING = ".staging-"  # prefix of the folders writers stage multi-folder switches in
TRAINING = ".training"  # WS/.training/: the workspace-shaped folder a training run writes its model/ in
# what a switch may replace: the names right inside the workspace
SWITCHED = (
    *STAGES,
    "config.json",
)
# The temp names graphrec's locked writers leave behind when killed: graphrec.core.io's atomic_dir/atomic_path
# (".<name>.<8 tempfile characters>.tmp", and ".old" for the folder being replaced) for a stage folder or
# config.json at the top, and for a file inside a stage folder (model/ checkpoints). Nothing else: WS/images/
# (data synth) and export or recommend outputs are written without the lock. Staging folders (STAGING) go in
# `recover`, after the journal that may name one is finished.
_LEFTOVER_TOP = re.compile(
    rf"\.(?:{'|'.join(STAGES)}|config\.json)\.{LEFTOVER}\.(?:tmp|old)"
)
_LEFTOVER_IN_STAGE = re.compile(rf"\..+\.{LEFTOVER}\.tmp")
log = logging.getLogger(__name__)
# (path, size, mtime_ns) -> sha256: a process hashes a file once
_DIGESTS: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class StageRecord(Record):
    """config.json's account of one finished stage.

    Its settings, the inputs it read (paths and their hashes), the fingerprints of the earlier
    folders it was made from, its command line and when it finished.

    Attributes:
        settings (dict): The stage's settings.
        inputs (dict): The inputs it read: paths and their hashes.
        command (str): Its command line (`command_line`).
        lineage (dict or None): Earlier stage (of LINEAGE) -> the fingerprint of its folder when
            this stage was made (`fingerprints`).
        finished (str or None): When it finished, UTC, ISO 8601 to the second.
    """

    settings: dict[str, Any]
    inputs: dict[str, Any]
    command: str
    lineage: dict[str, str] | None = None
    finished: str | None = None


@dataclass(frozen=True)
class Config(Record):
    """config.json: stage name -> its StageRecord (see the module docstring).

    Attributes:
        stages (dict): Stage name -> its StageRecord; empty before any stage has run.
    """

    stages: dict[str, StageRecord] = field(default_factory=dict)


def _digest(p: Path) -> str:
    """The sha256 of file `p`, hashed once per process while its size and mtime stay the same."""
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(p)
    return _DIGESTS[key]


def _read_holder(fd: int) -> str:
    """Who holds the lock, as the lock file `fd` names them (pid, host, command, since), or "holder unknown"."""
    try:
        h = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {h['pid']} on {h['host']}: {h['command']}, since {h['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def writes(fn: F) -> F:
    """Decorator for a stage function whose first argument is the workspace it writes: holds its lock.

    Args:
        fn (callable): The stage function; its first argument is a Workspace or a path.

    Returns:
        callable: `fn` run under `Workspace.lock()`.
    """

    @functools.wraps(fn)
    def locked(
        workspace: Workspace | str | os.PathLike, *args: Any, **kwargs: Any
    ) -> Any:
        with Workspace.of(workspace).lock():
            return fn(workspace, *args, **kwargs)

    return locked  # type: ignore[return-value]


def _identity(path: Path) -> list[int] | None:
    """What a switch target holds: (inode, mtime) of a file or folder (a rename keeps both), None when absent.

    A symbolic link is its own entry: what it points to is never a switch's business.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_mtime_ns]


def open_private_file(path: Path) -> int:
    """An fd for the workspace's own small file `path` (lock, switch), created if absent.

    O_NOFOLLOW and a regular-file check: a planted symlink or device there must not make graphrec
    write (or block) elsewhere.

    Args:
        path (Path): The file.

    Returns:
        int: A file descriptor open for reading and writing; the caller closes it.

    Raises:
        InputError: When `path` is a symbolic link, or not a regular file.
    """
    try:
        fd = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644
        )
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(
                "is a symbolic link; graphrec never follows it: remove it", file=path
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(
            "is not a regular file (graphrec keeps its lock there): remove it",
            file=path,
        )
    return fd


@dataclass(frozen=True)
class _Plan:
    """A switch journal read back: every path inside the workspace (see `_read_plan`).

    Attributes:
        staging (Path): The staging folder the sources lie in.
        moves (tuple): (source, target) pairs, in order.
        before (dict): Target -> its `_identity` before the switch.
        after (dict): Target -> its `_identity` after its move (its source's).
    """

    staging: Path
    moves: tuple[tuple[Path, Path], ...]
    before: dict[Path, list[int] | None]
    after: dict[Path, list[int] | None]


def reads(fn: F) -> F:
    """Decorator for a function whose first argument is a workspace it reads without writing a stage.

    It runs in `Workspace.reading()`, on one consistent state of the workspace.

    Args:
        fn (callable): The function; its first argument is a Workspace or a path.

    Returns:
        callable: `fn` run under `Workspace.reading()`.
    """

    @functools.wraps(fn)
    def reading(
        workspace: Workspace | str | os.PathLike, *args: Any, **kwargs: Any
    ) -> Any:
        with Workspace.of(workspace).reading():
            return fn(workspace, *args, **kwargs)

    return reading  # type: ignore[return-value]


def fingerprints(dirs: dict[str, Path]) -> dict[str, str]:
    """sha256 over the data files (.parquet, .safetensors, ids.json) of each existing stage folder.

    Args:
        dirs (dict): Stage name -> its folder.

    Returns:
        dict: Stage name -> hex fingerprint, for the folders that exist.
    """
    out = {}
    for stage, d in dirs.items():
        if d.is_dir():
            h = hashlib.sha256()
            for p in sorted(d.iterdir()):
                if p.is_file() and (
                    p.suffix in (".parquet", ".safetensors") or p.name == "ids.json"
                ):
                    h.update(p.name.encode() + bytes.fromhex(_digest(p)))
            out[stage] = h.hexdigest()
    return out


def enclosing_workspace(path: str | os.PathLike) -> Path | None:
    """The workspace folder that `path` is or lies inside (symlinks resolved); None when there is none.

    A workspace is known by what graphrec keeps there: its switch file, a dataset's ids.json, or
    config.json beside a stage folder (not `.lock` alone, a name other tools use too).

    Args:
        path (str or os.PathLike): Any path (it need not exist).

    Returns:
        Path or None: The workspace folder, symlinks resolved.
    """
    real = Path(os.path.realpath(path))
    marked = lambda d: (
        (d / SWITCH).is_file()
        or (d / "dataset" / "ids.json").is_file()
        or (  # noqa: E731
            (d / "config.json").is_file() and any((d / s).is_dir() for s in STAGES)
        )
    )
    return next((d for d in (real, *real.parents) if marked(d)), None)


def check_output_file(out: str | os.PathLike, what: str) -> Path:
    """`out` when a command may write its output file there.

    A new file or an existing one (replaced by a rename, as an output the user names), never a
    folder, a symbolic link, or one of a workspace's own files (inside a stage folder, or
    config.json, the lock, switch and journal files).

    Args:
        out (str or os.PathLike): The output file.
        what (str): What the file is, for the error (e.g. "recommendations").

    Returns:
        Path: `out` as a Path.

    Raises:
        InputError: When `out` may not be written there (the message starts with `--out`).
    """
    out = Path(out)
    ws = enclosing_workspace(out.parent)
    real = Path(os.path.realpath(out.parent)) / out.name
    owned = ws is not None and (
        real.parent == ws
        and real.name in (*SWITCHED, LOCK, SWITCH, JOURNAL)
        or any(real.is_relative_to(ws / s) for s in (*STAGES, TRAINING))
    )
    problem = (
        "is a folder: name the file to write"
        if out.is_dir() and not out.is_symlink()
        else "is a symbolic link: name the file itself"
        if out.is_symlink()
        else "exists and is not a regular file"
        if out.exists() and not out.is_file()
        else f"is one of the workspace {ws}'s own files: write elsewhere"
        if owned
        else None
    )
    if problem:
        raise InputError(f"--out {problem} (the {what} file)", file=out)
    return out


def command_line() -> str:
    """The command line of this process, as a user would retype it.

    Returns:
        str: The shell-quoted arguments, the program named `graphrec`.
    """
    argv = list(sys.argv)
    if argv and argv[0].endswith(("cli.py", "/graphrec", "graphrec/__main__.py")):
        argv[0] = "graphrec"
    return shlex.join(argv)


# lock file -> depth: a process that holds a workspace's lock may nest stages
_HELD: dict[str, int] = {}
_READING: dict[str, int] = {}  # switch file -> the fd this process holds it shared with
F = TypeVar("F", bound=Callable[..., Any])


class Workspace:
    """A workspace folder: one run's stage folders and config.json (see the module docstring).

    Writers hold `lock()` (one at a time) and write a stage's folder whole (`new_stage`) or several
    together (`staging` and `switch`); readers hold `reading()` and reach an earlier stage through
    `require`, which checks its lineage. Nothing is created until a writer takes the lock.

    Args:
        path (str or os.PathLike): The workspace folder.

    Example::

        ws = Workspace("runs/ml")
        with ws.reading():
            graph_dir = ws.require("graph")  # refused when the folders it was made from changed
            settings = ws.stage_record("graph").settings
    """

    def __init__(self, path: str | os.PathLike):
        """Name the workspace folder `path`; nothing is read or created."""
        self.path = Path(path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time: an advisory lock (flock) on WS/.lock while a stage writes.

        The kernel drops it when the holder dies, so a killed run never leaves a stale lock; the
        file names the holder (pid, host, command) for the one-line refusal another writer gets. A
        workspace folder it had to create is removed again when the writer left nothing in it (a
        mistyped path stays unmade). A process that holds the lock may take it again (nested
        stages); on taking it, `recover` puts right what a killed writer left.

        Yields:
            None: While the lock is held.

        Raises:
            InputError: When the path is not a folder, or another graphrec run holds the lock
                (naming it).
        """
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise InputError(
                "is not a folder (a workspace is a folder of stage folders): name another path",
                file=self.path,
            )
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        key = str((self.path / LOCK).resolve())
        if _HELD.get(key):  # nested: this process holds it already
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        fd = open_private_file(self.path / LOCK)
        try:
            self._take_lock(fd)
            _HELD[key] = 1
            try:
                self.recover()
                yield
            finally:
                del _HELD[key]
        finally:
            os.close(fd)  # closing drops the flock
            if created and {p.name for p in self.path.iterdir()} <= {LOCK, SWITCH}:
                shutil.rmtree(self.path, ignore_errors=True)

    def _take_lock(self, fd: int) -> None:
        """Flock the open lock file `fd` without waiting and write this process into it as the holder.

        Raises:
            InputError: Another graphrec run holds it (naming it).
        """
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise InputError(
                f"workspace is in use by another graphrec run ({holder}): wait for it to finish "
                "(one writer at a time)",
                file=self.path,
            ) from None
        since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command_line(),
            "since": since,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)

    def recover(self) -> None:
        """Put right what a killed writer left (the lock holder only: a live writer's temp names would match).

        Finish or discard a switch journal, put back a folder caught between the two renames of a
        switch on a file system without atomic exchange, then delete temp folders and files (see
        _LEFTOVER_TOP).
        """
        journal = self.path / JOURNAL
        missing = self._half_switched()
        if os.path.lexists(journal) or missing:
            with self._switch_lock(fcntl.LOCK_EX):
                # first: a journal's move may be the one caught between its renames
                for stage in missing:
                    if restore_dir(self.stage_dir(stage)):
                        log.warning(
                            "restored %s/ of %s: a run was killed while switching it",
                            stage,
                            self.path,
                        )
                if os.path.lexists(journal):
                    plan = self._read_plan()
                    if plan is not None:
                        self._replay(plan)
                    journal.unlink(missing_ok=True)
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Delete the temp names killed writers left (_LEFTOVER_TOP, _LEFTOVER_IN_STAGE, STAGING folders)."""
        found = [
            p
            for p in self.path.iterdir()
            if _LEFTOVER_TOP.fullmatch(p.name) or p.name.startswith(STAGING)
        ]
        for stage in STAGES:
            d = self.stage_dir(stage)
            if d.is_dir():
                found += [
                    p for p in d.iterdir() if _LEFTOVER_IN_STAGE.fullmatch(p.name)
                ]
        for p in found:
            # One that will not go is harmless (no reader looks at temp names) and must not stop the command.
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
        if found:
            log.info(
                "removed %d leftovers of an interrupted run: %s",
                len(found),
                ", ".join(str(p.relative_to(self.path)) for p in found),
            )

    def new_stage(
        self, stage: str, keep: bool = False
    ) -> contextlib.AbstractContextManager[Path]:
        """A temp folder for writing `stage`'s folder afresh, switched in as a whole on success.

        The switch happens while no reader reads (graphrec.core.io.atomic_dir).

        Args:
            stage (str): The stage (of STAGES).
            keep (bool, optional): Start from hard links to the stage folder's current files.
                (default: :obj:`False`)

        Returns:
            contextlib.AbstractContextManager: Yields the temp folder (Path) to write in.
        """
        target = self.stage_dir(stage)
        return atomic_dir(
            target,
            guard=self._switch_lock(fcntl.LOCK_EX),
            like=target if keep else None,
        )

    # -- switching several folders and files in as one -----------------------------------------------------
    @contextlib.contextmanager
    def staging(self) -> Iterator[Workspace]:
        """A workspace in a temp folder inside this one, for a writer to stage several folders in.

        The writer holds the lock and hands the staged folders to `switch`. The folder is removed on
        failure (and by `recover` when the writer was killed).

        Yields:
            Workspace: The staging workspace.
        """
        staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=self.path))
        try:
            yield Workspace(staging)
        finally:
            # else committed: the journal's replay needs it
            if not os.path.lexists(self.path / JOURNAL):
                shutil.rmtree(staging, ignore_errors=True)

    def switch(self, moves: list[tuple[Path, Path]], staging: Workspace) -> None:
        """Put each staged (source, target) pair in place, all or nothing.

        Journal first (the commit point), then the moves, each a folder's atomic exchange or a
        file's rename; see the module doc. Targets are names right inside the workspace (SWITCHED),
        sources inside `staging`; the journal records them relative to the workspace, so a moved
        workspace still recovers.

        Args:
            moves (list of (Path, Path)): (source, target) pairs.
            staging (Workspace): The staging workspace the sources lie in (`staging()`).
        """
        rel = lambda p: Path(p).relative_to(self.path).as_posix()  # noqa: E731
        record = {
            "staging": rel(staging.path),
            "moves": [[rel(a), rel(b)] for a, b in moves],
            "before": {rel(b): _identity(b) for _, b in moves},
            "after": {rel(b): _identity(a) for a, b in moves},
        }
        with self._switch_lock(fcntl.LOCK_EX):
            write_json(self.path / JOURNAL, record)
            plan = self._read_plan()
            # a switch graphrec itself asked for is always inside: reaching here is a bug
            if plan is None:
                raise RuntimeError(f"switch outside the workspace refused: {record}")
            self._replay(plan)
            (self.path / JOURNAL).unlink(missing_ok=True)

    def _read_plan(self) -> _Plan | None:
        """The journal, when every path it names stays inside the workspace; else None.

        Inside: the staging folder is a real folder right inside it (STAGING* or TRAINING), each
        source inside that folder, each target one of SWITCHED. Anything else (damaged, hand-edited,
        planted, a symlink) is discarded with a warning and never acted on: the journal is the one
        file a reader acts on, so it must not be able to point a command elsewhere.
        """
        path = self.path / JOURNAL
        try:
            if path.is_symlink():
                raise ValueError("it is a symbolic link")
            raw = json.loads(path.read_text(encoding="utf-8"))
            return self._plan(raw)
        except (
            OSError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            RecursionError,
        ) as e:
            log.warning(
                "discarded %s: %s (run the interrupted command again)",
                path,
                e
                if isinstance(e, ValueError)
                else "not a switch journal graphrec wrote",
            )
            return None

    def _plan(self, raw: dict[str, Any]) -> _Plan:
        """The plan of a journal's JSON.

        Raises:
            ValueError: When it names anything `_read_plan` refuses (a malformed one raises a lookup
                or type error).
        """
        staging = self._inside(raw["staging"])
        if (
            staging.parent != self.path
            or not (staging.name.startswith(STAGING) or staging.name == TRAINING)
            or staging.is_symlink()
        ):
            raise ValueError(
                f"its staging folder {raw['staging']!r} is not one graphrec makes"
            )
        moves = tuple((self._inside(a), self._inside(b)) for a, b in raw["moves"])
        for src, dst in moves:
            if (
                staging not in src.parents
                or dst.parent != self.path
                or dst.name not in SWITCHED
            ):
                raise ValueError(
                    f"it moves {src} to {dst}: only staged files onto stage folders or config.json"
                )
        ident = lambda v: None if v is None else [int(v[0]), int(v[1])]  # noqa: E731
        return _Plan(
            staging,
            moves,
            {b: ident(raw["before"][b.name]) for _, b in moves},
            {b: ident(raw["after"][b.name]) for _, b in moves},
        )

    def _inside(self, name: object) -> Path:
        """self.path / `name` for a relative path that stays inside the workspace once symlinks are resolved.

        Raises:
            ValueError: When `name` is not such a path.
        """
        rel = PurePosixPath(name) if isinstance(name, str) else None
        if rel is None or not rel.parts or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"it names {name!r}, not a path inside {self.path}")
        p = self.path.joinpath(*rel.parts)
        if (
            Path(os.path.realpath(self.path))
            not in (Path(os.path.realpath(p.parent)) / p.name).parents
        ):
            raise ValueError(
                f"{name!r} leads outside {self.path} through a symbolic link"
            )
        return p

    def _replay(self, plan: _Plan) -> None:
        """Finish the moves of a journal (idempotent), or discard them all when a target changed by other means."""
        todo, newer = [], None
        for src, dst in plan.moves:
            now = _identity(dst)
            if now == plan.after[dst]:
                continue  # moved before the interruption
            if now == plan.before[dst] and src.exists() and not src.is_symlink():
                todo.append((src, dst))
            else:
                newer = dst
        if newer is not None:
            log.warning(
                "discarded an interrupted switch of %s: %s changed since it was staged (newer work wins; "
                "run the interrupted command again)",
                self.path,
                newer,
            )
            todo = []
        for src, dst in todo:
            if src.is_dir():
                switch_dir(src, dst)
            else:
                os.replace(src, dst)
        shutil.rmtree(plan.staging, ignore_errors=True)

    # -- readers ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """A consistent view for a command that reads stages without writing them.

        Holds WS/.switch shared, so no writer switches a folder in while it runs (a switch in
        progress is waited for), after having a killed writer's half-done switch put right
        (`recover`, under the lock when it is free). In the process that writes the workspace,
        inside another `reading()`, or where the folder does not exist, it just runs the block.

        Yields:
            None: While the view holds.

        Raises:
            InputError: When a killed run left the workspace half-switched and another run holds it.
        """
        key = str((self.path / SWITCH).resolve())
        if (
            _HELD.get(str((self.path / LOCK).resolve()))
            or key in _READING
            or not self.path.is_dir()
        ):
            yield  # this process is the writer (nothing switches under it), or reads already
            return
        for _ in range(200):
            with self._switch_lock(fcntl.LOCK_SH) as fd:
                if not self._interrupted():
                    if fd is not None:
                        _READING[key] = fd
                    try:
                        yield
                    finally:
                        _READING.pop(key, None)
                    return
            # a live writer holds the lock: it recovers first, wait for it
            with contextlib.suppress(InputError):
                with self.lock():
                    pass
            time.sleep(0.05)
        raise InputError(
            "workspace was left half-switched by a killed run and another run holds it: wait for that "
            "run to finish",
            file=self.path,
        )

    def _interrupted(self) -> bool:
        """Whether a killed writer left a switch journal or a half-switched stage folder."""
        return os.path.lexists(self.path / JOURNAL) or bool(self._half_switched())

    def _half_switched(self) -> list[str]:
        """Stages whose folder a kill between switch_dir's two renames left missing (its old copy in a .old)."""
        return [
            s
            for s in STAGES
            if not self.stage_dir(s).exists() and any(self.path.glob(f".{s}.*.old"))
        ]

    @contextlib.contextmanager
    def _switch_lock(self, mode: int) -> Iterator[int | None]:
        """Lock WS/.switch (flock) in `mode`, yielding its fd.

        A process that reads the workspace and then writes a stage in it (a library caller nesting a
        stage inside a read) turns its own shared lock exclusive for the switch and back, instead of
        waiting on itself. Yields None where the folder cannot hold a lock file (a read-only
        workspace: nothing can switch in it either).
        """
        key = str((self.path / SWITCH).resolve())
        if key in _READING:
            fd = _READING[key]
            fcntl.flock(fd, mode)
            try:
                yield fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_SH)
            return
        try:
            fd = open_private_file(self.path / SWITCH)
        except OSError:
            yield None
            return
        try:
            fcntl.flock(fd, mode)
            yield fd
        finally:
            os.close(fd)

    @classmethod
    def of(cls, workspace: Workspace | str | os.PathLike) -> Workspace:
        """Accept a Workspace or a path, as every stage function does.

        Args:
            workspace (Workspace, str or os.PathLike): A workspace, or its folder.

        Returns:
            Workspace: `workspace` itself, or a Workspace of that folder.
        """
        return workspace if isinstance(workspace, Workspace) else cls(workspace)

    def __repr__(self) -> str:
        """Workspace('PATH')."""
        return f"Workspace({str(self.path)!r})"

    def stage_dir(self, stage: str) -> Path:
        """The folder of `stage`, whether or not it exists.

        Args:
            stage (str): A stage (of STAGES).

        Returns:
            Path: WS/`stage`.

        Raises:
            ValueError: On an unknown stage.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        return self.path / stage

    @property
    def config_path(self) -> Path:
        """WS/config.json."""
        return self.path / "config.json"

    def config(self) -> Config:
        """config.json, or no stage records where there is none.

        Returns:
            Config: Every stage's record.

        Raises:
            InputError: On a damaged config.json (it says to remove it: each stage records itself
                again when it next runs).
        """
        if not self.config_path.exists():
            return Config()
        # Every stage rewrites the file from what it reads here, so a damaged one is mended by removing it: the
        # stages lose their records (and lineage checks) until each runs again.
        return Config.read(
            self.config_path,
            "remove it (each stage records itself again when it next runs)",
        )

    def stage_record(self, stage: str) -> StageRecord | None:
        """The record of `stage` in config.json, None before the stage has run.

        Args:
            stage (str): A stage (of STAGES).

        Returns:
            StageRecord or None: Its settings, inputs, lineage, command line and when it finished.
        """
        return self.config().stages.get(stage)

    def lineage(
        self, stage: str, dirs: dict[str, Path] | None = None
    ) -> dict[str, str]:
        """Fingerprints of the LINEAGE folders before `stage` (from `dirs` where given, else this workspace).

        Args:
            stage (str): A stage; anything not of STAGES has no lineage.
            dirs (dict, optional): Stage name -> folder to fingerprint in place of this workspace's.
                (default: :obj:`None`: this workspace's folders)

        Returns:
            dict: Stage name -> fingerprint (`fingerprints`), for the folders that exist.
        """
        if stage not in STAGES:
            return {}
        before = [s for s in LINEAGE if STAGES.index(s) < STAGES.index(stage)]
        return fingerprints({s: (dirs or {}).get(s, self.stage_dir(s)) for s in before})

    def record(
        self,
        stage: str,
        settings: dict[str, Any],
        inputs: dict[str, Any] | None = None,
        command: str | None = None,
        dirs: dict[str, Path] | None = None,
    ) -> None:
        """Store a finished stage's settings, inputs, lineage (of `dirs` where given) and command line.

        The record also gets the time it finished (now, UTC); config.json is rewritten atomically.

        Args:
            stage (str): The stage.
            settings (dict): Its settings.
            inputs (dict, optional): The inputs it read (paths and their hashes). (default:
                :obj:`None`: none)
            command (str, optional): Its command line. (default: :obj:`None`: this process's,
                `command_line`)
            dirs (dict, optional): Stage name -> folder to take the lineage from (see `lineage`).
                (default: :obj:`None`: this workspace's folders)
        """
        record = StageRecord(
            settings,
            inputs or {},
            command if command is not None else command_line(),
            self.lineage(stage, dirs),
            _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        stages = self.config().stages
        Config({**stages, stage: record}).write(self.config_path)

    def relink(self, stages: list[str], dirs: dict[str, Path]) -> None:
        """Re-record the lineage of `stages` against `dirs` (an update that rewrote them together).

        Args:
            stages (list of str): The stages to re-record; those without a record are skipped.
            dirs (dict): Stage name -> folder to take the lineage from (see `lineage`).
        """
        records = self.config().stages
        relinked = {
            stage: replace(records[stage], lineage=self.lineage(stage, dirs))
            for stage in stages
            if stage in records
        }
        Config({**records, **relinked}).write(self.config_path)

    def _check_no_links(self, d: Path) -> None:
        """Refuse a stage folder `d` that is, or holds, a symbolic link.

        graphrec writes stage folders of plain files; a symbolic link there (the folder itself, or a
        file in it) was planted, and could make a reader read, or a writer replace, something
        outside the workspace.

        Raises:
            InputError: Naming the link and the command that makes the folder again.
        """
        link = (
            d
            if d.is_symlink()
            else next((p for p in d.iterdir() if p.is_symlink()), None)
        )
        if link is not None:
            raise InputError(
                f"is a symbolic link; a workspace's stage folders hold plain files only: remove it and "
                f"re-run `{MAKE[d.name]}`",
                file=link,
            )

    def require(self, stage: str) -> Path:
        """The folder of an earlier stage, checked against its lineage.

        Every reader of an earlier stage's folder goes through it, so a stale stage is never used
        silently.

        Args:
            stage (str): The stage (of STAGES).

        Returns:
            Path: The stage's folder.

        Raises:
            InputError: Saying which command makes it (again): when the folder is missing, is or
                holds a symbolic link, or was made from earlier folders that have changed since or
                are gone.

        Example::

            model_dir = Workspace("runs/ml").require("model")
        """
        d = self.stage_dir(stage)
        if not d.is_dir():
            raise InputError(
                f"workspace has no {stage}/ yet: run `{MAKE[stage]}` first",
                file=self.path,
            )
        self._check_no_links(d)
        for s, now in self.outdated_inputs(stage).items():
            why = "is gone" if now is None else "has changed since"
            raise InputError(
                f"{stage}/ was made from an earlier {s}/, which {why}: run `{MAKE[stage]}` again "
                "(or re-make the earlier stages first)",
                file=d,
            )
        return d

    def outdated_inputs(self, stage: str) -> dict[str, str | None]:
        """The earlier stages whose folders changed since `stage` was made.

        Args:
            stage (str): The stage.

        Returns:
            dict: Earlier stage -> its fingerprint now (None when gone); empty when none changed, or
                the stage has no lineage recorded.
        """
        record = self.stage_record(stage)
        made_from = (record.lineage if record else None) or {}
        now = self.lineage(stage) if made_from else {}
        return {s: now.get(s) for s, fp in made_from.items() if now.get(s) != fp}
