"""What a whole `graphrec train` costs on a synthetic catalogue, next to iALS and EASE timed in the same run.

    OMP_NUM_THREADS=2 python -m benchmarks.train_cost --shapes 1000000x25000x40000 [--timeout 3600]

A shape is INTERACTIONSxUSERSxITEMS. Per shape, in its own process (peak memory is that shape's): the synthetic
shop (`data.synth.generate`, no images) split as `graphrec data split` does by default (random 80/10/10 per user,
20% of the items cold), lexical text features (`encode lexical`), the graph (`build`), then `graphrec train` with
its defaults (select on validation, refit, the ranker's blend: `run_train` timed whole), and all-user top-20 from
the served model (`Ranker.topk`, approximate as `recommend --approximate`, with the share of the exact lists it
keeps on a sample of users). The same process then times implicit's ALS (64 factors, 15 iterations, 2 threads) on
the same training matrix, and EASE's dense closed form when its item-item matrix fits in --ease-gib. Rows are
appended to benchmarks/results/train_cost.jsonl. `--one SHAPE` runs one shape in the current process and shows
training's progress (how far a shape got when it runs out of time: `timeout 1800 python -m benchmarks.train_cost
--one 20000000x400000x100000`). `--no-gnn` trains as `graphrec train --no-gnn` (the closed-form blend alone).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scale import EXACT_SAMPLE, _peak_mb

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "train_cost.jsonl"


def measure(
    n: int,
    n_users: int,
    n_items: int,
    ease_gib: float,
    seed: int = 0,
    progress: bool = False,
    gnn: bool = True,
) -> dict[str, Any]:
    """The stages' wall seconds and the process's peak RSS (MiB) after each, for one shape."""
    from graphrec.data.splits import run_split
    from graphrec.data.synth import generate
    from graphrec.kg.build import run_build
    from graphrec.stages.encode import run_encode
    from graphrec.stages.rank import serving_ranker
    from graphrec.stages.train import run_train

    out: dict[str, Any] = {
        "interactions": n,
        "users": n_users,
        "items": n_items,
        "gnn": gnn,
    }
    with tempfile.TemporaryDirectory(prefix="graphrec-cost-") as ws:
        t = time.perf_counter()
        generate(n_users, n_items, n, seed=seed, progress=False).save(ws)
        run_split(ws, method="random", valid=0.1, test=0.1, cold_items=0.2)
        out.update(data_s=time.perf_counter() - t)
        t = time.perf_counter()
        run_encode(ws, ["lexical"], progress=False)
        run_build(ws, progress=False)
        out.update(encode_build_s=time.perf_counter() - t, build_peak_mb=_peak_mb())
        t = time.perf_counter()
        trained = run_train(ws, seed=1, progress=progress, device="cpu", gnn=gnn)
        out.update(
            train_s=time.perf_counter() - t,
            train_peak_mb=_peak_mb(),
            selected_epoch=trained.selected_epoch,
            epoch_s={
                ph: [h["seconds"] for h in trained.history if h["phase"] == ph]
                for ph in {h["phase"] for h in trained.history}
            },
            refit=trained.refit,
            gnn_served=trained.gnn_served,
        )

        r = serving_ranker(ws)
        from graphrec.data.dataset import Dataset

        ds = Dataset.load(ws)
        given = ds.matrix(("train", "valid"))
        users = np.arange(ds.n_users)
        t = time.perf_counter()
        approx, _ = r.topk(users, 20, given, approximate=True)
        out.update(ann_topk_s=time.perf_counter() - t)
        sample = np.random.default_rng(seed).choice(
            ds.n_users, min(ds.n_users, EXACT_SAMPLE), replace=False
        )
        t = time.perf_counter()
        exact, _ = r.topk(sample, 20, given)
        out.update(
            exact_topk_s=(time.perf_counter() - t) * ds.n_users / len(sample),
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
        out.update(_peers(given, ease_gib))
    return out


def _peers(x, ease_gib: float) -> dict[str, Any]:
    """implicit ALS (64 factors, 15 iterations) and, where its n_items^2 float32 matrix fits, dense EASE
    (lambda 300), fitted on the same matrix as graphrec's refit."""
    import implicit
    from threadpoolctl import threadpool_limits

    from benchmarks.peers.base import FitInput
    from benchmarks.peers.linear import EASE

    out: dict[str, Any] = {}
    x = x.tocsr().astype(np.float32)
    t = time.perf_counter()
    with threadpool_limits(1, "blas"):
        implicit.cpu.als.AlternatingLeastSquares(
            factors=64, iterations=15, num_threads=2, random_state=0
        ).fit(x, show_progress=False)
    out["als_s"] = time.perf_counter() - t
    need = x.shape[1] ** 2 * 4 * 3 / 2**30  # the Gram, its inverse and the weights
    if need > ease_gib:
        out["ease"] = (
            f"not run: dense {x.shape[1]:,}^2 float32 needs ~{need:.0f} GiB > --ease-gib {ease_gib:g}"
        )
        return out
    t = time.perf_counter()
    next(
        EASE().fit(FitInput(x, None, None, None, seed=0, threads=2), {"lambda": 300.0})
    )
    out["ease_s"] = time.perf_counter() - t
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.train_cost", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--shapes",
        default="1000000x25000x40000",
        help="INTERACTIONSxUSERSxITEMS, comma-separated",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="seconds per shape before it counts as not fitting",
    )
    ap.add_argument(
        "--ease-gib",
        type=float,
        default=12.0,
        help="run dense EASE only below this memory",
    )
    ap.add_argument(
        "--one",
        help="measure one shape in this process, its row on stdout, training's progress on "
        "stderr (how far a run got before a timeout)",
    )
    ap.add_argument(
        "--no-gnn",
        action="store_true",
        help="`graphrec train --no-gnn`: the closed-form blend alone",
    )
    a = ap.parse_args(argv)
    if a.one:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
        )
        n, u, i = (int(v) for v in a.one.split("x"))
        print(json.dumps(measure(n, u, i, a.ease_gib, progress=True, gnn=not a.no_gnn)))
        return
    from benchmarks.run import environment

    for shape in a.shapes.split(","):
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.train_cost",
            "--one",
            shape,
            "--ease-gib",
            str(a.ease_gib),
            *(["--no-gnn"] if a.no_gnn else []),
        ]
        t = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=a.timeout
            )
            row = (
                json.loads(proc.stdout.strip().splitlines()[-1])
                if proc.returncode == 0
                else {
                    "error": (
                        proc.stderr.strip().splitlines()
                        or [f"exit code {proc.returncode}"]
                    )[-1]
                }
            )
        except subprocess.TimeoutExpired:
            row = {"error": f"over {a.timeout:.0f} s"}
        row.update(
            shape=shape,
            wall_s=time.perf_counter() - t,
            environment=environment(),
            command="python -m benchmarks.train_cost "
            + " ".join(sys.argv[1:] if argv is None else argv),
        )
        OUT.parent.mkdir(parents=True, exist_ok=True)
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            json.dumps({k: v for k, v in row.items() if k != "environment"}), flush=True
        )


if __name__ == "__main__":
    main()
