"""`graphrec quickstart`: the whole pipeline on the embedded synthetic default, in a few minutes on a CPU.

synthetic data (pictures, text, attributes, taste-driven clicks) -> split with cold items and cold users
-> encode -> knowledge graph -> train (select on validation, refit) -> evaluate -> export.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from graphrec.core.io import read_json
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
    workspace: Path
    report: Path
    export: Path
    metrics: dict


def run_quickstart(
    out: str | os.PathLike = "graphrec-quickstart",
    *,
    users: int = 300,
    items: int = 400,
    interactions: int = 15000,
    seed: int = 0,
    epochs: int = 40,
    modalities: tuple[str, ...] = ("lexical",),
    clip_pretrained: str | None = None,
    say: Callable[[str], None] = print,
) -> QuickstartResult:
    """Run every stage into the workspace `out`/workspace (replacing its stage folders), export to `out`/export
    (beside the workspace: an export never goes inside one) and return where things are.

    Text is encoded lexically by default because it needs no downloaded weights; pass
    `modalities=("lexical", "clip_image", "clip_text")` with a `clip_pretrained` tag where CLIP weights can be had.
    """
    ws = Workspace(Path(out) / "workspace")
    with ws.lock():
        return _run(
            ws,
            Path(out) / "export",
            users,
            items,
            interactions,
            seed,
            epochs,
            modalities,
            clip_pretrained,
            say,
        )


def _run(
    ws: Workspace,
    export_dir: Path,
    users: int,
    items: int,
    interactions: int,
    seed: int,
    epochs: int,
    modalities: tuple[str, ...],
    clip_pretrained: str | None,
    say: Callable[[str], None],
) -> QuickstartResult:
    say(
        f"1/7 synthetic data: {users} users, {items} items, {interactions} interactions -> {ws.path}"
    )
    run_synth(
        ws.path, n_users=users, n_items=items, n_interactions=interactions, seed=seed
    )
    say(
        "2/7 split: 10% valid, 10% test per user; 20% of items and 10% of users held out cold"
    )
    run_split(
        ws.path,
        method="random",
        valid=0.1,
        test=0.1,
        cold_items=0.2,
        cold_users=0.1,
        cold_user_context=3,
        seed=seed,
    )
    say(f"3/7 encode: {', '.join(modalities)}")
    run_encode(ws, list(modalities), clip_pretrained=clip_pretrained, seed=seed)
    say("4/7 knowledge graph")
    run_build(ws, item_knn=10, force=True)
    say("5/7 train")
    run_train(ws, epochs=epochs, seed=seed)
    say("6/7 evaluate")
    eval_dir = run_evaluate(ws)
    say("7/7 export")
    exported = export(ws, export_dir)
    metrics = read_json(Path(eval_dir) / "metrics.json")
    return QuickstartResult(ws.path, Path(eval_dir) / "report.html", exported, metrics)
