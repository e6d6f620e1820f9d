"""`graphrec quickstart`: the whole pipeline on the embedded synthetic default, in a few minutes on a CPU.

synthetic data (pictures, text, attributes, taste-driven clicks) -> split with cold items and cold users
-> encode -> knowledge graph -> train (select on validation, refit) -> evaluate -> export.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from graphrec.core.io import read_json
from graphrec.core.settings import QuickstartSettings, SplitSettings
from graphrec.core.workspace import Workspace
from graphrec.data.splits import run_split
from graphrec.data.synth import run_synth
from graphrec.kg.build import run_build
from graphrec.stages.encode import run_encode
from graphrec.stages.evaluate import run_evaluate
from graphrec.stages.export import export
from graphrec.stages.train import run_train


@dataclass
class QuickstartResult:
    """Where a quickstart left things: the workspace, its report, the export, and the test metrics."""

    workspace: Path
    report: Path
    export: Path
    metrics: dict


def run_quickstart(
    out: str | os.PathLike = "graphrec-quickstart",
    settings: QuickstartSettings | None = None,
    *,
    say: Callable[[str], None] = print,
    **overrides: Any,
) -> QuickstartResult:
    """Run every stage into the workspace `out`/workspace and export to `out`/export.

    The workspace's stage folders are replaced; the export goes beside the workspace (an export never
    goes inside one). Text is encoded lexically by default because it needs no downloaded weights; pass
    `modalities=("lexical", "clip_image", "clip_text")` with a `clip_pretrained` tag where CLIP weights
    can be had.

    Args:
        out: the folder to (re)write.
        settings: QuickstartSettings (sizes, seed, epochs, modalities); its defaults when None.
        say: called with one line per stage (progress for people).
        **overrides: QuickstartSettings fields as keywords.

    Returns:
        Where the workspace, the report and the export are, and the test metrics.

    Example::

        result = run_quickstart("demo", n_users=200, epochs=20)
        print(result.report)
    """
    chosen = replace(settings or QuickstartSettings(), **overrides)
    ws = Workspace(Path(out) / "workspace")
    with ws.lock():
        return _run(ws, Path(out) / "export", chosen, say)


def _run(
    ws: Workspace,
    export_dir: Path,
    settings: QuickstartSettings,
    say: Callable[[str], None],
) -> QuickstartResult:
    size = f"{settings.n_users} users, {settings.n_items} items"
    say(
        f"1/7 synthetic data: {size}, {settings.n_interactions} interactions -> {ws.path}"
    )
    run_synth(
        ws.path,
        n_users=settings.n_users,
        n_items=settings.n_items,
        n_interactions=settings.n_interactions,
        seed=settings.seed,
    )
    split = SplitSettings(
        cold_users=settings.cold_users,
        cold_user_context=settings.cold_user_context,
        seed=settings.seed,
    )
    say(
        f"2/7 split: {split.valid:.0%} valid, {split.test:.0%} test per user; "
        f"{split.cold_items:.0%} of items and {split.cold_users:.0%} of users held out cold"
    )
    run_split(ws.path, split)
    say(f"3/7 encode: {', '.join(settings.modalities)}")
    run_encode(
        ws,
        list(settings.modalities),
        clip_pretrained=settings.clip_pretrained,
        seed=settings.seed,
    )
    say("4/7 knowledge graph")
    run_build(ws, item_knn=settings.item_knn, force=True)
    say("5/7 train")
    run_train(ws, epochs=settings.epochs, seed=settings.seed)
    say("6/7 evaluate")
    eval_dir = run_evaluate(ws)
    say("7/7 export")
    exported = export(ws, export_dir)
    metrics = read_json(Path(eval_dir) / "metrics.json")
    return QuickstartResult(ws.path, Path(eval_dir) / "report.html", exported, metrics)
