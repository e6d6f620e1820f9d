"""A lexical text featuriser for machines without pretrained weights: TF-IDF, then a truncated SVD (LSA).

Deterministic: the vocabulary is sorted, the randomized SVD's test matrix is seeded and each component's sign
is fixed (largest absolute loading positive). Items without any word get mask 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

_WORD = re.compile(r"[^\W_]+")
# Up to this many matrix cells a dense SVD is exact and quick; above it a randomized one (Halko et al. 2011).
_DENSE_LIMIT = 20_000_000


def tfidf_matrix(
    texts: Sequence[str], min_df: int = 1
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Row-normalised TF-IDF (sublinear tf, smoothed idf) [n_texts, n_terms] and the sorted vocabulary."""
    x, vocab, _ = _tfidf(texts, min_df)
    return x, vocab


def _tfidf(
    texts: Sequence[str],
    min_df: int = 1,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(x, vocabulary, idf); with `fixed` = (vocabulary, idf) of an earlier corpus, words outside it are dropped."""
    tokens = [_WORD.findall(t.lower()) for t in texts]
    counts = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    flat = np.array([w for t in tokens for w in t], dtype=object)
    if fixed is None and len(flat) == 0:
        return (
            sp.csr_matrix((len(texts), 0), dtype=np.float32),
            np.array([], dtype=object),
            np.zeros(0, np.float32),
        )
    doc = np.repeat(np.arange(len(texts)), counts)
    if fixed is None:
        vocab, term = np.unique(flat, return_inverse=True)
    else:
        vocab, idf = fixed
        doc, term = _known_words(vocab, flat, doc)
    tf = sp.csr_matrix(
        (np.ones(len(term), dtype=np.float32), (doc, term)),
        shape=(len(texts), len(vocab)),
    )
    tf.sum_duplicates()
    if fixed is None:
        tf, vocab, idf = _frequent_words(tf, vocab, len(texts), min_df)
    return _weighted_rows(tf, idf), vocab, idf


def _known_words(
    vocab: np.ndarray, flat: np.ndarray, doc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(document, term index) of the words of `flat` found in the sorted `vocab`; the others are dropped."""
    term = np.searchsorted(vocab, flat) if len(flat) else np.zeros(0, np.int64)
    known = (
        (term < len(vocab)) & (vocab[np.minimum(term, max(len(vocab) - 1, 0))] == flat)
        if len(vocab)
        else np.zeros(len(flat), bool)
    )
    return doc[known], term[known]


def _frequent_words(
    tf: sp.csr_matrix, vocab: np.ndarray, n_texts: int, min_df: int
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(tf, vocabulary, smoothed idf) of the words in at least `min_df` of the `n_texts` texts."""
    df = np.bincount(tf.indices, minlength=len(vocab))
    keep = np.flatnonzero(df >= min_df)
    tf, df, vocab = tf[:, keep], df[keep], vocab[keep]
    idf = (np.log((1.0 + n_texts) / (1.0 + df)) + 1.0).astype(np.float32)
    return tf, vocab, idf


def _weighted_rows(tf: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear tf (in place) times idf, each row scaled to unit length (an all-zero row stays zero); float32."""
    tf.data = 1.0 + np.log(tf.data)
    x = (tf @ sp.diags(idf)).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return (
        (sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x).tocsr().astype(np.float32)
    )


def lexical_features(
    texts: Sequence[str], dim: int = 128, min_df: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(values [n, k] L2-normalised, mask [n], info) with k = min(dim, what the matrix's rank allows)."""
    x, vocab, _ = _tfidf(texts, min_df)
    mask = np.diff(x.indptr) > 0
    info: dict[str, Any] = {"vocabulary": int(len(vocab)), "min_df": min_df}
    if not mask.any():
        return np.zeros((len(texts), 0), np.float32), mask, info
    rows = x[mask]
    u, s, _, sign = _lsa(rows, dim, seed)
    z = u * (s * sign)[None, :]
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    values = np.zeros((len(texts), len(s)), dtype=np.float32)
    values[mask] = z
    info.update(
        dim=len(s),
        explained=float((s**2).sum() / max(float(rows.multiply(rows).sum()), 1e-12)),
    )
    return values, mask, info


def lexical_fold_in(
    corpus: Sequence[str],
    texts: Sequence[str],
    dim: int = 128,
    min_df: int = 1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of new `texts` in the basis `lexical_features(corpus, ...)` fitted (LSA fold-in: the corpus'
    vocabulary and idf, projected on its signed singular vectors), so vectors of both stay comparable.
    Words the corpus never had are ignored; a text with none of its words gets mask 0."""
    x, vocab, idf = _tfidf(corpus, min_df)
    mask = np.diff(x.indptr) > 0
    if not mask.any():
        return np.zeros((len(texts), 0), np.float32), np.zeros(len(texts), bool)
    _, _, vt, sign = _lsa(x[mask], dim, seed)
    new, _, _ = _tfidf(texts, min_df, fixed=(vocab, idf))
    z = np.asarray(new @ (vt.T * sign[None, :]), dtype=np.float64)
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    new_mask = (np.diff(new.indptr) > 0) & (norm[:, 0] > 0)
    return np.where(new_mask[:, None], z / np.maximum(norm, 1e-12), 0.0).astype(
        np.float32
    ), new_mask


def _lsa(
    rows: sp.csr_matrix, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Truncated SVD (u, s, vt) of the TF-IDF rows and each component's sign (largest absolute loading > 0)."""
    small = min(rows.shape)
    k = min(dim, small)
    if rows.shape[0] * rows.shape[1] <= _DENSE_LIMIT:
        u, s, vt = np.linalg.svd(rows.toarray().astype(np.float64), full_matrices=False)
        u, s, vt = u[:, :k], s[:k], vt[:k]
    else:
        u, s, vt = randomized_svd(rows, k, seed=seed)
    sign = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
    return u, s, vt, sign


def randomized_svd(
    x: sp.csr_matrix, k: int, oversample: int = 16, power_iters: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k singular triplets of a sparse matrix: seeded range finder with power iterations.

    ARPACK needs hundreds of sparse products for k=128; this needs 2 * (power_iters + 1) block products.
    Tall blocks are orthonormalised through the eigen-decomposition of their small Gram matrix, which stays
    fast where LAPACK's tall QR crawls under CPU contention.
    """
    x = x.astype(np.float64)
    p = min(k + oversample, min(x.shape))
    q = _orthonormal(x @ np.random.default_rng(seed).standard_normal((x.shape[1], p)))
    for _ in range(power_iters):
        q = _orthonormal(x @ _orthonormal(x.T @ q))
    b = (x.T @ q).T  # [p, n_cols]
    w, ub = np.linalg.eigh(b @ b.T)
    order = np.argsort(-w)[:k]
    s = np.sqrt(np.maximum(w[order], 0.0))
    ub = ub[:, order]
    vt = (ub.T @ b) / np.maximum(s, 1e-12)[:, None]
    return q @ ub, s, vt


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of y's columns (Gram eigen-decomposition; near-null directions are dropped)."""
    w, v = np.linalg.eigh(y.T @ y)
    keep = w > w.max() * 1e-10
    q = y @ (v[:, keep] / np.sqrt(w[keep]))
    # a second pass restores orthogonality lost to rounding
    w2, v2 = np.linalg.eigh(q.T @ q)
    return q @ (v2 / np.sqrt(w2))
