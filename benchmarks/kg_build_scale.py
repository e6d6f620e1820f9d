"""Knowledge-graph build at scale: time and peak memory of `run_build` on a synthetic split dataset.

    python benchmarks/kg_build_scale.py --interactions 5000000 --users 200000 --items 50000 [--item-knn 10]

Setup (not measured, cached in --work): generate the synthetic shop, split it (20% cold items), save it
and, with --item-knn, random 64-d content features. Then a fresh child process runs the build stage
(`run_build(force=True)`), `graph_stats` and `to_hetero_data`, and reports wall and CPU seconds per step and
its peak RSS (ru_maxrss: includes the interpreter, numpy, torch and the loaded dataset).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def setup(work: Path, users: int, items: int, interactions: int, knn_dim: int) -> Path:
    import numpy as np

    from graphrec.core.feature_store import Features, save_features
    from graphrec.core.workspace import Workspace
    from graphrec.data.importer import save_dataset
    from graphrec.data.splits import split_dataset
    from graphrec.data.synth import generate

    ws = work / f"ws-{users}-{items}-{interactions}"
    if not (ws / "dataset" / "dataset.json").exists():
        ds = split_dataset(
            generate(users, items, interactions, seed=0), cold_items=0.2, seed=0
        )
        save_dataset(ws, ds, {"source": "benchmark", "interactions": interactions})
    if knn_dim and not (ws / "features" / "text.safetensors").exists():
        ids = json.loads((ws / "dataset" / "ids.json").read_text())["items"]
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(64, knn_dim)).astype(np.float32)
        values = centres[rng.integers(64, size=len(ids))] + 0.5 * rng.normal(
            size=(len(ids), knn_dim)
        ).astype(np.float32)
        save_features(
            Workspace(ws).stage_dir("features"),
            Features("text", values, np.ones(len(ids), bool), {"item_ids": ids}),
        )
    return ws


def measure(ws: Path, item_knn: int) -> dict:
    """Wall and CPU seconds per step (CPU time shows the work when other jobs share the cores)."""
    clock = lambda: (time.perf_counter(), time.process_time())  # noqa: E731
    start = clock()
    from graphrec.data.dataset import Dataset
    from graphrec.kg.build import run_build
    from graphrec.kg.stats import graph_stats

    timings = {}

    def lap(name: str, t0: tuple[float, float]) -> None:
        t1 = clock()
        timings[f"{name}_wall_s"], timings[f"{name}_cpu_s"] = (
            round(t1[0] - t0[0], 1),
            round(t1[1] - t0[1], 1),
        )

    lap("imports", start)
    t = clock()
    res = run_build(ws, item_knn=item_knn, force=True, progress=False)
    lap("build", t)
    t = clock()
    stats = graph_stats(res.graph, Dataset.load(ws))
    lap("stats", t)
    t = clock()
    res.graph.to_hetero_data()
    lap("hetero_data", t)
    return {
        **timings,
        "peak_rss_gib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
        ),
        "nodes": stats["total_nodes"],
        "edges": stats["total_edges"],
        "interaction_edges": stats["edges"]["user|interacts|item"],
        "leak_ok": stats["leak_check"]["ok"],
        "cold_items": stats["cold_items"]["count"],
        "cold_connected_share": stats["cold_items"]["connected_to_warm"]["share"],
        "load_avg_1min": round(os.getloadavg()[0], 1),
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interactions", type=int, default=5_000_000)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--item-knn", type=int, default=0)
    p.add_argument("--knn-dim", type=int, default=64)
    p.add_argument("--work", type=Path, default=Path("/tmp/graphrec-kg-bench"))
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    a = p.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.item_knn)))
        return
    t = time.perf_counter()
    ws = setup(a.work, a.users, a.items, a.interactions, a.knn_dim if a.item_knn else 0)
    print(f"setup {time.perf_counter() - t:.0f}s -> {ws}", file=sys.stderr)
    child = subprocess.run(
        [sys.executable, __file__, "--measure", str(ws), "--item-knn", str(a.item_knn)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = {
        "users": a.users,
        "items": a.items,
        "interactions": a.interactions,
        "item_knn": a.item_knn,
        **json.loads(child.stdout.strip().splitlines()[-1]),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
