"""One command for the peer table: every system, every task, every seed, under one protocol.

    python -m benchmarks.run --dataset ml-latest-small --tasks warm,cold-item --seeds 1,2,3
    python -m benchmarks.run --dataset ml-100k --tasks warm,cold-item,cold-user --quick

Protocol, the same for every system (graphrec included):
  select   fit on train, score each grid point (and each checkpoint of iterative systems) on the task's
           validation part (valid / cold_valid / cold_user_valid) by NDCG@20; single-setting systems skip it
  refit    fit the chosen setting on train+valid (cold items stay cold: cold_valid is never trained on)
  rank     full ranking of the task's candidates (warm: items in train; cold-item: the cold items; cold-user:
           items in train) for every eligible user, every interaction the system was given excluded
  score    Recall@K and NDCG@K (graphrec.model.metrics, which agrees with the contract's protocol.py) on the test
           part (test / cold_test / cold_user_test), averaged over users with held-out items
Grids are sized for a 2-core machine (each peer's `grid` lists them: EASE 4 lambdas, EDLAE 2 dropout rates,
RP3beta 2x2, ItemKNN 3 k, ALS 2x2, content peers 3-4 points, LightFM/LightGCN select only their epoch count);
a default run (no --systems) puts LightGCN and graphrec's ablations on the first seed only (FIRST_SEED_ONLY)
and skips graphrec-no-images when no CLIP checkpoint is set (it would equal graphrec).
Each (system, seed) runs in its own process so its peak memory (ru_maxrss above the loaded-data baseline) is
its own; `--jobs` of them run side by side (default 2, one thread each: on a 2-core box that keeps both cores
busy through the single-threaded stretches), the longest first, so fit and top-K seconds include that sharing.
Results go to benchmarks/results/<dataset>.json and BENCHMARKS.md (between this dataset's markers).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.peers.base import (
    COLD_ITEM,
    COLD_USER,
    MIXED,
    TASKS,
    WARM,
    FitInput,
    Scorer,
    System,
)
from benchmarks.split import DATASETS
from graphrec.core.io import read_json, write_json
from graphrec.model.metrics import hit_matrix, mean_metrics, per_user_accuracy

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
K = 20
# task -> (validation part, test part, candidate parts)
TASK_PARTS = {
    WARM: ("valid", "test", ("train",)),
    COLD_ITEM: ("cold_valid", "cold_test", ("cold_valid", "cold_test")),
    COLD_USER: ("cold_user_valid", "cold_user_test", ("train",)),
    MIXED: ("mixed_valid", "mixed_test", ("train", "cold_valid", "cold_test")),
}
# everything a system is handed; excluded from final lists
GIVEN_FINAL = (
    "train",
    "valid",
    "cold_valid",
)
DEFAULT_SYSTEMS = (
    "popularity",
    "attr-popularity",
    "itemknn",
    "rp3beta",
    "ease",
    "edlae",
    "als",
    "bpr",
    "lightfm",
    "lightfm-hybrid",
    "lightgcn",
    "content-knn",
    "content-pop",
    "ridge-als",
    "graphrec",
    "graphrec-no-images",
    "graphrec-no-text",
    "graphrec-no-kg",
    "graphrec-no-blend",
)
# In the default run (no --systems) these go on the first seed only, so it fits about an hour on 2 cores:
# the ablations are read against graphrec on that seed, LightGCN is the slowest peer and far from the top.
FIRST_SEED_ONLY = (
    "lightgcn",
    "graphrec-no-images",
    "graphrec-no-text",
    "graphrec-no-kg",
    "graphrec-no-blend",
)
# Rough relative cost per run on ml-latest-small, only to start the long runs first.
COST = {
    "graphrec": 10.0,
    "graphrec-no-images": 10.0,
    "graphrec-no-text": 9.0,
    "graphrec-no-kg": 9.0,
    "graphrec-no-blend": 10.0,
    "lightgcn": 5.0,
    "edlae": 4.0,
    "lightfm-hybrid": 4.0,
    "ease": 3.0,
    "itemknn": 2.0,
    "rp3beta": 2.0,
}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ------------------------------------------------------------------------------------------- ranking
def rank(
    scorer: Scorer,
    users: np.ndarray,
    candidates: np.ndarray,
    exclude: sp.csr_matrix,
    k: int = K,
    batch: int = 1024,
) -> np.ndarray:
    """Top-k candidate items per user, excluded pairs removed: int64 [len(users), k], -1 = no candidate left."""
    out = np.full((len(users), k), -1, np.int64)
    blocked = ~candidates
    for s in range(0, len(users), batch):
        u = users[s : s + batch]
        # a copy: scorers may return read-only broadcasts
        sc = np.array(scorer(u), dtype=np.float32)
        sc[:, blocked] = -np.inf
        ex = exclude[u].tocoo()
        sc[ex.row, ex.col] = -np.inf
        kk = min(k, sc.shape[1])
        idx = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
        val = np.take_along_axis(sc, idx, axis=1)
        order = np.argsort(-val, axis=1, kind="stable")
        idx, val = (
            np.take_along_axis(idx, order, axis=1),
            np.take_along_axis(val, order, axis=1),
        )
        out[s : s + len(u), :kk] = np.where(np.isfinite(val), idx, -1)
    return out


def score(
    topk: np.ndarray,
    users: np.ndarray,
    truth: tuple[np.ndarray, np.ndarray],
    n_users: int,
    n_items: int,
) -> dict[str, float]:
    row_of = np.full(n_users, -1, np.int64)
    row_of[users] = np.arange(len(users))
    t_rows, t_items = row_of[truth[0]], truth[1]
    if (t_rows < 0).any():
        raise ValueError("a user with held-out items got no list")
    hits = hit_matrix(topk, t_rows, t_items, n_items)
    n_truth = np.bincount(t_rows, minlength=len(users))
    return mean_metrics(per_user_accuracy(hits, n_truth, (10, K)))


# ------------------------------------------------------------------------------------------- worker
def _fit_input(
    data, parts: tuple[str, ...], task: str, final: bool, threads: int
) -> FitInput:
    return FitInput(
        X=data.matrix(*parts),
        item_attr=data.item_attr,
        user_attr=data.user_attr,
        text=data.text,
        seed=data.seed,
        threads=threads,
        workspace=data.workspace,
        task=task,
        final=final,
        triples=data.triples,
    )


def run_system(
    system: System, data, tasks: list[str], quick: bool, threads: int
) -> list[dict[str, Any]]:
    """Select, refit, rank and score one system on one prepared seed, for each task it supports."""
    rows = []
    for task in [t for t in tasks if t in system.tasks]:
        valid_part, test_part, cand_parts = TASK_PARTS[task]
        if len(data.parts[test_part][0]) == 0:
            continue  # e.g. cold-user on a dataset without user attributes
        candidates = data.item_mask(*cand_parts)
        eligible = (
            data.user_mask(valid_part, test_part)
            if task == COLD_USER
            else data.user_mask("train")
        )
        grid = system.grid(task, quick)
        best, best_ndcg, checked = grid[0], float("nan"), []
        if len(grid) > 1 or getattr(system, "checkpointed", False):
            fit_in = _fit_input(data, ("train",), task, False, threads)
            truth = data.parts[valid_part]
            users = np.unique(truth[0])
            exclude = fit_in.X
            for params in grid:
                for used, scorer in system.fit(fit_in, params, checkpoints=True):
                    m = score(
                        rank(scorer, users, candidates, exclude),
                        users,
                        truth,
                        data.n_users,
                        data.n_items,
                    )
                    checked.append({"params": used, "ndcg@20": m["ndcg@20"]})
                    if not best_ndcg >= m["ndcg@20"]:
                        best, best_ndcg = used, m["ndcg@20"]
        fit_in = _fit_input(data, ("train", "valid"), task, True, threads)
        start = time.perf_counter()
        *_, (used, scorer) = system.fit(fit_in, best, checkpoints=False)
        fit_s = getattr(system, "pipeline_seconds", None) or time.perf_counter() - start
        users = np.flatnonzero(eligible)
        start = time.perf_counter()
        topk = rank(scorer, users, candidates, data.matrix(*GIVEN_FINAL))
        topk_s = time.perf_counter() - start
        m = score(topk, users, data.parts[test_part], data.n_users, data.n_items)
        row = {
            "system": system.name,
            "family": system.family,
            "task": task,
            "seed": data.seed,
            "params": used,
            "valid_ndcg@20": best_ndcg,
            "grid": checked,
            "fit_s": fit_s,
            "topk_s": topk_s,
            "ranked_users": int(len(users)),
            "scored_users": int(len(np.unique(data.parts[test_part][0]))),
            **{k: m[k] for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")},
        }
        if getattr(system, "epoch_seconds", None):
            row["epoch_s"] = float(np.mean(system.epoch_seconds))
        rows.append(row)
    return rows


def worker(args: argparse.Namespace) -> None:
    import psutil

    from benchmarks.peers import SYSTEMS
    from benchmarks.split import prepare

    data = prepare(args.dataset, args.seed)
    base_mb = psutil.Process().memory_info().rss / 2**20
    rows = run_system(
        SYSTEMS[args.worker](), data, args.tasks.split(","), args.quick, args.threads
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for r in rows:
        r["peak_mb"] = max(peak_mb - base_mb, 0.0)
    write_json(args.json, rows)


# ------------------------------------------------------------------------------------------- driver
def environment() -> dict[str, Any]:
    import importlib.metadata as md

    import psutil

    versions = {}
    for pkg in (
        "numpy",
        "scipy",
        "torch",
        "torch-geometric",
        "implicit",
        "lightfm",
        "sentence-transformers",
        "scikit-learn",
        "pandas",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
    }


def drive(args: argparse.Namespace) -> Path:
    from rich.console import Console

    from benchmarks.report import update_benchmarks_md
    from benchmarks.split import prepare

    console = Console(stderr=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    systems = args.systems.split(",") if args.systems else list(DEFAULT_SYSTEMS)
    out = args.out or RESULTS / f"{args.dataset}{'-quick' if args.quick else ''}.json"
    rows, failures = [], []
    # one per driver: several may run side by side
    tmp = RESULTS / f".work-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter()
    # the shared, cached preparation (split, MiniLM text) before any worker reads it
    for seed in seeds:
        with console.status(f"preparing {args.dataset} seed {seed}"):
            prepare(args.dataset, seed)
    no_clip = not os.environ.get("GRAPHREC_CLIP_CHECKPOINT")
    runs = [
        (seed, name)
        for seed in seeds
        for name in systems
        if args.systems
        or not (
            (name in FIRST_SEED_ONLY and seed != seeds[0])
            # without CLIP weights graphrec uses no images: this would repeat graphrec
            or (name == "graphrec-no-images" and no_clip)
        )
    ]
    # longest first: the side-by-side jobs finish together
    runs.sort(key=lambda r: -COST.get(r[1], 1.0))
    env = {**os.environ, **{v: str(args.threads) for v in THREAD_VARS}}

    def one(seed: int, name: str) -> None:
        start = time.perf_counter()
        target = tmp / f"{name}-{seed}.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--worker",
            name,
            "--dataset",
            args.dataset,
            "--seed",
            str(seed),
            "--tasks",
            args.tasks,
            "--threads",
            str(args.threads),
            "--json",
            str(target),
        ]
        proc = subprocess.run(
            cmd + (["--quick"] if args.quick else []),
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            failures.append({"system": name, "seed": seed, "error": reason})
            console.print(f"[red]{name} seed {seed}: {reason}")
            return
        got = read_json(target)
        target.unlink()
        rows.extend(got)
        summary = ", ".join(
            f"{r['task']} R@20 {r['recall@20']:.4f} N@20 {r['ndcg@20']:.4f}"
            for r in got
        )
        console.print(
            f"seed {seed} {name:20s} {time.perf_counter() - start:6.1f} s  {summary or '(no task)'}"
        )

    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on worker processes
        for f in [pool.submit(one, seed, name) for seed, name in runs]:
            f.result()
    rows.sort(
        key=lambda r: (r["seed"], systems.index(r["system"]), TASKS.index(r["task"]))
    )
    shutil.rmtree(tmp, ignore_errors=True)
    earlier_s = 0.0
    # a partial rerun replaces those systems' rows, keeps the others
    if args.systems and out.exists():
        prev = read_json(out)
        if prev["seeds"] == seeds and prev["tasks"] == args.tasks.split(","):
            rows = [r for r in prev["rows"] if r["system"] not in systems] + rows
            failures = [
                f for f in prev["failures"] if f["system"] not in systems
            ] + failures
            earlier_s = prev["wall_s"]
    result = {
        "dataset": args.dataset,
        "tasks": args.tasks.split(","),
        "seeds": seeds,
        "quick": args.quick,
        "jobs": args.jobs,
        "threads": args.threads,
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        "environment": environment(),
        "wall_s": earlier_s + time.perf_counter() - total,
        "rows": rows,
        "failures": failures,
    }
    write_json(out, result)
    if not args.no_markdown:
        update_benchmarks_md(result)
    console.print(f"wrote {out} ({result['wall_s']:.0f} s)")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--dataset", default="ml-latest-small", choices=DATASETS)
    ap.add_argument("--tasks", default="warm,cold-item,cold-user,mixed")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument(
        "--systems", default="", help="comma-separated subset (default: all)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small grids (one setting each), for iteration",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="systems run side by side, each in its own process",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per system (BLAS, OpenMP, torch, implicit)",
    )
    ap.add_argument(
        "--no-markdown",
        action="store_true",
        help="write the JSON only, leave BENCHMARKS.md alone",
    )
    ap.add_argument(
        "--out",
        type=Path,
        help="results JSON (default: benchmarks/results/<dataset>[-quick].json)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bad = [t for t in args.tasks.split(",") if t not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}; known: {', '.join(TASKS)}")
    if args.systems:
        from benchmarks.peers import SYSTEMS

        unknown = [s for s in args.systems.split(",") if s not in SYSTEMS]
        if unknown:
            ap.error(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
    worker(args) if args.worker else drive(args)


if __name__ == "__main__":
    main()
