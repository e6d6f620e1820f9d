"""Popularity, and popularity within the cold user's attribute groups (age band, gender, occupation, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.peers.base import COLD_USER, WARM, FitInput, Scorer, System, popularity


class Popularity(System):
    name, family, tasks = "popularity", "baseline", (WARM, COLD_USER)

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        pop = popularity(data.X)
        yield params, lambda users: np.broadcast_to(pop, (len(users), len(pop)))


class AttributePopularity(System):
    """score(u, i) = sum over u's attribute values v of P(i | v)  +  beta * P(i): what people like u watch."""

    name, family, tasks = "attr-popularity", "cold-start", (COLD_USER,)

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        return [{"beta": 0.5}] if quick else [{"beta": b} for b in (0.0, 0.5, 2.0)]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        if data.user_attr is None:
            raise ValueError("attr-popularity needs user attributes")
        known = np.asarray(data.X.sum(axis=1)).ravel() > 0
        # attribute groups of users with history
        A = sp.diags(known.astype(np.float32)) @ data.user_attr
        group_size = np.maximum(np.asarray(A.sum(axis=0)).ravel(), 1.0)
        # [values, items]: P(i | v) up to a constant
        per_group = sp.diags(1.0 / group_size) @ (A.T @ data.X)
        glob = popularity(data.X) / max(known.sum(), 1)
        beta = params["beta"]

        def score(users: np.ndarray) -> np.ndarray:
            return np.asarray(
                (data.user_attr[users] @ per_group).toarray() + beta * glob, np.float32
            )

        yield params, score
