"""What every benchmarked system implements, and the inputs it gets.

A system fits on a binary user x item matrix (train during selection, train+valid for the final refit) plus
content, and returns a scorer: user indices -> dense float32 scores over all items. The runner, not the
system, applies the task's candidate rule and removes every known interaction, so all systems rank alike.
`fit` is a generator so iterative systems can yield several checkpoints (e.g. epochs) during selection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

Scorer = Callable[[np.ndarray], np.ndarray]
WARM, COLD_ITEM, COLD_USER, MIXED = "warm", "cold-item", "cold-user", "mixed"
TASKS = (
    WARM,
    COLD_ITEM,
    COLD_USER,
    MIXED,
)  # mixed: one list over warm and cold items, test + cold_test


@dataclass
class FitInput:
    # float32 binary [n_users, n_items]: the interactions the system may learn from
    X: sp.csr_matrix
    # float32 [n_items, n_attr] multi-hot (genres, decade, tags, ...)
    item_attr: sp.csr_matrix
    user_attr: sp.csr_matrix | None
    text: np.ndarray  # float32 [n_items, d] L2-normalised pretrained text embeddings
    seed: int
    threads: int = 2
    workspace: Any = (
        None  # the graphrec workspace of this split (only graphrec uses it)
    )
    task: str = WARM
    final: bool = False  # True for the refit on train+valid
    triples: Any = (
        None  # the KG-only catalogue's triples file (its only content), else None
    )


class System:
    """A recommender under test. Subclasses set name/tasks/grid and implement `fit`."""

    name: str = ""
    tasks: tuple[str, ...] = (WARM,)
    family: str = ""

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        return [{}]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict[str, Any], Scorer]]:
        """Yield (params actually used, scorer); with `checkpoints`, may yield intermediate states too."""
        raise NotImplementedError


def popularity(X: sp.csr_matrix) -> np.ndarray:
    return np.asarray(X.sum(axis=0)).ravel().astype(np.float32)


def top_k_sparse(S: np.ndarray, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of each row of a dense similarity matrix (the kNN pruning)."""
    n = S.shape[0]
    k = min(k, S.shape[1])
    idx = np.argpartition(-S, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(S, idx, axis=1)
    return sp.csr_matrix(
        (vals.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=S.shape
    )
