"""Time `recommend --users all` on a trained workspace: loading (dataset, embeddings, ranker) vs ranking, and
the Python API's `Recommender.recommend` for a batch of 1,000 user ids from a loaded model.

    python benchmarks/recommend_speed.py WORKSPACE [K] [REPEATS]
The ranker must already be fitted (model/ranker.*); the first call fits it otherwise (reported separately).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from graphrec.data.dataset import GIVEN, Dataset
from graphrec.pipeline.api import Recommender
from graphrec.stages.rank import serving_ranker
from graphrec.stages.recommend import recommend


def main() -> None:
    ws, k = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    t = time.perf_counter()
    ds = Dataset.load(ws)
    r = serving_ranker(ws, ds)
    load = time.perf_counter() - t
    history = ds.matrix(GIVEN)
    users = np.arange(ds.n_users)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        r.topk(users, k, history)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    frame = recommend(ws, "all", k, ranker=r)
    full = time.perf_counter() - t
    print(
        f"{ds.n_users} users x {ds.n_items} items, k={k}: load {load:.2f}s, ranking min {min(times):.2f}s "
        f"(of {repeats}), recommend() incl. dataset load and table {full:.2f}s, {len(frame)} rows"
    )
    rec = Recommender.load(ws)
    t = time.perf_counter()
    # the first call loads the model into memory
    rec.recommend(list(ds.user_ids[:1]), k=k)
    first = time.perf_counter() - t
    # 1,000 requests (ids repeat where there are fewer users)
    batch = list(np.resize(ds.user_ids, 1000))
    api = []
    for _ in range(repeats):
        t = time.perf_counter()
        rec.recommend(batch, k=k)
        api.append(time.perf_counter() - t)
    print(
        f"Recommender.load(ws): first recommend (loads the model) {first:.2f}s, then 1,000 users in "
        f"{min(api) * 1e3:.0f} ms (min of {repeats})"
    )


if __name__ == "__main__":
    main()
