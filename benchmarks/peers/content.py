"""Cold-item baselines from content alone: what a team would try before a graph model.

content-knn   score(u, c) = sum of cosine similarities (pretrained MiniLM text) between cold item c and the
              user's items, over c's k nearest known items
content-pop   ridge regression from content (text + attributes) to log popularity, same list for everyone
ridge-als     ridge map from content to ALS item factors, scored with the user's ALS factors
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from benchmarks.peers.base import (
    COLD_ITEM,
    FitInput,
    Scorer,
    System,
    popularity,
    top_k_sparse,
)
from benchmarks.peers.implicit_mf import fit_als


def _content(data: FitInput) -> np.ndarray:
    """Text embedding next to the attribute multi-hot (scaled to unit norm per row, like the text)."""
    A = data.item_attr.toarray()
    A /= np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-9)
    return np.hstack([data.text, A]).astype(np.float32)


def _ridge(F: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
    """Closed-form ridge with an unpenalised intercept: returns W with Y ~ [F, 1] W."""
    mu_f, mu_y = F.mean(axis=0), Y.mean(axis=0)
    Fc = F - mu_f
    W = np.linalg.solve(Fc.T @ Fc + alpha * np.eye(F.shape[1]), Fc.T @ (Y - mu_y))
    return np.vstack([W, (mu_y - mu_f @ W)[None]]).astype(np.float32)


def _apply(F: np.ndarray, W: np.ndarray) -> np.ndarray:
    return F @ W[:-1] + W[-1]


class ContentKNN(System):
    name, family, tasks = "content-knn", "cold-start", (COLD_ITEM,)

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        return [{"k": 50}] if quick else [{"k": k} for k in (10, 50, 200, 1000)]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        known = popularity(data.X) > 0
        unknown = np.flatnonzero(~known)
        S = data.text[unknown] @ data.text[known].T  # [unknown items, known items]
        S = top_k_sparse(np.maximum(S, 0.0), params["k"])
        Xk = data.X[:, np.flatnonzero(known)].tocsr()
        n = data.X.shape[1]

        def score(users: np.ndarray) -> np.ndarray:
            out = np.zeros((len(users), n), np.float32)
            out[:, unknown] = (Xk[users] @ S.T).toarray()
            return out

        yield params, score


class ContentPopularity(System):
    name, family, tasks = "content-pop", "cold-start", (COLD_ITEM,)

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        return (
            [{"alpha": 10.0}] if quick else [{"alpha": a} for a in (1.0, 10.0, 100.0)]
        )

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        pop = popularity(data.X)
        known = pop > 0
        F = _content(data)
        W = _ridge(F[known], np.log1p(pop[known])[:, None], params["alpha"])
        pred = _apply(F, W)[:, 0].astype(np.float32)
        yield params, lambda users: np.broadcast_to(pred, (len(users), len(pred)))


class RidgeALS(System):
    name, family, tasks = "ridge-als", "cold-start", (COLD_ITEM,)

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        return (
            [{"alpha": 10.0}] if quick else [{"alpha": a} for a in (1.0, 10.0, 100.0)]
        )

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        known = popularity(data.X) > 0
        U, V = fit_als(data, factors=64, regularization=0.05, alpha=2.0)
        F = _content(data)
        W = _ridge(F[known], V[known], params["alpha"])
        Vc = V.copy()
        Vc[~known] = _apply(F[~known], W)
        yield params, lambda users: U[users] @ Vc.T
