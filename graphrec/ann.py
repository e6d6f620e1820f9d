"""Approximate top-k by inner product for large catalogues: a faiss IVF index over the item vectors.

Exact top-k for every user costs users x items x dim (at 400k users, 100k items and 1k dims, hours on two
cores); an inverted-file index scans only the `nprobe` of `nlist` item clusters nearest each user.

Maximum inner product search is reduced to nearest neighbours (Bachrach et al. 2014): item x becomes
[x, sqrt(M - |x|^2)] with M the largest squared norm and user q becomes [q, 0], so |q' - x'|^2 =
|q|^2 + M - 2 q.x and the nearest item is the one with the largest dot product. The clusters are then
found by L2, where k-means is at home, not by inner product, which favours long vectors.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from graphrec.errors import InputError


def faiss_module(purpose: str) -> ModuleType:
    """The faiss package, or one line saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise InputError(f"{purpose} needs the faiss package: pip install 'graphrec[faiss]'") from None
    return faiss


class ApproximateTopK:
    """IVF index over item vectors; `search(users, k)` returns candidate rows ranked by approximate dot product.

    items: float32 [n, d]. nlist: clusters (default about 4 sqrt(n), at least 39 items each, as faiss's
    k-means wants); nprobe: clusters scanned per query (default nlist / 8: recall against exact
    top-20 is measured in BENCHMARKS.md, "Scale").
    """

    def __init__(self, items: np.ndarray, nlist: int | None = None, nprobe: int | None = None, seed: int = 0):
        faiss = faiss_module("approximate top-k")
        items = np.ascontiguousarray(items, np.float32)
        n, d = items.shape
        sq = (items ** 2).sum(1)
        self.index_dim = d + 1
        lifted = np.hstack([items, np.sqrt(np.maximum(sq.max(initial=0.0) - sq, 0.0))[:, None]]).astype(np.float32)
        self.nlist = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.index_dim), self.index_dim, self.nlist, faiss.METRIC_L2)
        self.index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = lifted if n <= 256 * self.nlist else lifted[rng.choice(n, 256 * self.nlist, replace=False)]
        self.index.train(sample)
        self.index.add(lifted)
        self.index.nprobe = nprobe or max(1, self.nlist // 8)

    def search(self, users: np.ndarray, k: int) -> np.ndarray:
        """int64 [len(users), k]: item rows, nearest first; -1 where the probed clusters hold fewer than k."""
        q = np.hstack([np.asarray(users, np.float32), np.zeros((len(users), 1), np.float32)])
        return self.index.search(np.ascontiguousarray(q), k)[1]
