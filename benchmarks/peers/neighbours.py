"""Item-based neighbourhood peers: cosine ItemKNN with shrinkage, and RP3beta (random walk, popularity-damped)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.peers.base import WARM, FitInput, Scorer, System, top_k_sparse


def _scorer(X: sp.csr_matrix, W: sp.csr_matrix) -> Scorer:
    return lambda users: np.asarray((X[users] @ W).toarray(), np.float32)


class ItemKNN(System):
    name, family, tasks = "itemknn", "neighbourhood", (WARM,)

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        if quick:
            return [{"k": 100, "shrink": 10.0}]
        return [{"k": k, "shrink": 10.0} for k in (50, 200, 800)]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        X = data.X
        co = (X.T @ X).toarray()
        norm = np.sqrt(np.diag(co))
        S = co / (np.outer(norm, norm) + params["shrink"] + 1e-9)
        np.fill_diagonal(S, 0.0)
        yield params, _scorer(X, top_k_sparse(S.astype(np.float32), params["k"]))


class RP3beta(System):
    """W[i, j] = (P_iu P_uj)^alpha / pop_j^beta with row-stochastic transition matrices (Paudel et al. 2017)."""

    name, family, tasks = "rp3beta", "neighbourhood", (WARM,)

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        if quick:
            return [{"alpha": 0.8, "beta": 0.4, "k": 200}]
        return [
            {"alpha": a, "beta": b, "k": 200} for a in (0.8, 1.0) for b in (0.3, 0.5)
        ]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        X = data.X
        deg_u = np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1.0)
        deg_i = np.asarray(X.sum(axis=0)).ravel()
        Pui = sp.diags(1.0 / deg_u) @ X
        Piu = sp.diags(1.0 / np.maximum(deg_i, 1.0)) @ X.T.tocsr()
        Pui.data **= params["alpha"]
        Piu.data **= params["alpha"]
        W = (Piu @ Pui).toarray()
        W /= np.power(np.maximum(deg_i, 1.0), params["beta"])[None, :]
        np.fill_diagonal(W, 0.0)
        yield params, _scorer(X, top_k_sparse(W.astype(np.float32), params["k"]))
