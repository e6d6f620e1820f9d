"""Approximate top-k by inner product for large catalogues: a first pass in a few whitened dimensions, rescored
exactly by the caller with the full vectors.

Exact top-k for every user costs users x items x dim (at 400k users, 100k items and ~900 dims, five minutes on
two cores). The served vectors are long (the graph filter's 1k+ dimensions) and their scores live in fewer
directions once the users' side is whitened, so the first pass works in `dim` dimensions:

    C = E[u u']  (the users' second moment),  W = C^1/2,  P = the top `dim` right singular vectors of items @ W
    u . v = (u W^-1) . (v W)  ~  (u W^-1 P) . (v W P)

Whitening matters: in 32 dimensions the items' own principal directions keep 28% of the exact top-20 on MovieLens
latest-small, the whitened ones 98%. The first pass scores every item exactly in those dimensions (a dense
product, no index to train): on the synthetic 20M-interaction shop an inverted-file index over them (faiss IVF,
a tenth of the clusters scanned) kept 77-87% of the exact top-20 where the exhaustive pass in 256 dimensions keeps
99.6% (benchmarks/ann_served.py, BENCHMARKS.md "Approximate top-K on the served vectors").
"""

from __future__ import annotations

import numpy as np
import torch

from graphrec.model.closed_form import randomized_svd

REDUCED_DIM = 256  # the first pass's dimensions (BENCHMARKS.md: 99.5% of the exact top-20 at 20M, 5 x 20 rescored)


class ApproximateTopK:
    """A first pass for top-k by inner product: `scores(users)` are the reduced dot products with every item, for
    the caller to take each user's best candidates from and rescore exactly.

    items: float32 [n, d]; users: float32 [m, d], a sample of the users to be served (their second moment
    whitens the projection). dim: dimensions of the first pass (the full d when d is smaller).
    """

    def __init__(
        self,
        items: np.ndarray,
        users: np.ndarray,
        dim: int = REDUCED_DIM,
        seed: int = 0,
    ):
        user_map, reduced = _whitened_projection(
            np.ascontiguousarray(items, np.float32),
            np.asarray(users, np.float32),
            dim,
            seed,
        )
        self.dim = reduced.shape[1]
        self._user_map = torch.from_numpy(user_map)
        self._items_t = torch.from_numpy(np.ascontiguousarray(reduced.T))

    def scores(self, users: np.ndarray) -> torch.Tensor:
        """float32 [len(users), n]: each user's reduced dot product with every item."""
        return (
            torch.from_numpy(np.asarray(users, np.float32)) @ self._user_map
        ) @ self._items_t


def _whitened_projection(
    items: np.ndarray, users: np.ndarray, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
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
        p = randomized_svd(
            lambda z: whitened @ z, lambda q: wt @ q, whitened.shape, r, seed
        )[1]
    return ((v / root) @ p).astype(np.float32), (whitened @ p).astype(np.float32)
