"""Closed-form linear autoencoders over the items that have interactions: EASE (Steck 2019) and the
full-rank dropout-denoising EDLAE (Steck 2020), whose dropout probability p turns into the item-specific
L2 penalty  Lambda = lambda + p / (1 - p) * diag(X'X)  and whose weights are  B = I - P Lambda.
The diagonal of B never matters for ranking unseen items, so neither model needs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg as sl

from benchmarks.peers.base import MIXED, WARM, FitInput, Scorer, System


def _gram(data: FitInput) -> tuple[np.ndarray, np.ndarray]:
    active = np.flatnonzero(np.asarray(data.X.sum(axis=0)).ravel() > 0)
    Xa = data.X[:, active]
    return active, (Xa.T @ Xa).toarray().astype(np.float64)


def _scorer(data: FitInput, active: np.ndarray, B: np.ndarray) -> Scorer:
    Xa, n = data.X[:, active].tocsr(), data.X.shape[1]

    def score(users: np.ndarray) -> np.ndarray:
        out = np.zeros((len(users), n), np.float32)
        out[:, active] = Xa[users] @ B
        return out

    return score


def _inverse(G: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    G = G.copy()
    G[np.diag_indices_from(G)] += penalty
    return sl.inv(G, overwrite_a=True, check_finite=False)


class EASE(System):
    name, family, tasks = "ease", "linear", (WARM, MIXED)  # mixed: cold items score 0

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        return (
            [{"lambda": 300.0}]
            if quick
            else [{"lambda": v} for v in (30.0, 100.0, 300.0, 1000.0)]
        )

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        active, G = _gram(data)
        P = _inverse(G, np.full(len(G), params["lambda"]))
        B = (-P / np.diag(P)[None, :]).astype(np.float32)
        np.fill_diagonal(B, 0.0)
        yield params, _scorer(data, active, B)


class EDLAE(System):
    name, family, tasks = "edlae", "linear", (WARM,)

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        if quick:
            return [{"p": 0.33, "lambda": 10.0}]
        # one dense inversion each
        return [{"p": p, "lambda": 10.0} for p in (0.25, 0.5, 0.75)]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        active, G = _gram(data)
        p = params["p"]
        lam = params["lambda"] + p / (1.0 - p) * np.diag(G)
        P = _inverse(G, lam)
        B = (-P * lam[None, :]).astype(np.float32)
        np.fill_diagonal(B, 0.0)
        yield params, _scorer(data, active, B)
