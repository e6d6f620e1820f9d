"""Approximate top-20 on the vectors graphrec serves: recall of the exact lists and speed-up, per candidate index.

    OMP_NUM_THREADS=2 python -m benchmarks.ann_served WS [WS ...] [--users 5000]

For each trained workspace: the served user and item vectors (`Ranker.user_vectors` / `item_vectors`, as
`graphrec export` ships them), the exact top-20 of a sample of users (given items excluded) and, per candidate,
the share of those lists it finds and its time (index build + search) against the exact pass. Candidates:

  ivf/N      faiss IVF over the MIPS-lifted vectors (graphrec.model.ann today), nprobe = nlist / N
  hnsw/E     faiss HNSW (M 32) over the lifted vectors, efSearch E
  pca/R      a first pass in R dimensions (the item vectors' top principal directions after whitening the users'
             side, so the reduced dot products keep most of the score), exact search there for the top 10 x 20
             (given items excluded), then exact rescoring with the full vectors
  ipca/R     the same with the item vectors' own principal directions (no user statistics)
  pcaivf/R   ipca/R's projection, then ivf/8 in R dimensions for the first pass (top 10 x 20 plus the history)
  wivf/R     pca/R's projection, then ivf/8 in R dimensions for the first pass
  .../R/M    pca and wivf with M first-pass candidates rescored (default 10 x 20), given items dropped first
  ranker     what graphrec serves (`Ranker.topk(approximate=True)`: pca/256 with 5 x 20 candidates rescored, the
             projection whitened by up to 20,000 of the users served) against `Ranker.topk` exact, both whole

Rows are appended to benchmarks/results/ann_served.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "ann_served.jsonl"
K = 20


def exact_topk(
    user: np.ndarray, item: np.ndarray, given: sp.csr_matrix, k: int, batch: int = 2048
) -> np.ndarray:
    out = np.empty((len(user), k), np.int64)
    for s in range(0, len(user), batch):
        sc = user[s : s + batch] @ item.T
        g = given[s : s + batch].tocoo()
        sc[g.row, g.col] = -np.inf
        top = np.argpartition(-sc, k, axis=1)[:, :k]
        out[s : s + batch] = np.take_along_axis(
            top, np.argsort(-np.take_along_axis(sc, top, 1), 1), 1
        )
    return out


def rescore(
    user: np.ndarray, item: np.ndarray, cand: np.ndarray, given: sp.csr_matrix, k: int
) -> np.ndarray:
    """The exact top-k among each user's candidate rows (-1 = none), given items excluded."""
    safe = np.maximum(cand, 0)
    sc = np.empty(cand.shape, np.float32)
    for s in range(0, len(user), 32):  # [32, candidates, dim] at a time
        sc[s : s + 32] = np.einsum(
            "ud,ucd->uc", user[s : s + 32], item[safe[s : s + 32]]
        )
    sc[cand < 0] = -np.inf
    rows = np.repeat(np.arange(len(user)), cand.shape[1])
    sc[np.asarray(given[rows, safe.ravel()]).reshape(cand.shape) > 0] = -np.inf
    top = np.argsort(-sc, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, top, 1)


def lifted(item: np.ndarray) -> np.ndarray:
    sq = (item**2).sum(1)
    return np.hstack([item, np.sqrt(np.maximum(sq.max() - sq, 0))[:, None]]).astype(
        np.float32
    )


def ivf(items: np.ndarray, queries: np.ndarray, fraction: int, n: int) -> np.ndarray:
    """faiss IVF (L2 on MIPS-lifted vectors, nlist about 4 sqrt(items)), nprobe = nlist / fraction or more, so
    that the scanned clusters hold about 2n items: n rows each."""
    import faiss

    nlist = max(1, min(int(4 * np.sqrt(len(items))), len(items) // 39))
    index = faiss.IndexIVFFlat(
        faiss.IndexFlatL2(items.shape[1]), items.shape[1], nlist, faiss.METRIC_L2
    )
    index.train(items)
    index.add(items)
    # as graphrec.model.ann
    index.nprobe = int(
        min(nlist, max(nlist // fraction, np.ceil(2 * n * nlist / len(items))))
    )
    return index.search(np.ascontiguousarray(queries, np.float32), n)[1]


def candidates(
    name: str, user: np.ndarray, item: np.ndarray, given: sp.csr_matrix
) -> np.ndarray:
    import faiss

    want = K + int(np.diff(given.indptr).max())
    q = np.hstack([user, np.zeros((len(user), 1), np.float32)]).astype(np.float32)
    kind, arg, *more = name.split("/")
    # pca/R/M, wivf/R/M: M first-pass candidates rescored
    rescored = int(more[0]) if more else 10 * K
    # graphrec.model.ann before the whitened first pass: the full lifted vectors
    if kind == "ivf":
        return ivf(lifted(item), q, int(arg), want)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(item.shape[1] + 1, 32)
        index.hnsw.efConstruction = 80
        index.add(lifted(item))
        index.hnsw.efSearch = max(int(arg), want)
        return index.search(np.ascontiguousarray(q), want)[1]
    r = int(arg)
    # whiten the users' side, keep the items' top r directions there
    if kind in (
        "pca",
        "wivf",
    ):
        cov = user.T.astype(np.float64) @ user / len(user)
        w, v = np.linalg.eigh(cov)
        keep = w > w.max() * 1e-9
        half = (v[:, keep] * np.sqrt(w[keep])) @ v[:, keep].T
        inv = (v[:, keep] / np.sqrt(w[keep])) @ v[:, keep].T
        p = np.linalg.svd(item.astype(np.float64) @ half, full_matrices=False)[2][:r].T
        iu, ii = (
            (user @ inv @ p).astype(np.float32),
            (item @ half @ p).astype(np.float32),
        )
    else:  # ipca, pcaivf: the item vectors' own top r principal directions (no user statistics)
        p = np.linalg.svd(item.astype(np.float64), full_matrices=False)[2][:r].T
        iu, ii = (user @ p).astype(np.float32), (item @ p).astype(np.float32)
    if kind in ("pcaivf", "wivf"):
        found = ivf(
            lifted(ii),
            np.hstack([iu, np.zeros((len(iu), 1), np.float32)]),
            8,
            rescored + want - K,
        )
        return _first_not_given(found, given, rescored)
    return exact_topk(iu, ii, given, rescored)


def _first_not_given(rows: np.ndarray, given: sp.csr_matrix, m: int) -> np.ndarray:
    """Each user's first m candidate rows that are not their given items (-1 where fewer)."""
    out = np.full((len(rows), m), -1, np.int64)
    for u, row in enumerate(rows):
        keep = row[
            (row >= 0)
            & ~np.isin(row, given.indices[given.indptr[u] : given.indptr[u + 1]])
        ][:m]
        out[u, : len(keep)] = keep
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.ann_served", description=__doc__.splitlines()[0]
    )
    ap.add_argument("workspaces", nargs="+", type=Path)
    ap.add_argument(
        "--users", type=int, default=5000, help="users sampled for the comparison"
    )
    ap.add_argument("--candidates", default="ranker,ivf/8,pca/32,ipca/32,wivf/32")
    a = ap.parse_args()
    from graphrec.data.dataset import GIVEN, Dataset
    from graphrec.stages.rank import serving_ranker

    for ws in a.workspaces:
        ds = Dataset.load(ws)
        r = serving_ranker(ws, ds)
        users = np.sort(
            np.random.default_rng(0).choice(
                ds.n_users, min(a.users, ds.n_users), replace=False
            )
        )
        given = ds.matrix(GIVEN)[users].tocsr()
        history = ds.matrix(GIVEN)
        names = a.candidates.split(",")
        # the study rows share one exact pass over the sampled users
        if names != ["ranker"]:
            user, item = r.user_vectors(users, history), r.item_vectors()
            t = time.perf_counter()
            exact = exact_topk(user, item, given, K)
            exact_s = time.perf_counter() - t
        for name in names:
            t = time.perf_counter()
            # the product path: `graphrec recommend --approximate` against exact, whole
            if name == "ranker":
                exact_s = None
                t = time.perf_counter()
                exact = r.topk(users, K, history)[0]
                exact_s = time.perf_counter() - t
                t = time.perf_counter()
                got = r.topk(users, K, history, approximate=True)[0]
            else:
                got = rescore(user, item, candidates(name, user, item, given), given, K)
            s = time.perf_counter() - t
            recall = float(
                np.mean([len(np.intersect1d(g, e)) / K for g, e in zip(got, exact)])
            )
            row = {
                "workspace": str(ws),
                "users": len(users),
                "items": ds.n_items,
                "dim": r.item_vectors([0]).shape[1],
                "candidate": name,
                "recall": round(recall, 4),
                "seconds": round(s, 2),
                "exact_seconds": round(exact_s, 2),
                "speedup": round(exact_s / s, 2),
            }
            print(json.dumps(row), flush=True)
            with OUT.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
