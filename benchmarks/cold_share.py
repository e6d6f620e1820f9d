"""How much of graphrec's mixed lists (one top-20 over warm AND cold items) is cold, against the truth.

    python -m benchmarks.cold_share [--dataset ml-latest-small] [--seeds 1,2,3]

Reads the workspaces `benchmarks.run` left in its cache (~/.cache/graphrec-benchmarks/DATASET/seedN-graphrec,
made by `python -m benchmarks.run --systems graphrec --tasks mixed ...`): for the users of the mixed test part
(test + cold_test), graphrec's top-20 over all items with the given interactions excluded, as the benchmark
ranks them. Prints, per seed, the share of recommended slots that hold a cold item and the share of the
held-out pairs (test + cold_test) that are cold-item pairs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.run import GIVEN_FINAL, K
from graphrec.data.dataset import Dataset
from graphrec.stages.rank import serving_ranker

CACHE = Path.home() / ".cache" / "graphrec-benchmarks"


def cold_share(ws: Path) -> dict[str, float]:
    ds = Dataset.load(ws)
    ranker = serving_ranker(ws, ds)
    truth = ds.part("test", "cold_test")
    users = np.unique(truth["user"].to_numpy(np.int64))
    cold = np.zeros(ds.n_items, bool)
    cold[ds.cold_items()] = True
    items, _ = ranker.topk(users, K, ds.matrix(GIVEN_FINAL))
    listed = items[items >= 0]
    return {
        "users": len(users),
        f"cold_share_of_top{K}": float(cold[listed].mean()),
        "cold_share_of_truth": float(cold[truth["item"].to_numpy(np.int64)].mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--seeds", default="1,2,3")
    a = ap.parse_args()
    for seed in a.seeds.split(","):
        ws = CACHE / a.dataset / f"seed{seed}-graphrec"
        print(json.dumps({"seed": int(seed), **cold_share(ws)}), flush=True)


if __name__ == "__main__":
    main()
