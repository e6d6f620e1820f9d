"""`graphrec evaluate`: full-ranking metrics of the hybrid ranker on the held-out test parts, and the report.

Tasks (truth / candidates; every interaction the system was given is excluded from the lists):
    warm       test            / items with training interactions
    cold_item  cold_test       / the cold items (items of cold_valid and cold_test)
    cold_user  cold_user_test  / every item
    overall    all three       / every item
Only test parts are scored; the ranker was fitted on validation parts (nothing is selected on test).

Baselines, scored on the same tasks (same users, candidates, exclusions and metric code), answer "better than
what?": popularity (train+valid interactions per item) and EASE (Steck 2019, item-item, fitted on train+valid,
its lambda selected on valid). Neither can rank cold items (they have no interactions): such a task gets no
number, and a note saying why.

Writes eval/metrics.json (strict JSON: undefined values are null), eval/report.md, eval/report.html (plots
inlined, also in eval/plots/*.png).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from graphrec.core.errors import InputError
from graphrec.core.feature_store import load_features, unit_rows
from graphrec.core.io import write_json
from graphrec.core.settings import EASE_DIM, EvaluateSettings
from graphrec.core.workspace import Workspace, command_line, writes
from graphrec.data.dataset import GIVEN, TRAINED, Dataset
from graphrec.model.artifacts import read_ranker_info
from graphrec.model.metrics import (
    DEFINITIONS,
    activity_buckets,
    bootstrap_intervals,
    coverage,
    hit_matrix,
    intra_list_diversity,
    item_popularity,
    mean_metrics,
    novelty,
    per_user_accuracy,
    popularity_bias,
)
from graphrec.stages.rank import (
    EASE_LAMBDAS,
    Ranker,
    select_ease,
    serving_ranker,
    topk_stable,
)
from graphrec.stages.report import write_report

log = logging.getLogger(__name__)

TASKS = {
    "warm": (("test",), "warm"),
    "cold_item": (("cold_test",), "cold"),
    "cold_user": (("cold_user_test",), "all"),
    "overall": (("test", "cold_test", "cold_user_test"), "all"),
}
PER_USER = (
    "per_user"  # a task's per-user metric values, in memory only (not in metrics.json)
)
HEADLINE_K = 20  # the headline's cut-off when it is among the Ks: NDCG@20 / Recall@20 are what papers report
PROTOCOL = (
    "full ranking: every candidate item of a task is scored; every interaction the system was given "
    "(train, valid, cold_valid, cold_user_context) is excluded from the lists; only the test parts are "
    "scored; graphrec's blend and the EASE baseline's lambda are selected on validation parts"
)
# The order the stages make a workspace in; `update` grows what the stages before it made.
PIPELINE = ("dataset", "features", "graph", "model", "update")


@dataclass
class _Task:
    """One task's lists to score: its users, its candidates and the held-out (row in `users`, item) pairs."""

    users: np.ndarray
    cand: np.ndarray
    truth_rows: np.ndarray
    truth_items: np.ndarray

    def accuracy(
        self, topk: np.ndarray, n_items: int, ks: Sequence[int]
    ) -> dict[str, np.ndarray]:
        hits = hit_matrix(topk, self.truth_rows, self.truth_items, n_items)
        return per_user_accuracy(
            hits, np.bincount(self.truth_rows, minlength=len(self.users)), ks
        )


def _task(truth: pd.DataFrame, cand: np.ndarray, n_users: int) -> _Task:
    users = np.unique(truth["user"].to_numpy())
    row = np.full(n_users, -1, np.int64)
    row[users] = np.arange(len(users))
    return _Task(users, cand, row[truth["user"].to_numpy()], truth["item"].to_numpy())


def _tasks(ds: Dataset, warm: np.ndarray) -> tuple[dict[str, _Task], dict[str, str]]:
    """The tasks with held-out interactions and candidates, and why the others are skipped. One definition for
    graphrec and the baselines, so both are scored on the same lists' inputs."""
    cand_sets = {
        "warm": np.flatnonzero(warm),
        "cold": ds.cold_items(),
        "all": np.arange(ds.n_items),
    }
    tasks, skipped = {}, {}
    for task, (parts, which) in TASKS.items():
        truth = ds.part(*parts)
        cand = cand_sets[which]
        if len(truth) == 0 or len(cand) == 0:
            skipped[task] = (
                f"no interactions in {'/'.join(parts)}"
                if len(truth) == 0
                else "no candidates"
            )
            continue
        tasks[task] = _task(truth, cand, ds.n_users)
    return tasks, skipped


def _content(ws: Workspace) -> tuple[np.ndarray, np.ndarray] | None:
    """Content vectors for intra-list diversity: the first modality in name order with its mask."""
    if not ws.stage_dir("features").is_dir():
        return None

    feats = load_features(ws)
    if not feats:
        return None
    f = feats[sorted(feats)[0]]
    return f.values, f.mask


def _check_ks(ks: Sequence[int]) -> list[int]:
    out = sorted({int(k) for k in ks})
    if not out or out[0] < 1:
        raise InputError(f"K values must be positive integers, got {out}")
    return out


def evaluate(
    workspace: Workspace | str | Path,
    ks: Sequence[int] = (10, 20, 50),
    ranker: Ranker | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of every task with held-out interactions: accuracy at each K, beyond-accuracy, activity buckets."""
    ks = _check_ks(ks)
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    _check_evaluable(ws, ds, ks)
    ranker = ranker if ranker is not None else serving_ranker(ws, ds)
    history = ds.matrix(GIVEN)
    scoring = _scoring(ws, ds, ks, history, ranker.warm)
    tasks, skipped = _tasks(ds, ranker.warm)
    out: dict[str, Any] = {
        "ks": ks,
        "histogram_k": scoring.plot_k,
        "tasks": _scored_tasks(tasks, ranker, history, scoring, progress),
        "skipped": skipped,
    }
    out["bucket_rule"] = (
        "users bucketed by the number of interactions the system was given (train, valid, context)"
    )
    out["bucket_labels"] = scoring.bucket_labels
    out["ranker"] = {
        k: v
        for k, v in read_ranker_info(ws).items()
        if k
        in (
            "weights_warm",
            "weights_cold",
            "cold_offset",
            "validation_ndcg",
            "fitted_with",
        )
    }
    return out


def _check_evaluable(ws: Workspace, ds: Dataset, ks: list[int]) -> None:
    """An InputError unless the dataset holds something out and the largest K fits in the catalogue."""
    if not ds.is_split:
        raise InputError(
            "serve mode (the dataset is not split): nothing is held out to score; evaluate a workspace "
            "split by `graphrec data split` (or imported pre-split)",
            file=ws.stage_dir("dataset"),
        )
    # a cut-off past the catalogue measures nothing more than the whole list
    if ks[-1] > ds.n_items:
        raise InputError(
            f"--ks {ks[-1]} is more than the {ds.n_items} items of the catalogue"
        )


@dataclass
class _Scoring:
    """What every task's lists are measured with: the Ks, the histogram's K, the ranker's warm items, training
    popularity, content vectors for diversity, and each user's activity bucket."""

    ks: list[int]
    plot_k: int
    n_items: int
    warm: np.ndarray
    popularity: np.ndarray
    n_train_users: int
    content: tuple[np.ndarray, np.ndarray] | None
    bucket_of: np.ndarray
    bucket_labels: list[str]


def _scoring(
    ws: Workspace,
    ds: Dataset,
    ks: list[int],
    history: sp.csr_matrix,
    warm: np.ndarray,
) -> _Scoring:
    """The evaluation's shared measures; users are bucketed by the interactions the system was given."""
    given = np.asarray(history.sum(axis=1)).ravel().astype(np.int64)
    popularity = item_popularity(ds.part("train")["item"].to_numpy(), ds.n_items)
    n_train_users = int(ds.part("train")["user"].nunique())
    content = _content(ws)
    bucket_of, labels = activity_buckets(given)
    plot_k = ks[1] if len(ks) > 1 else ks[0]
    return _Scoring(
        ks,
        plot_k,
        ds.n_items,
        warm,
        popularity,
        n_train_users,
        content,
        bucket_of,
        labels,
    )


def _scored_tasks(
    tasks: dict[str, _Task],
    ranker: Ranker,
    history: sp.csr_matrix,
    scoring: _Scoring,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Each task's numbers, its lists ranked by `ranker` (given items excluded) to the largest K."""
    scored = {}
    for task, lists in tasks.items():
        log.info(
            "evaluate: %s, %d test users over %d candidate items",
            task,
            len(lists.users),
            len(lists.cand),
        )
        topk, _ = ranker.topk(
            lists.users, max(scoring.ks), history, lists.cand, progress=progress
        )
        scored[task] = _task_metrics(lists, topk, scoring)
    return scored


def _task_metrics(lists: _Task, topk: np.ndarray, scoring: _Scoring) -> dict[str, Any]:
    """One task's numbers for its ranked lists `topk`: accuracy, beyond-accuracy and activity buckets, the
    popularity histogram and, over warm and cold candidates alike, the cold items' share."""
    per_user = lists.accuracy(topk, scoring.n_items, scoring.ks)
    metrics: dict[str, Any] = {
        "users": int(len(lists.users)),
        "held_out": int(len(lists.truth_rows)),
        "candidates": int(len(lists.cand)),
        "accuracy": mean_metrics(per_user),
        "beyond": _beyond_accuracy(topk, lists.cand, scoring),
        "buckets": _bucket_metrics(per_user, scoring.bucket_of[lists.users], scoring),
        PER_USER: per_user,
    }
    plot_k, warm = scoring.plot_k, scoring.warm
    metrics["popularity_histogram"] = _popularity_histogram(
        topk[:, :plot_k], scoring.popularity, lists.cand
    )
    # a task over warm and cold items alike
    if (~warm[lists.cand]).any() and warm[lists.cand].any():
        listed = topk[:, :plot_k][topk[:, :plot_k] >= 0]
        metrics["cold_share"] = {
            "lists": float((~warm[listed]).mean()) if len(listed) else None,
            "truth": float((~warm[lists.truth_items]).mean()),
            "k": plot_k,
        }
    return metrics


def _beyond_accuracy(
    topk: np.ndarray, cand: np.ndarray, scoring: _Scoring
) -> dict[str, dict[str, Any]]:
    """Coverage, novelty, diversity (None without content) and popularity bias of the lists at each K."""
    beyond = {}
    for k in scoring.ks:
        top = topk[:, :k]
        beyond[f"@{k}"] = {
            "coverage": coverage(top, len(cand)),
            "novelty": novelty(top, scoring.popularity, scoring.n_train_users),
            "diversity": intra_list_diversity(top, *scoring.content)
            if scoring.content is not None
            else None,
            **popularity_bias(top, scoring.popularity, cand),
        }
    return beyond


def _bucket_metrics(
    per_user: dict[str, np.ndarray], bucket: np.ndarray, scoring: _Scoring
) -> dict[str, dict[str, Any]]:
    """The mean accuracy of each activity bucket with users in the task (`bucket`: each user's bucket)."""
    buckets = {}
    for i, label in enumerate(scoring.bucket_labels):
        sel = bucket == i
        if sel.any():
            buckets[label] = {
                "users": int(sel.sum()),
                **mean_metrics(per_user, sel),
            }
    return buckets


def _popularity_histogram(
    topk: np.ndarray, pop: np.ndarray, cand: np.ndarray
) -> dict[str, list]:
    """Shares of recommended items and of candidate items per training-popularity bin (0, 1, 2-3, 4-7, ...)."""
    edges = [0, 1] + [
        2**i for i in range(1, max(2, int(np.ceil(np.log2(pop.max() + 1))) + 1))
    ]
    rec = pop[topk[topk >= 0]]
    share = lambda x: (
        (np.histogram(x, bins=edges + [np.inf])[0] / max(len(x), 1)).round(6).tolist()
    )
    return {"edges": edges, "recommended": share(rec), "catalogue": share(pop[cand])}


# -- baselines ---------------------------------------------------------------------------------------
def _baseline_lists(
    score: Callable[[np.ndarray], np.ndarray],
    t: _Task,
    history: sp.csr_matrix,
    k: int,
    batch: int = 1024,
) -> tuple[np.ndarray, bool]:
    """Top-k candidates per user of the task by `score(users)` (float [len(users), n_items]). Given items are
    excluded and ties go to the lower item index, as in the ranker's lists. Also whether the scores told any two
    allowed candidates apart: when they never did, the baseline cannot rank this task and its "lists" would only
    be index order."""
    kk = min(k, len(t.cand))
    top = np.full((len(t.users), k), -1, np.int64)
    lo, hi = np.inf, -np.inf
    for s in range(0, len(t.users), batch):
        u = t.users[s : s + batch]
        sc = np.asarray(score(u), np.float64)[:, t.cand]
        known = history[u][:, t.cand].toarray() > 0
        allowed = sc[~known]
        if allowed.size:
            lo, hi = min(lo, float(allowed.min())), max(hi, float(allowed.max()))
        sc[known] = -np.inf
        val, idx = topk_stable(torch.from_numpy(sc), kk)
        top[s : s + len(u), :kk] = np.where(
            np.isfinite(val.numpy()), t.cand[idx.numpy()], -1
        )
    return top, hi > lo


def _baseline_tasks(
    score: Callable[[np.ndarray], np.ndarray],
    tasks: dict[str, _Task],
    history: sp.csr_matrix,
    n_items: int,
    ks: Sequence[int],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, t in tasks.items():
        top, ranks = _baseline_lists(score, t, history, max(ks))
        if ranks:
            per_user = t.accuracy(top, n_items, ks)
            out[task] = {"accuracy": mean_metrics(per_user), PER_USER: per_user}
        else:
            why = (
                "cold items have no interactions"
                if task == "cold_item"
                else "its users have no interactions"
            )
            out[task] = {
                "accuracy": None,
                "note": f"{why}, so every candidate gets the same score",
            }
    return out


def evaluate_baselines(
    ds: Dataset,
    warm: np.ndarray,
    ks: Sequence[int] = (10, 20, 50),
    select_k: int = HEADLINE_K,
    content: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Popularity and EASE (and, given item `content` vectors, content similarity) scored on `evaluate`'s tasks:
    the same users, candidates (`warm`: the ranker's warm items), given items excluded, the same metric code.
    {name: {"description", "tasks": {task: {"accuracy": {...} | None, "note"?}}}}. EASE is the ranker's own
    low-rank EASE (`rank.select_ease`: exact EASE when rank(X) <= its dimensions, linear in the interactions
    otherwise), its lambda selected on valid. Content ((values, mask) of a modality): cosine of the item's content
    with the mean of the user's given items' (the one baseline that ranks items without interactions)."""
    ks = _check_ks(ks)
    tasks, _ = _tasks(ds, warm)
    history, trained = ds.matrix(GIVEN), ds.matrix(TRAINED)
    pop = np.asarray(trained.sum(axis=0)).ravel()
    out: dict[str, Any] = {
        "popularity": {
            "description": "items ranked by their number of train+valid interactions, the same list for every user",
            "tasks": _baseline_tasks(
                lambda u: np.broadcast_to(pop, (len(u), len(pop))),
                tasks,
                history,
                ds.n_items,
                ks,
            ),
        }
    }
    out["ease"] = _ease_baseline(ds, warm, trained, select_k, tasks, history, ks)
    if content is not None:
        unit = unit_rows(*content)[0]
        out["content"] = {
            "description": "content similarity: cosine of an item's content vector with the mean of "
            "the user's given items' (features/, first modality)",
            "tasks": _baseline_tasks(
                lambda u: (history[u] @ unit) @ unit.T, tasks, history, ds.n_items, ks
            ),
        }
    return out


def _ease_baseline(
    ds: Dataset,
    warm: np.ndarray,
    trained: sp.csr_matrix,
    select_k: int,
    tasks: dict[str, _Task],
    history: sp.csr_matrix,
    ks: Sequence[int],
) -> dict[str, Any]:
    """The EASE baseline's entry: its lambda selected on valid with a fit on train (what training saw
    excluded), then refitted on train+valid (`trained`) and scored on the tasks, as the ranker does."""
    warm_train = ds.warm_items(("train",))
    # else: the grid's middle
    selectable = len(ds.part("valid")) > 0 and warm_train.any()
    selected = select_ease(
        ds.matrix(("train",)),
        warm_train,
        ds,
        select_k,
        EASE_DIM,
        EASE_LAMBDAS if selectable else (EASE_LAMBDAS[len(EASE_LAMBDAS) // 2],),
    )
    lam, trials = selected.ease_lambda, selected.trials
    final = select_ease(trained, warm, ds, select_k, EASE_DIM, (lam,))
    user_basis, item = final.ease_user, final.ease_item
    return {
        "description": "EASE (Steck 2019): item-item weights fitted on train+valid (low-rank, exact up to "
        f"rank {EASE_DIM}), a user's scores are history @ B",
        "lambda": lam,
        "lambda_validation_ndcg": {
            f"{float(v):g}": n
            for v, n in trials.get("ease_validation_ndcg", {}).items()
        },
        "tasks": _baseline_tasks(
            lambda u: (history[u] @ user_basis) @ item.T, tasks, history, ds.n_items, ks
        ),
    }


# recall_full: the field's Recall (hits / |truth|)
HEADLINE_METRICS = (
    "ndcg",
    "recall_full",
    "recall",
)


def headline(
    metrics: dict[str, Any], baselines: dict[str, Any], k: int
) -> list[dict[str, Any]]:
    """One row per evaluated task: graphrec's NDCG@k and Recall@k (the field's and the capped one), the best
    baseline's (by NDCG@k, among those that can rank the task), graphrec's ratio to it (None where no baseline
    ranks the task or it scored 0) and 95% bootstrap intervals over the task's users of each (`intervals`:
    metric -> {ours, theirs, ratio}, paired resamples; needs the tasks' per-user values, `evaluate` keeps them)."""
    rows = []
    for task, task_metrics in metrics["tasks"].items():
        ours = {m: task_metrics["accuracy"][f"{m}@{k}"] for m in HEADLINE_METRICS}
        best = _best_baseline(baselines, task, k)
        theirs = (
            {m: best[1]["accuracy"][f"{m}@{k}"] for m in HEADLINE_METRICS}
            if best
            else None
        )
        intervals = {
            m: bootstrap_intervals(
                task_metrics[PER_USER][f"{m}@{k}"],
                best[1][PER_USER][f"{m}@{k}"] if best else None,
            )
            for m in HEADLINE_METRICS
        }
        rows.append(
            {
                "task": task,
                "users": task_metrics["users"],
                "graphrec": ours,
                "best_baseline": best[0] if best else None,
                "baseline": theirs,
                "ratio": {
                    m: ours[m] / theirs[m] if theirs and theirs[m] > 0 else None
                    for m in ours
                },
                "intervals": intervals,
            }
        )
    return rows


def _best_baseline(
    baselines: dict[str, Any], task: str, k: int
) -> tuple[str, dict[str, Any]] | None:
    """(name, task entry) of the baseline with the highest NDCG@k on `task` among those that rank it."""
    scored = [
        (name, b["tasks"][task])
        for name, b in baselines.items()
        if b.get("tasks", {}).get(task, {}).get("accuracy") is not None
    ]
    return max(scored, key=lambda nb: nb[1]["accuracy"][f"ndcg@{k}"], default=None)


def without_per_user(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics with the tasks' per-user values (kept in memory for the intervals) left out: metrics.json."""
    if isinstance(metrics, dict):
        return {k: without_per_user(v) for k, v in metrics.items() if k != PER_USER}
    return metrics


# -- setup and provenance --------------------------------------------------------------------------
def reproduce_commands(ws: Workspace) -> list[str]:
    """The commands that made the workspace, in pipeline order, each once: the one that made the tables
    (import, movielens or synth; a later `data split` keeps it as `made_by`), each stage's recorded command,
    then this evaluation's. A quickstart made every stage with one command, so it is listed once."""
    stages = ws.config().stages
    cmds = []
    for stage in PIPELINE:
        rec = stages.get(stage)
        if rec is None:
            continue
        made_by = rec.inputs.get("made_by") if stage == "dataset" else None
        cmds += [made_by, rec.command] if made_by else [rec.command]
    return list(dict.fromkeys([*cmds, command_line()]))


def setup(ws: Workspace, ds: Dataset) -> dict[str, Any]:
    """What the numbers depend on: split settings, seeds, graphrec version, date, model settings, commands."""
    stages = ws.config().stages
    settings = {
        s: stages[s].settings if s in stages else {}
        for s in ("dataset", "features", "model")
    }
    return {
        # The installed distribution's version is graphrec.__version__ (tests check they agree); a stage
        # importing the package object itself would point up the layers (docs/architecture.md).
        "graphrec_version": importlib.metadata.version("graphrec"),
        "evaluated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "dataset": ds.schema.name,
        "source": settings["dataset"].get("source"),
        "split": dict(ds.schema.split),
        "seeds": {
            "data": settings["dataset"].get("seed"),
            "split": ds.schema.split.get("seed"),
            "encode": settings["features"].get("seed"),
            "train": settings["model"].get("seed"),
        },
        "modalities": settings["features"].get("modalities"),
        "model": settings["model"],
        "protocol": PROTOCOL,
        "commands": reproduce_commands(ws),
    }


@writes
def run_evaluate(
    workspace: Workspace | str | Path,
    ks: Sequence[int] = EvaluateSettings.ks,
    examples: int = EvaluateSettings.examples,
    progress: bool = True,
) -> Path:
    """Evaluate graphrec and the baselines, then write eval/ atomically and record it.

    The `graphrec evaluate` stage: full-ranking metrics of the served ranker on the held-out test
    parts (warm, cold-item, cold-user, overall: see the module doc), and of the popularity and EASE
    baselines on the same tasks. eval/ holds metrics.json, report.md, report.html and plots/; it is
    written under the workspace lock.

    Args:
        workspace: The workspace (or its folder): a split dataset/ and a trained model/.
        ks: The cut-offs K (positive, the largest at most the number of items). The headline is at
            K=20 when 20 is among them, else at the second smallest K.
        examples: How many users the report shows with example recommendations.
        progress: Show progress bars.

    Returns:
        The eval/ folder.

    Raises:
        InputError: On bad input: a K that is not positive or exceeds the catalogue, a dataset that
            is not split (serve mode: nothing is held out), or a model/ without a fitted ranker.

    Example::

        import json

        from graphrec.stages.evaluate import run_evaluate

        eval_dir = run_evaluate("ws", ks=(10, 20, 50), examples=5)
        metrics = json.loads((eval_dir / "metrics.json").read_text())
    """
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    r = serving_ranker(ws, ds)
    metrics = evaluate(ws, ks, r, progress)
    k = HEADLINE_K if HEADLINE_K in metrics["ks"] else metrics["histogram_k"]
    log.info(
        "evaluate: the baselines on the same split (popularity, low-rank EASE selected on validation)"
    )
    metrics["baselines"] = evaluate_baselines(
        ds, r.warm, metrics["ks"], k, _content(ws)
    )
    metrics["headline_k"] = k
    metrics["headline"] = headline(metrics, metrics["baselines"], k)
    metrics["definitions"] = DEFINITIONS
    metrics["setup"] = setup(ws, ds)

    log.info(
        "evaluate: writing the report (metrics.json, report.md, report.html, plots)"
    )
    with ws.new_stage("eval") as tmp:
        metrics = without_per_user(metrics)
        write_json(tmp / "metrics.json", metrics)
        write_report(tmp, ws, ds, r, metrics, examples)
    ws.record(
        "eval",
        {"ks": list(metrics["ks"]), "examples": examples},
        inputs={"tasks": sorted(metrics["tasks"]), "ranker": metrics["ranker"]},
    )
    return ws.stage_dir("eval")
