"""The evaluation report: one list of blocks rendered twice, as report.md and as a self-contained report.html.

Top first: the headline (graphrec against the best baseline, per task), the setup (version, date, split, seeds,
model settings), the data, the metrics with the baselines beside graphrec, plots, examples, and the commands
that made the workspace. A value that is not defined shows as "—", with a note saying why.

Plots are matplotlib PNGs (Agg backend) in plots/ and inlined into the HTML as base64, so the HTML opens
anywhere on its own.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graphrec.core.feature_store import feature_records
from graphrec.core.workspace import Workspace
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.data.stats import dataset_stats
from graphrec.kg.graph import read_graph_info
from graphrec.model.artifacts import read_history
from graphrec.model.metrics import ACCURACY
from graphrec.stages.rank import Ranker
from graphrec.stages.recommend import explanations

# matplotlib is imported where a plot is drawn (the Agg backend is chosen first)
if TYPE_CHECKING:
    from matplotlib.figure import Figure

# ("h" | "h2" | "h3" | "p" | "note" | "warn" | "pre", text) | ("table", header, rows) | ("kv", [(key, value)], columns)
# | ("img", file, caption)
Block = tuple
IDENTITY_KEYS = (
    "model",
    "pretrained",
    "weights",
    "checkpoint",
    "checkpoint_sha256",
    "random_weights",
    "dim",
)
UNDEFINED = "—"
BEYOND = ("coverage", "novelty", "diversity", "arp", "arp_ratio", "head_share")
# Why a beyond-accuracy value can be undefined: the footnote under a table that shows one.
WHY_UNDEFINED = {
    "coverage": "the task has no candidates",
    "novelty": "no list holds an item",
    "diversity": "there are no content features (or no list holds two items with content)",
    "arp_ratio": "the candidates' mean training popularity is 0: cold items have no training interactions",
    "head_share": "the top 20% most popular candidates include items without training interactions (cold items "
    "have none), so there is no popular head",
}
PART_ROLES = {
    "train": "training",
    "valid": "selection (warm)",
    "test": "test: warm task",
    "cold_valid": "selection (cold items)",
    "cold_test": "test: cold-item task",
    "cold_user_context": "given interactions of cold users",
    "cold_user_valid": "selection (cold users)",
    "cold_user_test": "test: cold-user task",
}
BASELINE_NAMES = {
    "popularity": "popularity",
    "ease": "EASE",
    "content": "content similarity",
}
# table cells the HTML aligns right
NUMBER = re.compile(rf"[-+]?[0-9.,]+(e[-+]?[0-9]+)?×?|{UNDEFINED}")


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return UNDEFINED
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(_fmt, v)) if v else UNDEFINED
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items()) if v else UNDEFINED
    return str(v)


def _setting(v: Any) -> str:
    """A setting as typed (0.1, 5e-3), not rounded to four places like a metric."""
    return f"{v:g}" if isinstance(v, float) else _fmt(v)


def write_report(
    out: Path,
    ws: Workspace,
    ds: Dataset,
    r: Ranker,
    metrics: dict[str, Any],
    examples: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    (out / "plots").mkdir(exist_ok=True)
    blocks: list[Block] = [("h", f"graphrec evaluation: {ds.schema.name}")]
    blocks += _warnings(ws)
    blocks += _headline(metrics)
    if "cold_user" in metrics["tasks"] and not ds.schema.user_attribute_columns:
        blocks.append(
            (
                "note",
                "cold_user: this dataset has no user attributes, so a cold user is ranked by their few "
                "context items if any and otherwise by what everyone gets (popularity and the fitted "
                "offsets: one list for all of them); coarse attributes (`data import "
                "--user-attribute-columns`) rank them by what people like them chose.",
            )
        )
    blocks += _setup(metrics["setup"])
    blocks += _summary(ws, ds)
    blocks += _metric_tables(metrics)
    blocks += _plots(out / "plots", ws, metrics)
    blocks += _examples(ws, ds, r, examples)
    blocks += [
        ("h2", "Reproduce"),
        ("p", "The commands that made this workspace, in pipeline order:"),
        ("pre", "\n".join(metrics["setup"]["commands"])),
    ]
    (out / "report.md").write_text(_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(_html(blocks, out), encoding="utf-8")


def _warnings(ws: Workspace) -> list[Block]:
    blocks: list[Block] = []
    for name, meta in _encoders(ws).items():
        if meta.get("random_weights"):
            blocks.append(
                (
                    "warn",
                    f"The {name} encoder ran with RANDOM weights (no pretrained checkpoint): content "
                    "features are not meaningful and cold-start numbers are not representative.",
                )
            )
    return blocks


def _encoders(ws: Workspace) -> dict[str, dict[str, Any]]:
    return feature_records(ws) if ws.stage_dir("features").is_dir() else {}


def _ratio(v: float | None) -> str:
    return UNDEFINED if v is None else f"{v:.2f}×"


def _with_interval(
    value: float | None, interval: list[float] | None, fmt: Any = None
) -> str:
    fmt = fmt or _fmt
    return (
        fmt(value)
        if interval is None or value is None
        else f"{fmt(value)} ({fmt(interval[0])}–{fmt(interval[1])})"
    )


def _headline_row(h: dict[str, Any]) -> list[str]:
    """A task's headline cells, each value with its bootstrap interval where metrics.json has one."""
    sides = {"ours": h["graphrec"], "theirs": h["baseline"] or {}, "ratio": h["ratio"]}
    intervals = h.get("intervals", {})

    def cell(metric: str, side: str) -> str:
        return _with_interval(
            sides[side].get(metric),
            (intervals.get(metric) or {}).get(side),
            _ratio if side == "ratio" else _fmt,
        )

    return [
        h["task"],
        str(h["users"]),
        cell("ndcg", "ours"),
        cell("recall_full", "ours"),
        _fmt(h["graphrec"].get("recall")),
        BASELINE_NAMES.get(h["best_baseline"], UNDEFINED),
        cell("ndcg", "theirs"),
        cell("recall_full", "theirs"),
        cell("ndcg", "ratio"),
        cell("recall_full", "ratio"),
    ]


def _headline(metrics: dict[str, Any]) -> list[Block]:
    """The headline section: graphrec against the best baseline per task and how to read it, the cold items'
    share of the lists, and why a task has no baseline."""
    k = metrics["headline_k"]
    rows, missing = [], []
    for h in metrics["headline"]:
        rows.append(_headline_row(h))
        if h["best_baseline"] is None:
            missing.append(h["task"])
    blocks = _headline_table(k, rows)
    notes = [
        f"{task}: no baseline can rank it ({_baseline_notes(metrics['baselines'], task)})."
        for task in missing
    ]
    for task, res in metrics["tasks"].items():
        share = res.get("cold_share")
        if share and share["lists"] is not None:
            blocks.append(
                (
                    "p",
                    f"{task}: cold items (no training interaction) are {share['lists']:.0%} of the "
                    f"top-{share['k']} lists and {share['truth']:.0%} of the held-out items they are "
                    "scored against (a list that over-promotes new items shows a larger first share).",
                )
            )
    if notes:
        blocks.append(("note", f"{UNDEFINED} " + " ".join(notes)))
    return blocks


def _headline_table(k: int, rows: list[list[str]]) -> list[Block]:
    """The headline's title, its table of NDCG@k and Recall@k per task, and how the baselines were scored."""
    return [
        ("h2", f"Headline: NDCG@{k} and Recall@{k} on the test parts"),
        (
            "table",
            [
                "task",
                "users",
                f"graphrec NDCG@{k}",
                f"graphrec Recall@{k}",
                f"capped Recall@{k}",
                "best baseline",
                f"baseline NDCG@{k}",
                f"baseline Recall@{k}",
                "NDCG ratio",
                "Recall ratio",
            ],
            rows,
        ),
        (
            "p",
            "Baselines are scored by graphrec evaluate itself on the same split and protocol: the same test "
            "users, candidates and excluded interactions, full ranking. The best baseline is the one with the "
            f"higher NDCG@{k}; ratio = graphrec / best baseline. In brackets: 95% bootstrap intervals over the "
            "task's users (1,000 resamples, the same users for both systems): a ratio whose interval holds 1× "
            f"is not a win. Recall@{k} = hits / |truth| (as LightGCN and RecBole papers report it); capped "
            f"Recall@{k} = hits / min(|truth|, {k}), the one in the tables below.",
        ),
    ]


def _baseline_notes(baselines: dict[str, Any], task: str) -> str:
    """Why the baselines have no number for `task`, each reason once with the baselines it applies to."""
    by_note: dict[str, list[str]] = {}
    for name, b in baselines.items():
        note = b.get("tasks", {}).get(task, {}).get("note")
        if note:
            by_note.setdefault(note, []).append(BASELINE_NAMES.get(name, name))
    return "; ".join(
        f"{' and '.join(names)}: {note}" for note, names in by_note.items()
    )


def _setup(s: dict[str, Any]) -> list[Block]:
    seeds = (
        ", ".join(f"{k} {v}" for k, v in s["seeds"].items() if v is not None)
        or UNDEFINED
    )
    blocks: list[Block] = [
        ("h2", "Setup"),
        (
            "kv",
            [
                ("graphrec version", s["graphrec_version"]),
                ("evaluated", s["evaluated_at"]),
                ("dataset", f"{s['dataset']} ({s['source'] or 'unknown source'})"),
                ("seeds", seeds),
                ("modalities", _fmt(s["modalities"])),
                ("protocol", s["protocol"]),
            ],
            1,
        ),
        ("h3", "Split"),
        (
            "kv",
            [(k, _setting(v)) for k, v in s["split"].items()]
            or [("split", "not split")],
            3,
        ),
    ]
    if s["model"]:
        blocks += [
            ("h3", "Model (graphrec train)"),
            ("kv", [(k, _setting(v)) for k, v in s["model"].items()], 3),
        ]
    return blocks


def _summary(ws: Workspace, ds: Dataset) -> list[Block]:
    st = dataset_stats(ds)
    keys = (
        "users",
        "items",
        "interactions",
        "cold_items",
        "cold_users",
        "items_without_interactions",
    )
    pairs = [(k.replace("_", " "), _fmt(st[k])) for k in keys] + [
        ("density", f"{st['density']:.4g}")
    ]
    blocks: list[Block] = [("h2", "Dataset"), ("kv", pairs, 3)]
    rows = [[part, str(n), PART_ROLES.get(part, "")] for part, n in st["parts"].items()]
    blocks.append(("table", ["part", "interactions", "used for"], rows))
    stats = ("min", "median", "mean", "max")
    rows = [
        [
            f"interactions per {what}",
            *[_setting(st[f"interactions_per_{what}"][s]) for s in stats],
        ]
        for what in ("user", "item")
    ]
    blocks.append(("table", ["", *stats], rows))
    if ws.stage_dir("graph").is_dir():
        info = read_graph_info(ws)
        rows = [[f"nodes: {t}", str(n)] for t, n in info.num_nodes.items()]
        rows += [[f"edges: {k}", str(n)] for k, n in info.num_edges.items()]
        blocks += [("h2", "Knowledge graph"), ("table", ["", "count"], rows)]
    enc = _encoders(ws)
    if enc:
        rows = [
            [m] + [_fmt(meta.get(k)) for k in IDENTITY_KEYS] for m, meta in enc.items()
        ]
        blocks += [("h2", "Encoders"), ("table", ["modality", *IDENTITY_KEYS], rows)]
    return blocks


def _blend(rk: dict[str, Any]) -> list[Block]:
    ww, wc = rk.get("weights_warm") or {}, rk.get("weights_cold") or {}
    rows = [
        [c, _setting(ww.get(c)), _setting(wc.get(c))] for c in dict.fromkeys([*ww, *wc])
    ]
    pairs = [
        ("fitted with", rk.get("fitted_with", "embeddings.safetensors")),
        ("cold offset", _setting(rk.get("cold_offset"))),
    ]
    pairs += [
        (f"validation NDCG ({name.removesuffix('_ndcg')})", _fmt(v))
        for name, v in (rk.get("validation_ndcg") or {}).items()
    ]
    blocks: list[Block] = [
        ("h3", "Ranker blend (fitted on validation)"),
        ("kv", pairs, 2),
        ("table", ["component", "weight on warm items", "weight on cold items"], rows),
    ]
    if any(UNDEFINED in row for row in rows):
        blocks.append(
            (
                "note",
                f"{UNDEFINED} the component does not score these items: EASE and popularity need "
                "interactions (warm items only), the content map (ridge) stands in for them on cold "
                "items.",
            )
        )
    return blocks


def _undefined_note(names: list[str]) -> list[Block]:
    why = [f"{n}: {WHY_UNDEFINED[n]}" for n in names if n in WHY_UNDEFINED]
    return (
        [("note", f"{UNDEFINED} not defined here. " + "; ".join(why) + ".")]
        if why
        else []
    )


def _metric_tables(metrics: dict[str, Any]) -> list[Block]:
    """The metrics section: definitions, the ranker's blend, each task's tables, the tasks not evaluated and
    how to read the beyond-accuracy numbers."""
    blocks: list[Block] = [
        ("h2", "Metrics (test parts, full ranking, known interactions excluded)")
    ]
    blocks.append(("kv", [(name, d) for name, d in metrics["definitions"].items()], 1))
    blocks += _blend(metrics["ranker"])
    for task in metrics["tasks"]:
        blocks += _task_tables(metrics, task)
    for task, why in metrics["skipped"].items():
        blocks.append(("p", f"{task}: not evaluated ({why})."))
    blocks.append(
        (
            "p",
            f"Activity buckets: {metrics['bucket_rule']}. Novelty: mean -log2 of smoothed training popularity. "
            "Diversity: mean pairwise cosine distance of content vectors within a list. ARP: mean "
            "training popularity of recommended items; head share: share in the top 20% most popular "
            "candidates.",
        )
    )
    return blocks


def _task_tables(metrics: dict[str, Any], task: str) -> list[Block]:
    """One task's tables: accuracy and beyond-accuracy at each K (with why a value is undefined), graphrec
    beside the baselines, and accuracy per activity bucket."""
    ks, res = metrics["ks"], metrics["tasks"][task]
    acc, beyond = res["accuracy"], res["beyond"]
    rows = [[name] + [_fmt(acc[f"{name}@{k}"]) for k in ks] for name in ACCURACY]
    rows += [[name] + [_fmt(beyond[f"@{k}"][name]) for k in ks] for name in BEYOND]
    blocks: list[Block] = [
        (
            "h3",
            f"{task}: {res['users']} users, {res['held_out']} held-out interactions, "
            f"{res['candidates']} candidates",
        ),
        ("table", ["metric", *[f"@{k}" for k in ks]], rows),
    ]
    blocks += _undefined_note([row[0] for row in rows if UNDEFINED in row])
    blocks += _versus_baselines(metrics, task)
    blocks.append(_bucket_table(res["buckets"], metrics["histogram_k"]))
    return blocks


def _bucket_table(buckets: dict[str, dict[str, Any]], k: int) -> Block:
    """Users, recall, recall_full and NDCG at `k` per user-activity bucket."""
    rows = [
        [
            bucket,
            str(values["users"]),
            _fmt(values[f"recall@{k}"]),
            _fmt(values[f"recall_full@{k}"]),
            _fmt(values[f"ndcg@{k}"]),
        ]
        for bucket, values in buckets.items()
    ]
    return (
        "table",
        ["activity bucket", "users", f"recall@{k}", f"recall_full@{k}", f"ndcg@{k}"],
        rows,
    )


def _versus_baselines(metrics: dict[str, Any], task: str) -> list[Block]:
    """graphrec and each baseline on one task, side by side."""
    names = [
        f"{name}@{k}"
        for k in metrics["ks"]
        for name in ("recall", "recall_full", "ndcg")
    ]
    rows = [["graphrec", *[_fmt(metrics["tasks"][task]["accuracy"][n]) for n in names]]]
    for name, b in metrics["baselines"].items():
        label = BASELINE_NAMES.get(name, name)
        acc = b.get("tasks", {}).get(task, {}).get("accuracy") or {}
        rows.append(
            [
                f"{label} (λ {b['lambda']:g})" if "lambda" in b else label,
                *[_fmt(acc.get(n)) for n in names],
            ]
        )
    why = _baseline_notes(metrics["baselines"], task)
    notes = [f"{why}."] if why else []
    blocks: list[Block] = [("table", ["vs baselines", *names], rows)]
    if notes:
        blocks.append(("note", f"{UNDEFINED} " + " ".join(notes)))
    return blocks


def _plots(plots_dir: Path, ws: Workspace, metrics: dict[str, Any]) -> list[Block]:
    """The plots' blocks, each figure saved as a PNG in `plots_dir`: metrics vs K, recall by activity and
    popularity when a task was scored, training curves when model/ holds a history."""
    blocks: list[Block] = [("h2", "Plots")]
    if metrics["tasks"]:
        blocks.append(
            _save(
                _metric_vs_k_plot(metrics),
                plots_dir / "metric_vs_k.png",
                "Recall (hits / |truth|) and NDCG at each K, per task",
            )
        )
        blocks.append(
            _save(
                _activity_plot(metrics),
                plots_dir / "recall_by_activity.png",
                f"Recall@{metrics['histogram_k']} per user-activity bucket, one bar per task",
            )
        )
        blocks.append(
            _save(
                _popularity_plot(metrics),
                plots_dir / "popularity.png",
                "Popularity of recommended items vs the candidate catalogue",
            )
        )
    training = _training_plot(ws)
    if training is not None:
        blocks.append(
            _save(
                training,
                plots_dir / "training.png",
                "Training curves (model/history.json)",
            )
        )
    return blocks


def _metric_vs_k_plot(metrics: dict[str, Any]) -> Figure:
    """Recall and NDCG against K, one line per task, in two panels sharing one legend."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    # Recall as hits / |truth| (recall_full): it cannot fall as K grows, where the capped one can
    for ax, (name, label) in zip(axes, (("recall_full", "recall"), ("ndcg", "ndcg"))):
        for task, res in metrics["tasks"].items():
            ax.plot(
                metrics["ks"],
                [res["accuracy"][f"{name}@{k}"] for k in metrics["ks"]],
                marker="o",
                label=task,
            )
        ax.set(xlabel="K", ylabel=label, title=f"{label} vs K", xticks=metrics["ks"])
    # one legend for both panels, beside them: inside, it would hide points
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
    )
    return fig


def _popularity_plot(metrics: dict[str, Any]) -> Figure:
    """Shares of candidate and of recommended items per training-popularity bin, for the overall task (else
    the first)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    tasks = metrics["tasks"]
    task = "overall" if "overall" in tasks else next(iter(tasks))
    histogram = tasks[task]["popularity_histogram"]
    edges = histogram["edges"]
    labels = [
        f"{a}" if b - a <= 1 else f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])
    ]
    labels.append(f"{edges[-1]}+")
    xs = np.arange(len(labels))
    ax.bar(xs - 0.2, histogram["catalogue"], 0.4, label="candidate items")
    ax.bar(
        xs + 0.2,
        histogram["recommended"],
        0.4,
        label=f"recommended (top {metrics['histogram_k']})",
    )
    ax.set(
        xticks=xs,
        xlabel="training interactions of the item",
        ylabel="share",
        title=f"Popularity of recommended items vs catalogue ({task})",
    )
    ax.set_xticklabels(labels, rotation=45, fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _training_plot(ws: Workspace) -> Figure | None:
    """Training losses and validation metrics per epoch from model/'s history; None without one to draw."""
    hist = read_history(ws)
    if hist is None:
        return None
    rows = [row.to_json() for row in hist]
    loss_keys = [
        k for k in ("loss", "bpr", "cold", "align") if any(k in r for r in rows)
    ]
    metric_keys = sorted(
        {k for r in rows for k in r if "@" in k and isinstance(r[k], (int, float))}
    )
    if not rows or not (loss_keys or metric_keys):
        return None
    return _training_curves(rows, loss_keys, metric_keys)


def _training_curves(
    rows: list[dict[str, Any]], loss_keys: list[str], metric_keys: list[str]
) -> Figure:
    """The history's losses (left) and validation metrics (right) against the epoch, one line per phase."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for phase in dict.fromkeys(r.get("phase", "train") for r in rows):
        phase_rows = [r for r in rows if r.get("phase", "train") == phase]
        for ax, keys in zip(axes, (loss_keys, metric_keys)):
            for key in keys:
                points = [(r["epoch"], r[key]) for r in phase_rows if key in r]
                if points:
                    ax.plot(*zip(*points), label=f"{phase} {key}")
    axes[0].set(xlabel="epoch", title="training loss")
    axes[1].set(xlabel="epoch", title="validation metrics")
    for ax in axes:
        if ax.has_data():  # below the panel: inside, the legend hides the curves
            ax.legend(
                fontsize=7,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.22),
                ncol=2,
                frameon=False,
            )
    return fig


def _activity_plot(metrics: dict[str, Any]) -> Figure:
    """Bars grouped by activity bucket (x), one bar per task within each group, at the same place in every
    group; a task without users in a bucket leaves its place empty rather than shifting the others."""
    import matplotlib.pyplot as plt

    k, tasks = metrics["histogram_k"], metrics["tasks"]
    buckets = [
        b
        for b in metrics["bucket_labels"]
        if any(b in res["buckets"] for res in tasks.values())
    ]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / len(tasks)
    for j, (task, res) in enumerate(tasks.items()):
        at = [i for i, b in enumerate(buckets) if b in res["buckets"]]
        xs = np.asarray(at, dtype=float) - 0.4 + (j + 0.5) * width
        ax.bar(
            xs,
            [res["buckets"][buckets[i]][f"recall@{k}"] for i in at],
            width,
            label=task,
        )
    ax.set_xticks(np.arange(len(buckets)))
    ax.set_xticklabels(buckets)
    ax.set(
        xlabel="interactions given to the system (train, valid, context)",
        ylabel=f"recall@{k}",
        title="Recall by user activity",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _save(fig: Figure, path: Path, caption: str) -> Block:
    fig.tight_layout()
    # "tight" keeps the legends placed outside the axes
    fig.savefig(path, dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return ("img", f"plots/{path.name}", caption)


def _examples(ws: Workspace, ds: Dataset, r: Ranker, n: int) -> list[Block]:
    if n <= 0:
        return []

    test_users = np.unique(
        ds.part("test", "cold_test", "cold_user_test")["user"].to_numpy()
    )[:n]
    if len(test_users) == 0:
        return []
    history = ds.matrix(GIVEN)
    top, scores = r.topk(test_users, 5, history)
    rows_, pos = np.nonzero(top >= 0)
    why = explanations(ws, ds, r, history, test_users[rows_], top[rows_, pos])
    label = ds.item_labels()
    rows = [
        [
            str(ds.user_ids[test_users[a]]),
            str(b + 1),
            f"{label[top[a, b]]} ({ds.item_ids[top[a, b]]})",
            "cold" if not r.warm[top[a, b]] else "warm",
            f"{scores[a, b]:.3f}",
            w,
        ]
        for a, b, w in zip(rows_, pos, why)
    ]
    return [
        ("h2", "Example recommendations (all items, known interactions excluded)"),
        ("table", ["user", "rank", "item", "kind", "score", "explanation"], rows),
    ]


def _markdown(blocks: list[Block]) -> str:
    # Titles, ids and explanations come from the user's data: as text, never as the raw HTML that Markdown
    # renderers pass through (report.html escapes them the same way).
    text = lambda x: html.escape(str(x), quote=False)  # noqa: E731
    cell = lambda x: text(x).replace("|", "\\|")  # noqa: E731
    lines: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h", "h2", "h3"):
            lines += ["#" * {"h": 1, "h2": 2, "h3": 3}[kind] + " " + text(b[1]), ""]
        elif kind == "p":
            lines += [text(b[1]), ""]
        elif kind == "note":
            lines += [f"*{text(b[1])}*", ""]
        elif kind == "warn":
            lines += [f"> **WARNING:** {text(b[1])}", ""]
        elif kind == "pre":
            lines += ["```", b[1], "```", ""]
        elif kind == "kv":
            lines += [f"- **{text(key)}**: {text(value)}" for key, value in b[1]] + [""]
        elif kind == "table":
            lines += [
                "| " + " | ".join(map(cell, b[1])) + " |",
                "|" + "---|" * len(b[1]),
            ]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in b[2]] + [""]
        elif kind == "img":
            lines += [f"![{text(b[2])}]({b[1]})", ""]
    return "\n".join(lines)


def _align(cell: Any) -> str:
    return "" if NUMBER.fullmatch(str(cell)) else ' class="t"'


# The report's stylesheet: numbers right-aligned (words left, class "t"), notes small and grey, warnings boxed red.
_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f3f3f3}.t{text-align:left}"
    ".warn{background:#fde2e1;border:2px solid #c00;padding:.8em;margin:1em 0;font-size:1.1em}"
    ".note{font-size:.9em;color:#555;margin-top:-.8em}"
    ".kv{list-style:none;padding:0;margin:.5em 0 1em}.kv li{padding:1px 0;break-inside:avoid}"
    ".kv b{display:inline-block;min-width:9em;font-weight:600}"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto}img{max-width:100%}"
)


def _html(blocks: list[Block], root: Path) -> str:
    """The report as one self-contained HTML page (plots inlined from `root`)."""
    body = "".join(_html_block(b, root) for b in blocks)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>graphrec report</title><style>{_STYLE}'
        f"</style></head><body>{body}</body></html>\n"
    )


def _html_block(b: Block, root: Path) -> str:
    """One block as HTML, its text escaped (titles, ids and explanations come from the user's data); an image
    inlined as base64 from its file under `root`."""
    escape = html.escape
    kind = b[0]
    if kind in ("h", "h2", "h3"):
        tag = {"h": "h1", "h2": "h2", "h3": "h3"}[kind]
        return f"<{tag}>{escape(b[1])}</{tag}>"
    if kind == "p":
        return f"<p>{escape(b[1])}</p>"
    if kind == "note":
        return f'<p class="note">{escape(b[1])}</p>'
    if kind == "warn":
        return f'<div class="warn"><b>WARNING:</b> {escape(b[1])}</div>'
    if kind == "pre":
        return f"<pre>{escape(b[1])}</pre>"
    if kind == "kv":
        items = "".join(
            f"<li><b>{escape(str(key))}</b> {escape(str(value))}</li>"
            for key, value in b[1]
        )
        return f'<ul class="kv" style="columns:{b[2]}">{items}</ul>'
    if kind == "table":
        return _html_table(b[1], b[2])
    if kind == "img":
        data = base64.b64encode((root / b[1]).read_bytes()).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{escape(b[2])}">'
            f"<figcaption>{escape(b[2])}</figcaption></figure>"
        )
    return ""


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    """A table whose numbers line up on the right and words read from the left; a column's header follows its
    first cell."""
    escape = html.escape
    first = rows[0] if rows else []
    head = "".join(
        f"<th{_align(first[j] if j < len(first) else '')}>{escape(str(c))}</th>"
        for j, c in enumerate(header)
    )
    body = "".join(
        "<tr>" + "".join(f"<td{_align(c)}>{escape(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
