"""Matrix factorisation from the `implicit` package: weighted ALS (Hu et al. 2008) and BPR."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from benchmarks.peers.base import WARM, FitInput, Scorer, System


def _factors(model) -> tuple[np.ndarray, np.ndarray]:
    to_np = (
        (lambda a: a.to_numpy())
        if hasattr(model.user_factors, "to_numpy")
        else np.asarray
    )
    return to_np(model.user_factors).astype(np.float32), to_np(
        model.item_factors
    ).astype(np.float32)


def fit_als(
    data: FitInput,
    factors: int,
    regularization: float,
    alpha: float,
    iterations: int = 15,
):
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=iterations,
        random_state=data.seed,
        num_threads=data.threads,
    )
    model.fit(data.X, show_progress=False)
    return _factors(model)


class ALS(System):
    name, family, tasks = "als", "factorisation", (WARM,)

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        if quick:
            return [{"factors": 64, "regularization": 0.05, "alpha": 2.0}]
        return [
            {"factors": f, "regularization": 0.05, "alpha": a}
            for f in (64, 128)
            for a in (2.0, 8.0)
        ]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        U, V = fit_als(
            data, params["factors"], params["regularization"], params["alpha"]
        )
        yield params, lambda users: U[users] @ V.T


class BPR(System):
    name, family, tasks = "bpr", "factorisation", (WARM,)

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        if quick:
            return [{"factors": 64, "learning_rate": 0.05, "regularization": 0.01}]
        return [
            {"factors": f, "learning_rate": lr, "regularization": 0.01}
            for f in (64, 128)
            for lr in (0.02, 0.08)
        ]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        model = BayesianPersonalizedRanking(
            factors=params["factors"],
            learning_rate=params["learning_rate"],
            regularization=params["regularization"],
            iterations=200,
            random_state=data.seed,
            num_threads=data.threads,
        )
        model.fit(data.X, show_progress=False)
        U, V = _factors(model)
        yield params, lambda users: U[users] @ V.T
