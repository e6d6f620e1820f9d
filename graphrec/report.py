"""The evaluation report: one list of blocks rendered twice, as report.md and as a self-contained report.html.

Plots are matplotlib PNGs (Agg backend) in plots/ and inlined into the HTML as base64, so the HTML opens
anywhere on its own.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graphrec.artifacts import read_history
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.data.stats import dataset_stats
from graphrec.io import read_json
from graphrec.metrics import ACCURACY
from graphrec.rank import Ranker
from graphrec.recommend import explanations
from graphrec.workspace import STAGES, Workspace, command_line

if TYPE_CHECKING:  # matplotlib is imported where a plot is drawn (the Agg backend is chosen first)
    from matplotlib.figure import Figure

Block = tuple  # ("h", text) | ("p", text) | ("warn", text) | ("pre", text) | ("table", header, rows) | ("img", file, caption)
IDENTITY_KEYS = ("model", "pretrained", "weights", "checkpoint", "checkpoint_sha256", "random_weights", "dim")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def write_report(out: Path, ws: Workspace, ds: Dataset, r: Ranker, metrics: dict[str, Any], examples: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    (out / "plots").mkdir(exist_ok=True)
    blocks: list[Block] = [("h", f"graphrec evaluation: {ds.schema.name}")]
    blocks += _warnings(ws)
    blocks += _summary(ws, ds)
    blocks += _metric_tables(metrics)
    blocks += _plots(out / "plots", ws, metrics)
    blocks += _examples(ws, ds, r, examples)
    blocks += _reproduce(ws)
    (out / "report.md").write_text(_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(_html(blocks, out), encoding="utf-8")


def _warnings(ws: Workspace) -> list[Block]:
    blocks: list[Block] = []
    for name, meta in _encoders(ws).items():
        if meta.get("random_weights"):
            blocks.append(("warn", f"The {name} encoder ran with RANDOM weights (no pretrained checkpoint): content "
                                   "features are not meaningful and cold-start numbers are not representative."))
    return blocks


def _encoders(ws: Workspace) -> dict[str, dict[str, Any]]:
    d = ws.stage_dir("features")
    return {p.stem: read_json(p) for p in sorted(d.glob("*.json"))} if d.is_dir() else {}


def _summary(ws: Workspace, ds: Dataset) -> list[Block]:

    st = dataset_stats(ds)
    rows = [[k, json.dumps(st[k]) if isinstance(st[k], (dict, list)) else _fmt(st[k])]
            for k in ("users", "items", "interactions", "density", "parts", "cold_items", "cold_users",
                      "interactions_per_user", "interactions_per_item") if k in st]
    blocks: list[Block] = [("h2", "Dataset"), ("table", ["", "value"], rows)]
    g = ws.stage_dir("graph") / "graph.json"
    if g.exists():
        info = read_json(g)
        rows = [[f"nodes: {t}", str(n)] for t, n in info.get("num_nodes", {}).items()]
        rows += [[f"edges: {k}", str(n)] for k, n in info.get("num_edges", {}).items()]
        blocks += [("h2", "Knowledge graph"), ("table", ["", "count"], rows)]
    enc = _encoders(ws)
    if enc:
        rows = [[m] + [_fmt(meta.get(k)) for k in IDENTITY_KEYS] for m, meta in enc.items()]
        blocks += [("h2", "Encoders"), ("table", ["modality", *IDENTITY_KEYS], rows)]
    return blocks


def _metric_tables(m: dict[str, Any]) -> list[Block]:
    ks = m["ks"]
    blocks: list[Block] = [("h2", "Metrics (test parts, full ranking, known interactions excluded)")]
    rk = m["ranker"]
    blocks.append(("p", f"Blend fitted on validation with {rk.get('fitted_with', 'embeddings.safetensors')}: warm "
                        f"{json.dumps(rk.get('weights_warm'))}, cold {json.dumps(rk.get('weights_cold'))}, cold offset "
                        f"{rk.get('cold_offset')}; validation NDCG {json.dumps(rk.get('validation_ndcg'))}."))
    for task, res in m["tasks"].items():
        acc = res["accuracy"]
        rows = [[name] + [_fmt(acc[f"{name}@{k}"]) for k in ks] for name in ACCURACY]
        beyond = res["beyond"]
        rows += [[name] + [_fmt(beyond[f"@{k}"][name]) for k in ks]
                 for name in ("coverage", "novelty", "diversity", "arp", "arp_ratio", "head_share")]
        blocks += [("h3", f"{task}: {res['users']} users, {res['held_out']} held-out interactions, "
                          f"{res['candidates']} candidates"), ("table", ["metric", *[f"@{k}" for k in ks]], rows)]
        k = m["histogram_k"]
        rows = [[b, str(v["users"]), _fmt(v[f"recall@{k}"]), _fmt(v[f"ndcg@{k}"])] for b, v in res["buckets"].items()]
        blocks.append(("table", ["activity bucket", "users", f"recall@{k}", f"ndcg@{k}"], rows))
    for task, why in m["skipped"].items():
        blocks.append(("p", f"{task}: not evaluated ({why})."))
    blocks.append(("p", f"Activity buckets: {m['bucket_rule']}. Novelty: mean -log2 of smoothed training popularity. "
                        "Diversity: mean pairwise cosine distance of content vectors within a list. ARP: mean "
                        "training popularity of recommended items; head share: share in the top 20% most popular "
                        "candidates."))
    return blocks


def _plots(d: Path, ws: Workspace, m: dict[str, Any]) -> list[Block]:
    import matplotlib.pyplot as plt

    blocks: list[Block] = [("h2", "Plots")]
    tasks = m["tasks"]
    if tasks:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, name in zip(axes, ("recall", "ndcg")):
            for task, res in tasks.items():
                ax.plot(m["ks"], [res["accuracy"][f"{name}@{k}"] for k in m["ks"]], marker="o", label=task)
            ax.set(xlabel="K", ylabel=name, title=f"{name} vs K")
            ax.legend()
        blocks.append(_save(fig, d / "metric_vs_k.png", "Recall and NDCG at each K, per task"))
        k = m["histogram_k"]
        fig, ax = plt.subplots(figsize=(10, 3.6))
        width = 0.8 / len(tasks)
        for j, (task, res) in enumerate(tasks.items()):
            labels = list(res["buckets"])
            xs = np.arange(len(labels)) + j * width
            ax.bar(xs, [res["buckets"][b][f"recall@{k}"] for b in labels], width, label=task)
            for x, b in zip(xs, labels):
                ax.annotate(b, (x, 0), rotation=90, fontsize=7, va="bottom", ha="center")
        ax.set(ylabel=f"recall@{k}", title="Recall by user activity (interactions given)", xticks=[])
        ax.legend()
        blocks.append(_save(fig, d / "recall_by_activity.png", f"Recall@{k} per user-activity bucket"))
        fig, ax = plt.subplots(figsize=(10, 3.6))
        task = "overall" if "overall" in tasks else next(iter(tasks))
        h = tasks[task]["popularity_histogram"]
        labels = [f"{a}" if b - a <= 1 else f"{a}-{b - 1}" for a, b in zip(h["edges"], h["edges"][1:])]
        labels.append(f"{h['edges'][-1]}+")
        xs = np.arange(len(labels))
        ax.bar(xs - 0.2, h["catalogue"], 0.4, label="candidate items")
        ax.bar(xs + 0.2, h["recommended"], 0.4, label=f"recommended (top {k})")
        ax.set(xticks=xs, xlabel="training interactions of the item", ylabel="share",
               title=f"Popularity of recommended items vs catalogue ({task})")
        ax.set_xticklabels(labels, rotation=45, fontsize=8)
        ax.legend()
        blocks.append(_save(fig, d / "popularity.png", "Popularity of recommended items vs the candidate catalogue"))
    hist = read_history(ws)
    if hist is not None:
        rows = hist if isinstance(hist, list) else hist.get("history", [])
        keys = [k for k in ("loss", "bpr", "cold", "align") if any(k in r for r in rows)]
        vkeys = sorted({k for r in rows for k in r if "@" in k and isinstance(r[k], (int, float))})
        if rows and (keys or vkeys):
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
            for phase in dict.fromkeys(r.get("phase", "train") for r in rows):
                pr = [r for r in rows if r.get("phase", "train") == phase]
                for ax, ks in zip(axes, (keys, vkeys)):
                    for key in ks:
                        pts = [(r["epoch"], r[key]) for r in pr if key in r]
                        if pts:
                            ax.plot(*zip(*pts), label=f"{phase} {key}")
            axes[0].set(xlabel="epoch", title="training loss")
            axes[1].set(xlabel="epoch", title="validation metrics")
            for ax in axes:
                if ax.has_data():
                    ax.legend(fontsize=7)
            blocks.append(_save(fig, d / "training.png", "Training curves (model/history.json)"))
    return blocks


def _save(fig: Figure, path: Path, caption: str) -> Block:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return ("img", f"plots/{path.name}", caption)


def _examples(ws: Workspace, ds: Dataset, r: Ranker, n: int) -> list[Block]:
    if n <= 0:
        return []

    test_users = np.unique(ds.part("test", "cold_test", "cold_user_test")["user"].to_numpy())[:n]
    if len(test_users) == 0:
        return []
    history = ds.matrix(GIVEN)
    top, scores = r.topk(test_users, 5, history)
    rows_, pos = np.nonzero(top >= 0)
    why = explanations(ws, ds, r, history, test_users[rows_], top[rows_, pos])
    label = ds.item_labels()
    rows = [[str(ds.user_ids[test_users[a]]), str(b + 1), f"{label[top[a, b]]} ({ds.item_ids[top[a, b]]})",
             "cold" if not r.warm[top[a, b]] else "warm", f"{scores[a, b]:.3f}", w]
            for a, b, w in zip(rows_, pos, why)]
    return [("h2", "Example recommendations (all items, known interactions excluded)"),
            ("table", ["user", "rank", "item", "kind", "score", "explanation"], rows)]


def _reproduce(ws: Workspace) -> list[Block]:
    stages = ws.config().get("stages", {})
    cmds = [stages[s]["command"] for s in STAGES if s in stages and s != "eval"] + [command_line()]
    return [("h2", "Reproduce"), ("pre", "\n".join(cmds))]


def _markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h", "h2", "h3"):
            lines += ["#" * {"h": 1, "h2": 2, "h3": 3}[kind] + " " + b[1], ""]
        elif kind == "p":
            lines += [b[1], ""]
        elif kind == "warn":
            lines += [f"> **WARNING:** {b[1]}", ""]
        elif kind == "pre":
            lines += ["```", b[1], "```", ""]
        elif kind == "table":
            cell = (lambda x: str(x).replace("|", "\\|"))
            lines += ["| " + " | ".join(map(cell, b[1])) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in b[2]] + [""]
        elif kind == "img":
            lines += [f"![{b[2]}]({b[1]})", ""]
    return "\n".join(lines)


def _html(blocks: list[Block], root: Path) -> str:
    e = html.escape
    body: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h", "h2", "h3"):
            tag = {"h": "h1", "h2": "h2", "h3": "h3"}[kind]
            body.append(f"<{tag}>{e(b[1])}</{tag}>")
        elif kind == "p":
            body.append(f"<p>{e(b[1])}</p>")
        elif kind == "warn":
            body.append(f'<div class="warn"><b>WARNING:</b> {e(b[1])}</div>')
        elif kind == "pre":
            body.append(f"<pre>{e(b[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(c))}</th>" for c in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((root / b[1]).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(b[2])}">'
                        f"<figcaption>{e(b[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
             ".warn{background:#fde2e1;border:2px solid #c00;padding:.8em;margin:1em 0;font-size:1.1em}"
             "pre{background:#f6f6f6;padding:.8em;overflow-x:auto}img{max-width:100%}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>graphrec report</title><style>{style}'
            f"</style></head><body>{''.join(body)}</body></html>\n")
