"""Markdown tables from benchmark results, written into BENCHMARKS.md between per-dataset markers.

Only the text between `<!-- peers:DATASET:begin -->` and `<!-- peers:DATASET:end -->` (or, for scale runs,
`<!-- scale:begin -->` / `<!-- scale:end -->`) is replaced; other sections of the file are left as they are.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from graphrec.core.io import atomic_path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
TASK_TITLES = {
    "warm": "Warm users and items",
    "cold-item": "Cold items (no interactions, content only)",
    "cold-user": "Cold users (attributes only)",
}


def _ms(values: list[float], digits: int = 4) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, dict)) or "–"


def _selected(rows: list[dict[str, Any]]) -> str:
    """The setting chosen on validation; per seed when the seeds chose differently."""
    by_seed = {r["seed"]: _params(r["params"]) for r in rows}
    if len(set(by_seed.values())) == 1:
        return next(iter(by_seed.values()))
    return "; ".join(f"seed {s}: {p}" for s, p in sorted(by_seed.items()))


def tables(result: dict[str, Any]) -> str:
    env = result["environment"]
    v = env["versions"]
    lines = [
        f"Dataset **{result['dataset']}**, seeds {', '.join(map(str, result['seeds']))}"
        f"{' (quick grids)' if result['quick'] else ''}; {env['date']}; {env['cpus']} CPUs ({env['cpu']}), "
        f"{env['ram_gib']} GiB RAM; Python {env['python']}, "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + f". Whole run: {result['wall_s'] / 60:.0f} min"
        + (
            f", {result['jobs']} systems side by side, {result['threads']} thread(s) each."
            if "jobs" in result
            else "."
        ),
        "",
        f"`{result['command']}`",
        "",
    ]
    by_task: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in result["rows"]:
        by_task[r["task"]][r["system"]].append(r)
    for task in ("warm", "cold-item", "cold-user"):
        systems = by_task.get(task)
        if not systems:
            continue
        lines += [
            f"**{TASK_TITLES[task]}**",
            "",
            "| system | Recall@20 | NDCG@20 | NDCG@10 | fit s | top-K s (users) | peak MiB | selected |",
            "|---|---|---|---|---|---|---|---|",
        ]
        order = sorted(
            systems, key=lambda s: -np.mean([r["ndcg@20"] for r in systems[s]])
        )
        for s in order:
            rs = systems[s]
            seeds = ", ".join(
                str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"])
            )
            label = (
                s
                if len(rs) == len(result["seeds"])
                else f"{s} (seed{'s' * (len(rs) > 1)} {seeds} only)"
            )
            fit = _ms([r["fit_s"] for r in rs], 1)
            if any("epoch_s" in r for r in rs):
                fit += f" ({_ms([r.get('epoch_s') for r in rs], 2)} s/epoch)"
            lines.append(
                f"| {label} | {_ms([r['recall@20'] for r in rs])} | {_ms([r['ndcg@20'] for r in rs])} | "
                f"{_ms([r['ndcg@10'] for r in rs])} | {fit} | {_ms([r['topk_s'] for r in rs], 2)} "
                f"({rs[0]['ranked_users']}) | {_ms([r['peak_mb'] for r in rs], 0)} | {_selected(rs)} |"
            )
        lines.append("")
    for f in result.get("failures", []):
        lines.append(
            f"- {f['system']} (seed {f['seed']}) did not finish: `{f['error']}`"
        )
    return "\n".join(lines).rstrip() + "\n"


def replace_block(text: str, tag: str, body: str, heading: str) -> str:
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    block = f"{begin}\n{body}{end}"
    if begin in text and end in text:
        return re.sub(
            re.escape(begin) + r".*?" + re.escape(end),
            lambda _: block,
            text,
            flags=re.S,
        )
    # a new block at the end of our section (before the next "## " heading)
    if heading in text:
        start = text.index(heading) + len(heading)
        nxt = text.find("\n## ", start)
        nxt = len(text) if nxt < 0 else nxt
        return text[:nxt].rstrip() + "\n\n" + block + "\n" + text[nxt:]
    return text.rstrip() + f"\n\n{heading}\n\n{block}\n"


def write_block(tag: str, body: str, heading: str, path: Path = BENCHMARKS_MD) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    with atomic_path(path) as tmp:
        tmp.write_text(replace_block(text, tag, body, heading), encoding="utf-8")


def update_benchmarks_md(result: dict[str, Any], path: Path = BENCHMARKS_MD) -> None:
    tag = f"peers:{result['dataset']}{'-quick' if result['quick'] else ''}"
    write_block(tag, tables(result), "## Peers on MovieLens", path)
