"""Closed-form linear parts of the scoring space, each linear in the data (no n_items^2 or d_content^2 object
unless a size check made before allocating says it fits).

Low-rank EASE. EASE (Steck 2019) of the rank-k approximation X ~ U S V' (randomized SVD, O(nnz k)):
P = (V S^2 V' + lam I)^-1 = V diag(1/(s^2+lam)) V' + (I - V V')/lam and B = I - P diag(1/P_jj), so for j != i

    B_ij = [V diag(s^2/(s^2+lam)) V']_ij / (lam P_jj),    lam P_jj = 1 - sum_m V_jm^2 s_m^2/(s_m^2+lam)

i.e. x_u B[:, j] = (x_u V diag(f)) . (V_j / lam P_jj) with f = s^2/(s^2+lam): a dot product of a k-dim user
vector (`user_basis` applied to the history) and a k-dim item vector. B's diagonal only scores the user's own
items, which are always excluded. Exact EASE when k >= rank(X); on MovieLens latest-small k=512 keeps 99.7% of
EASE's warm NDCG@20 (BENCHMARKS.md, "One scoring space").

Ideal low-pass graph filter (GF-CF, Shen et al. 2021: the "ideal" term of its filter). On the normalised
user-item graph R~ = D_u^-1/2 X D_i^-1/2 with top-k right singular vectors V, the filter D_i^-1/2 V V' D_i^1/2 keeps
the k smoothest item signals of the graph: a user's score for item j is

    x_u D_i^-1/2 V V_j' d_j^1/2 = (x_u @ user_basis) . item_j,  user_basis = D_i^-1/2 V,  item = D_i^1/2 V

a dot product of k-dim vectors, as EASE's. Items without interactions get zero rows.

Content map. Ridge regression from item content f (sparse: modality blocks, attribute and entity multi-hots)
to the items' low-rank EASE vectors, with an unpenalised intercept: W = V_c diag(1/(e+lam)) V_c' F_c' Y_c over
the centred content F_c = U_c diag(sqrt e) V_c' of the warm items. (V_c, e) come from the d x d Gram matrix,
the n x n kernel matrix (dual form) or, when neither fits RIDGE_DENSE_BYTES, a randomized SVD of rank RIDGE_RANK;
content
columns no fitted item uses are dropped first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from graphrec.core.errors import InputError

log = logging.getLogger(__name__)

# a dense Gram / kernel matrix up to this size; past it the randomized path
RIDGE_DENSE_BYTES = 2 << 30
RIDGE_RANK = 1024  # rank of the randomized content basis
# the randomized SVD's dense blocks ((n_rows + n_cols) x (k + oversample) float64, ~4 copies)
SVD_BYTES = 8 << 30

Product = Callable[[np.ndarray], np.ndarray]


def randomized_svd(
    matmul: Product,
    rmatmul: Product,
    shape: tuple[int, int],
    k: int,
    seed: int = 0,
    n_iter: int = 4,
    oversample: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k singular values s [k] and right singular vectors V [n, k] of an m x n operator A given by
    matmul(Z) = A Z and rmatmul(Q) = A' Q (Halko, Martinsson & Tropp 2011, with power iterations)."""
    m, n = shape
    width = min(k + oversample, m, n)
    if width == 0:
        return np.zeros(0), np.zeros((n, 0))
    # the widest sketch whose dense blocks fit the budget
    fits = SVD_BYTES // (4 * 8 * (m + n))
    if width > fits:
        if fits <= oversample:
            raise InputError(
                f"a randomized SVD of a {m} x {n} matrix does not fit {SVD_BYTES / 2**30:.0f} GiB "
                "even at rank 1"
            )
        log.warning(
            "rank %d of a %d x %d matrix would need %.1f GiB: using rank %d",
            k,
            m,
            n,
            4 * 8 * (m + n) * width / 2**30,
            fits - oversample,
        )
        k, width = fits - oversample, fits
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(matmul(rng.standard_normal((n, width))))
    for _ in range(n_iter):
        z, _ = np.linalg.qr(rmatmul(q))
        q, _ = np.linalg.qr(matmul(z))
    _, s, vt = np.linalg.svd(rmatmul(q).T, full_matrices=False)
    k = min(k, width)
    return s[:k], vt[:k].T


def interaction_svd(
    x: sp.csr_matrix, k: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """s [k], V [n_items, k] of the user x item matrix (float64); items without interactions get exact zero
    rows (round-off would leave them ~1e-17)."""
    x = x.astype(np.float64).tocsr()
    xt = x.T.tocsr()
    s, v = randomized_svd(lambda z: x @ z, lambda q: xt @ q, x.shape, k, seed)
    v[np.diff(xt.indptr) == 0] = 0.0
    return s, v


def ease_factors(
    s: np.ndarray, v: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """(user_basis [n_items, k], item [n_items, k]) float32 of low-rank EASE: a user's vector is
    history @ user_basis; items without interactions get zero rows in both."""
    f = s**2 / (s**2 + lam)
    lam_p = 1.0 - (v**2) @ f
    return (v * f).astype(np.float32), (v / np.maximum(lam_p, 1e-6)[:, None]).astype(
        np.float32
    )


def ideal_lowpass(
    x: sp.csr_matrix, k: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(user_basis [n_items, k], item [n_items, k]) float32 of the ideal low-pass filter of the normalised
    user-item graph (module docstring): a user's vector is history @ user_basis."""
    x = x.astype(np.float64).tocsr()
    inv_sqrt = lambda d: np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1e-12)), 0.0)  # noqa: E731
    d_item = np.asarray(x.sum(axis=0)).ravel()
    rn = (
        sp.diags(inv_sqrt(np.asarray(x.sum(axis=1)).ravel()))
        @ x
        @ sp.diags(inv_sqrt(d_item))
    ).tocsr()
    _, v = interaction_svd(rn, k, seed)
    return (
        (v * inv_sqrt(d_item)[:, None]).astype(np.float32),
        (v * np.sqrt(d_item)[:, None]).astype(np.float32),
    )


@dataclass
class ContentMap:
    """Item content -> item vector: (f[:, columns] - feature_mean) @ weights + target_mean. Only the content
    columns that the fitted items use have weights (a KG with millions of entity columns stays small)."""

    weights: np.ndarray  # float32 [d_used, k]
    feature_mean: np.ndarray  # float32 [d_used]
    target_mean: np.ndarray  # float32 [k]
    columns: np.ndarray  # int64 [d_used]: the content columns the weights belong to

    def __call__(self, f: sp.csr_matrix) -> np.ndarray:
        shift = self.target_mean - self.feature_mean @ self.weights
        return np.asarray(f.tocsr()[:, self.columns] @ self.weights, np.float32) + shift

    def target_columns(self, which: slice) -> ContentMap:
        """The map to some of its targets only (a ridge map treats every target column on its own)."""
        return ContentMap(
            np.ascontiguousarray(self.weights[:, which]),
            self.feature_mean,
            np.ascontiguousarray(self.target_mean[which]),
            self.columns,
        )


def fit_content_maps(
    f: sp.csr_matrix, y: np.ndarray, lambdas: Sequence[float], seed: int = 0
) -> list[ContentMap]:
    """One ridge map per lam from content rows f [n, d_f] to targets y [n, k] (same rows), with an unpenalised
    intercept. Unused columns are dropped; then the d x d Gram matrix (primal), the n x n kernel matrix (dual,
    W = F_c' (K + lam I)^-1 Y_c) or a randomized SVD of rank RIDGE_RANK, whichever fits: memory stays
    O(d k + min(d, n)^2), never d x n."""
    f = f.astype(np.float64).tocsr()
    columns = np.flatnonzero(np.diff(f.tocsc().indptr) > 0)
    f = f[:, columns]
    n, d = f.shape
    y = np.asarray(y, np.float64)
    y_mean = y.mean(axis=0) if n else np.zeros(y.shape[1])
    yc = y - y_mean
    mean = np.asarray(f.mean(axis=0)).ravel() if n else np.zeros(d)
    if min(n, d) == 0:
        weights = [np.zeros((d, y.shape[1])) for _ in lambdas]
    elif 8 * n * n <= RIDGE_DENSE_BYTES and (n < d or 8 * d * d > RIDGE_DENSE_BYTES):
        weights = _dual_ridge(f, mean, yc, lambdas)
    else:
        weights = _primal_ridge(f, mean, yc, lambdas, seed)
    return [
        ContentMap(
            w.astype(np.float32),
            mean.astype(np.float32),
            y_mean.astype(np.float32),
            columns,
        )
        for w in weights
    ]


def _dual_ridge(
    f: sp.csr_matrix, mean: np.ndarray, yc: np.ndarray, lambdas: Sequence[float]
) -> list[np.ndarray]:
    """Ridge weights [d, k] per lam from the n x n kernel of the centred content: W = F_c' (K + lam I)^-1 Y_c."""
    fm = f @ mean
    kern = (f @ f.T).toarray() - fm[:, None] - fm[None, :] + mean @ mean  # F_c F_c'
    e, u = np.linalg.eigh(kern)
    uy = u.T @ yc
    ft = f.T.tocsr()
    out = []
    for lam in lambdas:
        z = u @ (uy / np.maximum(e + lam, 1e-12)[:, None])  # (K + lam I)^-1 Y_c
        out.append(ft @ z - np.outer(mean, z.sum(axis=0)))  # F_c' z
    return out


def _primal_ridge(
    f: sp.csr_matrix,
    mean: np.ndarray,
    yc: np.ndarray,
    lambdas: Sequence[float],
    seed: int,
) -> list[np.ndarray]:
    """Ridge weights [d, k] per lam in the eigenbasis (V_c, e) of F_c'F_c: V_c diag(1/(e+lam)) V_c' F_c' Y_c."""
    e, vc = _content_eigenbasis(f, mean, seed)
    # V_c' F_c' Y_c (the centring of F cancels: Y_c sums to 0)
    proj = vc.T @ np.asarray(f.T @ yc)
    return [vc @ (proj / np.maximum(e + lam, 1e-12)[:, None]) for lam in lambdas]


def _content_eigenbasis(
    f: sp.csr_matrix, mean: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(e, V_c) of F_c'F_c: exact from the d x d Gram matrix when it fits RIDGE_DENSE_BYTES, else of rank RIDGE_RANK.

    The randomized SVD multiplies by F_c = F - 1 mean' without forming it, so sparse content stays sparse."""
    n, d = f.shape
    if 8 * d * d <= RIDGE_DENSE_BYTES:  # primal: F_c'F_c = F'F - n mean mean'
        return np.linalg.eigh((f.T @ f).toarray() - n * np.outer(mean, mean))
    ft = f.T.tocsr()
    s_, vc = randomized_svd(
        lambda z: f @ z - np.outer(np.ones(n), mean @ z),
        lambda q: ft @ q - np.outer(mean, q.sum(axis=0)),
        (n, d),
        RIDGE_RANK,
        seed,
    )
    return s_**2, vc
