"""Approximate top-k by inner product for large catalogues: candidates from a faiss IVF index in a few dimensions,
rescored exactly by the caller with the full vectors.

Exact top-k for every user costs users x items x dim (at 400k users, 100k items and 1k dims, many minutes on
two cores). The served vectors are long (the graph filter's 1k+ dimensions) and their scores are dominated by
few directions once the users' side is whitened, so the first pass works in `dim` dimensions:

    C = E[u u']  (the users' second moment),  W = C^1/2,  P = the top `dim` right singular vectors of items @ W
    u . v = (u W^-1) . (v W)  ~  (u W^-1 P) . (v W P)

Whitening matters: in 32 dimensions the items' own principal directions keep 28% of the exact top-20 on MovieLens
latest-small, the whitened ones 98% (benchmarks/ann_served.py, BENCHMARKS.md). In those dimensions,
maximum inner product search is reduced to nearest neighbours (Bachrach et al. 2014): item x becomes
[x, sqrt(M - |x|^2)] with M the largest squared norm and user q becomes [q, 0], so |q' - x'|^2 =
|q|^2 + M - 2 q.x and the nearest item is the one with the largest dot product; an inverted-file index then
scans only the `nprobe` of `nlist` item clusters nearest each user.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from graphrec.core.errors import InputError
from graphrec.model.closed_form import randomized_svd

REDUCED_DIM = 32  # the first pass's dimensions (benchmarks/ann_served.py: recall .96-1.0 of the exact top-20)


def faiss_module(purpose: str) -> ModuleType:
    """The faiss package, or one line saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise InputError(f"{purpose} needs the faiss package: pip install 'graphrec[faiss]'") from None
    return faiss


class ApproximateTopK:
    """A first pass for top-k by inner product: `search(users, n)` returns n candidate rows per user, ranked by
    the reduced dot product, for the caller to rescore exactly.

    items: float32 [n, d]; users: float32 [m, d], a sample of the users to be served (their second moment
    whitens the projection). dim: dimensions of the first pass (the full d when d is smaller). nlist: clusters
    (default about 4 sqrt(n), at least 39 items each, as faiss's k-means wants); nprobe: clusters scanned per
    query (default nlist / 8). Recall against the exact top-20 is measured in BENCHMARKS.md.
    """

    def __init__(self, items: np.ndarray, users: np.ndarray, dim: int = REDUCED_DIM, nlist: int | None = None,
                 nprobe: int | None = None, seed: int = 0):
        faiss = faiss_module("approximate top-k")
        items = np.ascontiguousarray(items, np.float32)
        n, d = items.shape
        self.user_map, reduced = _whitened_projection(items, np.asarray(users, np.float32), dim, seed)
        sq = (reduced ** 2).sum(1)
        lifted = np.hstack([reduced, np.sqrt(np.maximum(sq.max(initial=0.0) - sq, 0.0))[:, None]]).astype(np.float32)
        self.index_dim = lifted.shape[1]
        self.nlist = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.index_dim), self.index_dim, self.nlist, faiss.METRIC_L2)
        self.index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = lifted if n <= 256 * self.nlist else lifted[rng.choice(n, 256 * self.nlist, replace=False)]
        self.index.train(sample)
        self.index.add(lifted)
        self.nprobe = nprobe or max(1, self.nlist // 8)
        self.n_items = n

    def search(self, users: np.ndarray, n: int) -> np.ndarray:
        """int64 [len(users), n]: candidate item rows, best first by the reduced dot product; -1 where the probed
        clusters hold fewer than n. The clusters scanned hold about twice n items at least (`nprobe` grows with
        n: a user with a long history asks for many candidates, most of which are their own items)."""
        q = np.asarray(users, np.float32) @ self.user_map
        q = np.hstack([q, np.zeros((len(q), 1), np.float32)])
        self.index.nprobe = int(min(self.nlist, max(self.nprobe, np.ceil(2 * n * self.nlist / max(self.n_items, 1)))))
        return self.index.search(np.ascontiguousarray(q), n)[1]


def _whitened_projection(items: np.ndarray, users: np.ndarray, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(user_map [d, r], items in r dims [n, r]) float32 with users @ user_map . reduced items ~ the dot product:
    the module docstring's W^-1 P and items W P (r = min(dim, rank of the users' second moment))."""
    cov = users.T.astype(np.float64) @ users / max(len(users), 1)
    w, v = np.linalg.eigh(cov)
    keep = w > max(w.max(initial=0.0), 1e-30) * 1e-9
    v, root = v[:, keep], np.sqrt(w[keep])
    whitened = (items.astype(np.float64) @ v) * root  # items W, in the kept eigenbasis
    r = min(dim, whitened.shape[1])
    if r == whitened.shape[1]:  # nothing to reduce: the whitened basis itself
        p = np.eye(r)
    else:
        wt = whitened.T.copy()
        p = randomized_svd(lambda z: whitened @ z, lambda q: wt @ q, whitened.shape, r, seed)[1]
    return ((v / root) @ p).astype(np.float32), (whitened @ p).astype(np.float32)
