"""LightFM (Kula 2015) with WARP loss: pure collaborative, and hybrid with item features (genres, decade,
tags) and user features (age band, gender, ...) — the classic cold-start baseline. Rows also get their own
identity feature on the warm task only: for cold items/users it would stay an untrained random vector."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.peers.base import COLD_ITEM, COLD_USER, WARM, FitInput, Scorer, System

EPOCH_STEPS = (10, 20, 40)


def _features(
    attr: sp.csr_matrix | None, n: int, identity: bool
) -> sp.csr_matrix | None:
    blocks = ([sp.identity(n, np.float32, format="csr")] if identity else []) + (
        [attr] if attr is not None else []
    )
    if not blocks:
        return None
    F = sp.hstack(blocks, format="csr").astype(np.float32)
    norm = np.asarray(F.sum(axis=1)).ravel()
    # rows sum to 1, as LightFM recommends
    F = sp.diags(1.0 / np.maximum(norm, 1e-9)) @ F
    return F.tocsr()


def _train(
    data: FitInput, params: dict[str, Any], item_f, user_f, checkpoints: bool
) -> Iterator[tuple[dict, Scorer]]:
    from lightfm import LightFM

    model = LightFM(
        no_components=params["components"],
        loss="warp",
        learning_rate=params["learning_rate"],
        item_alpha=1e-6,
        user_alpha=1e-6,
        random_state=data.seed,
    )
    X = data.X.tocoo()
    stops = (
        [e for e in EPOCH_STEPS if e <= params["epochs"]]
        if checkpoints
        else [params["epochs"]]
    )
    done = 0
    for stop in stops:
        model.fit_partial(
            X,
            user_features=user_f,
            item_features=item_f,
            epochs=stop - done,
            num_threads=data.threads,
        )
        done = stop
        ib, ie = model.get_item_representations(item_f)
        ub, ue = model.get_user_representations(user_f)
        ie, ue, ib = ie.astype(np.float32), ue.astype(np.float32), ib.astype(np.float32)
        yield (
            {**params, "epochs": stop},
            (lambda users, ue=ue, ie=ie, ib=ib: ue[users] @ ie.T + ib[None, :]),
        )


class LightFMPure(System):
    name, family, tasks = "lightfm", "factorisation", (WARM,)
    checkpointed = True  # epochs are selected on validation

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        return [
            {
                "components": 64,
                "learning_rate": 0.05,
                "epochs": 20 if quick else max(EPOCH_STEPS),
            }
        ]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        yield from _train(data, params, None, None, checkpoints)


class LightFMHybrid(System):
    name, family, tasks = "lightfm-hybrid", "hybrid", (WARM, COLD_ITEM, COLD_USER)
    checkpointed = True

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        base = {
            "components": 64,
            "learning_rate": 0.05,
            "epochs": 20 if quick else max(EPOCH_STEPS),
        }
        return [{**base, "identity": task == WARM}]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        n_users, n_items = data.X.shape
        item_f = _features(data.item_attr, n_items, params["identity"])
        user_f = _features(data.user_attr, n_users, params["identity"])
        if user_f is None:  # no user attributes: users are their identity
            user_f = sp.identity(n_users, np.float32, format="csr")
        yield from _train(data, params, item_f, user_f, checkpoints)
