"""Metric definitions against hand-computed cases and a naive per-user reference (the protocol's formulas)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec.model.metrics import (
    activity_buckets,
    coverage,
    hit_matrix,
    intra_list_diversity,
    mean_metrics,
    novelty,
    per_user_accuracy,
    popularity_bias,
)


def _metrics(topk, truth, ks, n_items=10):
    tu = np.concatenate([[u] * len(t) for u, t in enumerate(truth)]).astype(int)
    ti = np.concatenate([list(t) for t in truth]).astype(int)
    hits = hit_matrix(np.asarray(topk), tu, ti, n_items)
    return per_user_accuracy(hits, np.array([len(t) for t in truth]), ks)


def test_hand_computed_case():
    # user 0: truth {1, 4, 7}, list [1, 2, 4, 5]: hits at ranks 1 and 3
    # user 1: truth {9}, list [3, 9, -1, -1]: hit at rank 2, list shorter than K
    m = _metrics([[1, 2, 4, 5], [3, 9, -1, -1]], [{1, 4, 7}, {9}], [2, 4])
    d = [1 / math.log2(j + 2) for j in range(4)]
    assert m["recall@2"].tolist() == pytest.approx([1 / 2, 1 / 1])
    assert m["recall@4"].tolist() == pytest.approx([2 / 3, 1.0])
    assert m["precision@4"].tolist() == pytest.approx([2 / 4, 1 / 4])
    assert m["hitrate@2"].tolist() == [1.0, 1.0]
    assert m["mrr@4"].tolist() == pytest.approx([1.0, 0.5])
    assert m["ndcg@2"].tolist() == pytest.approx([d[0] / (d[0] + d[1]), d[1] / d[0]])
    assert m["ndcg@4"].tolist() == pytest.approx(
        [(d[0] + d[2]) / sum(d[:3]), d[1] / d[0]]
    )
    assert mean_metrics(m)["recall@4"] == pytest.approx((2 / 3 + 1) / 2)


def test_users_without_truth_are_not_averaged_and_short_lists_miss():
    m = _metrics([[1, 2], [3, 4]], [{1}, set()], [5])
    assert np.isnan(m["recall@5"][1])
    assert mean_metrics(m)["recall@5"] == 1.0
    assert m["precision@5"][0] == pytest.approx(1 / 5)


def _naive(lst, truth, k):
    hits = [1.0 if i in truth else 0.0 for i in [x for x in lst if x >= 0][:k]]
    idcg = sum(1 / math.log2(j + 2) for j in range(min(len(truth), k)))
    first = next((j for j, h in enumerate(hits) if h), None)
    return {
        "recall": sum(hits) / min(len(truth), k),
        "ndcg": sum(h / math.log2(j + 2) for j, h in enumerate(hits)) / idcg,
        "precision": sum(hits) / k,
        "hitrate": float(any(hits)),
        "mrr": 0.0 if first is None else 1 / (first + 1),
    }


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.permutations(list(range(12))),
            st.sets(st.integers(0, 11), min_size=1, max_size=8),
            st.integers(0, 12),
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True),
)
def test_vectorised_equals_naive_reference(cases, ks):
    width = 12
    topk = np.array(
        [[x if j < n else -1 for j, x in enumerate(p)] for p, _, n in cases]
    )
    m = _metrics(topk, [t for _, t, _ in cases], ks, n_items=width)
    for u, (_p, t, _n) in enumerate(cases):
        for k in ks:
            ref = _naive(topk[u].tolist(), t, k)
            for name, v in ref.items():
                assert m[f"{name}@{k}"][u] == pytest.approx(v), (name, k)
                assert 0.0 <= m[f"{name}@{k}"][u] <= 1.0


def test_beyond_accuracy_hand_cases():
    topk = np.array([[0, 1], [0, 2], [-1, -1]])
    assert coverage(topk, 4) == 0.75
    pop = np.array([3, 1, 0, 0])
    # p = (pop + 1) / (n_users + 1) with 3 users: items 0,1,0,2 -> 4/4, 2/4, 4/4, 1/4
    assert novelty(topk, pop, 3) == pytest.approx((0 + 1 + 0 + 2) / 4)
    b = popularity_bias(topk, pop, np.arange(4))
    assert b["arp"] == pytest.approx(7 / 4)
    assert b["arp_ratio"] == pytest.approx((7 / 4) / 1.0)
    # the top 20% of 4 candidates is item 0
    assert b["head_share"] == pytest.approx(2 / 4)
    assert math.isnan(
        popularity_bias(topk, np.zeros(4, int), np.arange(4))["head_share"]
    )


def test_intra_list_diversity():
    f = np.array([[1, 0], [0, 1], [1, 0], [2, 0]], np.float32)
    mask = np.array([True, True, True, False])
    # list 1: items 0, 1 orthogonal -> 1; list 2: items 0, 2 identical -> 0; list 3: item 3 has no content -> skipped
    assert intra_list_diversity(
        np.array([[0, 1], [0, 2], [3, 0]]), f, mask
    ) == pytest.approx(0.5)
    assert intra_list_diversity(np.array([[0, 1, 2]]), f, mask) == pytest.approx(
        (1 + 0 + 1) / 3
    )


def test_activity_buckets():
    idx, labels = activity_buckets(np.array([0, 1, 5, 6, 20, 21, 300]))
    assert labels == ["0", "1-5", "6-20", "21-50", "51-200", "201+"]
    assert idx.tolist() == [0, 1, 1, 2, 2, 3, 5]


def test_validation_rows_are_a_seeded_sample_of_users_once_users_times_candidates_is_large(
    monkeypatch,
):
    """Model selection scores every user while users x candidates fits VALIDATION_CELLS, then a seeded sample of
    whole users (their rows kept as they are, the others emptied without stored zeros)."""
    import graphrec.model.metrics as metrics

    truth = sp.random(
        500, 40, density=0.1, format="csr", random_state=1, dtype=np.float32
    )
    truth.data[:] = 1.0
    with_truth = np.flatnonzero(np.diff(truth.indptr) > 0)
    # 500 x 40 cells fit: every user
    assert (metrics.sample_validation_rows(truth, 40) != truth).nnz == 0
    monkeypatch.setattr(metrics, "VALIDATION_CELLS", 100 * 40)
    assert (
        metrics.validation_users(40) == 100
        and metrics.validation_users(40, cap=30) == 30
    )
    a, b = (
        metrics.sample_validation_rows(truth, 40, seed=3),
        metrics.sample_validation_rows(truth, 40, seed=3),
    )
    kept = np.flatnonzero(np.diff(a.indptr) > 0)
    assert len(kept) == 100 and set(kept) <= set(with_truth) and (a != b).nnz == 0
    # whole rows, no explicit zeros
    assert (a[kept] != truth[kept]).nnz == 0 and a.nnz == truth[kept].nnz
    other = metrics.sample_validation_rows(truth, 40, seed=4)
    assert set(np.flatnonzero(np.diff(other.indptr) > 0)) != set(kept)


def test_bootstrap_intervals_are_paired_over_users():
    from graphrec.model.metrics import bootstrap_intervals

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 400)
    same = bootstrap_intervals(base, base.copy())
    # paired: the same users in every resample
    assert same["ratio"] == pytest.approx([1.0, 1.0])
    assert same["ours"][0] < base.mean() < same["ours"][1]
    win = bootstrap_intervals(base + 0.05, base)
    assert win["ratio"][0] > 1.0  # a small but consistent gain is a win
    noise = bootstrap_intervals(base + rng.normal(0, 0.5, 400), base)
    assert noise["ratio"][0] < 1.0 < noise["ratio"][1]  # noise is not
    alone = bootstrap_intervals(np.array([0.5, np.nan, 0.7]))
    assert (
        alone["theirs"] is None
        and alone["ratio"] is None
        and 0.5 <= alone["ours"][0] <= alone["ours"][1] <= 0.7
    )
