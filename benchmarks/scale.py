"""How graphrec's time and memory grow with the number of interactions, on the synthetic generator.

    python -m benchmarks.scale --sizes 1000000,5000000,20000000 [--mode sampled] [--no-markdown]

Per size, in its own process (so peak memory is that size's): generate users/items/interactions (no images;
users = n/50, items = n/200), mark every interaction train, then time

  build   kg.build.run_build: interactions + attribute relations into the graph
  epoch   one training epoch of graphrec.stages.train (its own "seconds" for the epoch, without validation)
  top-K   top-20 over all items for every user with graphrec's Ranker (GNN vectors, history excluded):
          approximate (`Ranker.topk(approximate=True)`) for every user; exact for a sample of
          users, extrapolated to all, and the share of the exact top-20 the approximate lists hold

and the process's peak RSS after each step. Results: benchmarks/results/scale.json, a table and a plot
(benchmarks/results/scale.png) in BENCHMARKS.md between the scale markers. A size that fails (out of
memory, or over --timeout) is reported as such: the largest size that finished is the one that fits.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from graphrec.core.io import read_json, write_json

HERE = Path(__file__).resolve().parent
EXACT_SAMPLE = 20_000  # users whose exact top-20 is timed (and compared with the approximate lists)
RESULTS = HERE / "results"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n: int, mode: str, batch_size: int, seed: int = 0) -> dict[str, Any]:
    """Generate, build, train one epoch and rank all users at `n` interactions; times in s, memory in MiB."""
    import pandas as pd
    import scipy.sparse as sp

    from graphrec.data.synth import generate
    from graphrec.kg.build import run_build
    from graphrec.stages.rank import Ranker
    from graphrec.stages.train import run_train

    out: dict[str, Any] = {
        "interactions": n,
        "users": max(n // 50, 100),
        "items": max(n // 200, 100),
        "mode": mode,
    }
    with tempfile.TemporaryDirectory(prefix="graphrec-scale-") as tmp:
        t = time.perf_counter()
        ds = generate(out["users"], out["items"], n, seed=seed, progress=False)
        ds.interactions["split"] = pd.array(
            np.full(len(ds.interactions), "train"), dtype="str"
        )
        ds.schema.split = {"method": "all-train (scale benchmark)"}
        ds.save(tmp)
        out.update(
            generate_s=time.perf_counter() - t,
            generate_peak_mb=_peak_mb(),
            actual_interactions=len(ds.interactions),
        )
        del ds

        t = time.perf_counter()
        run_build(tmp, progress=False)
        out.update(build_s=time.perf_counter() - t, build_peak_mb=_peak_mb())

        t = time.perf_counter()
        run_train(
            tmp,
            epochs=1,
            patience=1,
            refit=False,
            mode=mode,
            batch_size=batch_size,
            progress=False,
            device="cpu",
        )
        history = read_json(Path(tmp) / "model" / "history.json")
        out.update(
            train_call_s=time.perf_counter() - t,
            epoch_s=history[0]["seconds"],
            train_peak_mb=_peak_mb(),
        )

        from graphrec.core.io import read_tensors
        from graphrec.data.dataset import Dataset

        ds = Dataset.load(tmp)
        emb = read_tensors(Path(tmp) / "model" / "embeddings.safetensors")
        history_m = ds.matrix(("train",))
        pop = np.asarray(history_m.sum(axis=0)).ravel()
        # no EASE block: the GNN vectors alone
        none = np.zeros((ds.n_items, 0), np.float32)
        ranker = Ranker(
            emb["user"],
            emb["item"],
            pop > 0,
            np.log1p(pop).astype(np.float32),
            none,
            none,
            None,
            weights_warm={"gnn": 1.0},
            weights_cold={"gnn": 1.0},
        )
        history_m = sp.csr_matrix(history_m)
        t = time.perf_counter()
        approx, _ = ranker.topk(np.arange(ds.n_users), 20, history_m, approximate=True)
        out.update(ann_topk_s=time.perf_counter() - t, ann_peak_mb=_peak_mb())
        # exact top-20 on a sample of users (all of them would take hours at 20M): its time per user, and the
        # share of the exact lists the index finds
        sample = np.random.default_rng(seed).choice(
            ds.n_users, min(ds.n_users, EXACT_SAMPLE), replace=False
        )
        t = time.perf_counter()
        exact, _ = ranker.topk(sample, 20, history_m)
        out.update(
            exact_sample_users=len(sample),
            exact_sample_s=time.perf_counter() - t,
            topk_s=(time.perf_counter() - t) * ds.n_users / len(sample),
            topk_peak_mb=_peak_mb(),
            ann_recall=float(
                np.mean(
                    [
                        len(np.intersect1d(a[a >= 0], e[e >= 0]))
                        / max((e >= 0).sum(), 1)
                        for a, e in zip(approx[sample], exact)
                    ]
                )
            ),
        )
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    if not ok:
        return
    x = [r["interactions"] / 1e6 for r in ok]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (
        ("build_s", "graph build"),
        ("epoch_s", "one epoch"),
        ("topk_s", "all-user top-20, exact"),
        ("ann_topk_s", "all-user top-20, approximate"),
    ):
        a.plot(x, [r[key] for r in ok], "o-", label=label)
    a.set(
        xlabel="interactions (millions)",
        ylabel="seconds",
        xscale="log",
        yscale="log",
        title="time",
    )
    a.legend()
    b.plot(
        x,
        [r["train_peak_mb"] / 1024 for r in ok],
        "o-",
        label="peak RSS (through training)",
    )
    b.plot(
        x,
        [r["topk_peak_mb"] / 1024 for r in ok],
        "s--",
        label="peak RSS (through top-K)",
    )
    b.set(xlabel="interactions (millions)", ylabel="GiB", xscale="log", title="memory")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"{env['cpus']} CPUs ({env['cpu']}), {env['ram_gib']} GiB RAM, torch {env['versions']['torch']}; "
        f"{env['date']}. Training mode `{result['mode']}`, batch {result['batch_size']}.",
        "",
        f"`{result['command']}`",
        "",
        "| interactions | users | items | generate s | graph build s | one epoch s | all-user top-20 s, exact "
        "(extrapolated) | all-user top-20 s, approximate (recall of exact) | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(
                f"| {r['interactions']:,} | | | | | | | | did not finish: {r['error']} |"
            )
            continue
        lines.append(
            f"| {r['actual_interactions']:,} | {r['users']:,} | {r['items']:,} | {r['generate_s']:.1f} | "
            f"{r['build_s']:.1f} | {r['epoch_s']:.1f} | {r['topk_s']:.1f} | "
            f"{r['ann_topk_s']:.1f} ({r['ann_recall']:.3f}) | "
            f"{max(r['train_peak_mb'], r['topk_peak_mb'], r['ann_peak_mb']) / 1024:.2f} |"
        )
    lines += [
        "",
        "![time and memory against interactions](benchmarks/results/scale.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--sizes", default="1000000,5000000,20000000")
    ap.add_argument("--mode", default="sampled", choices=("full", "sampled"))
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="seconds per size before it counts as not fitting",
    )
    ap.add_argument("--no-markdown", action="store_true")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        write_json(a.json, measure(a.one, a.mode, a.batch_size))
        return
    from benchmarks.report import write_block
    from benchmarks.run import environment

    rows = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    for n in (int(s) for s in a.sizes.split(",")):
        target = RESULTS / f".scale-{n}.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.scale",
            "--one",
            str(n),
            "--mode",
            a.mode,
            "--batch-size",
            str(a.batch_size),
            "--json",
            str(target),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=a.timeout
            )
            err = (
                None
                if proc.returncode == 0
                else (
                    (proc.stderr.strip().splitlines() or [""])[-1]
                    or f"exit code {proc.returncode} (killed: out of memory?)"
                )
            )
        except subprocess.TimeoutExpired:
            err = f"over {a.timeout:.0f} s"
        row = {"interactions": n, "error": err} if err else read_json(target)
        target.unlink(missing_ok=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "command": "python -m benchmarks.scale " + " ".join(sys.argv[1:]),
        "mode": a.mode,
        "batch_size": a.batch_size,
        "environment": environment(),
        "rows": rows,
    }
    write_json(RESULTS / "scale.json", result)
    plot(rows, RESULTS / "scale.png")
    if not a.no_markdown:
        write_block("scale", table(result), "## Scale")


if __name__ == "__main__":
    main()
