"""Full-ranking accuracy and beyond-accuracy metrics of top-K lists, vectorised over users.

Lists are int arrays [n_users, K] of item indices, best first, padded with -1 where a user has fewer
than K allowed candidates. Truth is the set of held-out items per user. Definitions (they agree with the
benchmark protocol, /work/shared/contract/protocol.py):

    Recall@K      = hits in top K / min(|truth|, K)
    RecallFull@K  = hits in top K / |truth|          (`recall_full@K`: LightGCN's and RecBole's Recall@K)
    Precision@K   = hits in top K / K
    HitRate@K     = 1 if any hit in top K
    MRR@K         = 1 / rank of the first hit in top K (0 if none)
    NDCG@K        = sum_j hit_j / log2(j + 2)  /  sum_{j < min(|truth|, K)} 1 / log2(j + 2)

averaged over users with at least one held-out item (users without a list count as all misses).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from graphrec.core.feature_store import unit_rows

ACCURACY = ("recall", "recall_full", "ndcg", "precision", "hitrate", "mrr")
# The same definitions in words, for metrics.json and the report. Recall has two definitions in the field: a user
# with more held-out items than K cannot reach 1 under the second, so papers' numbers are lower for heavy users.
DEFINITIONS = {
    "recall": "hits in the top K / min(|truth|, K): 1 when the list holds K hits or every held-out item",
    "recall_full": "hits in the top K / |truth|: Recall@K as LightGCN and RecBole papers report it (equals "
    "recall when |truth| <= K)",
    "ndcg": "sum of 1 / log2(rank + 1) over the hits / the same sum for min(|truth|, K) hits at the top",
    "precision": "hits in the top K / K",
    "hitrate": "1 if any hit in the top K, else 0",
    "mrr": "1 / rank of the first hit in the top K (0 if none)",
}
# Model selection (early stopping, the ranker's grids) scores at most this many users x candidates per validation
# set: every user while the catalogue is small (MovieLens-1M: 6,040 x 3,700), a seeded sample of users once it is
# large, so selection costs grow linearly with the data, not with users x items.
VALIDATION_CELLS = 1 << 26
# Train-interaction counts that separate the user-activity buckets: [0], [1, 5], [6, 20], ...
ACTIVITY_EDGES = (0, 1, 6, 21, 51, 201)


def hit_matrix(
    topk: np.ndarray, truth_users: np.ndarray, truth_items: np.ndarray, n_items: int
) -> np.ndarray:
    """bool [n_lists, K]: is topk[r, j] among the truth items of list r (pairs truth_users[e], truth_items[e])."""
    topk = np.asarray(topk, dtype=np.int64)
    keys = np.unique(
        np.asarray(truth_users, np.int64) * (n_items + 1)
        + np.asarray(truth_items, np.int64)
    )
    rows = np.arange(topk.shape[0], dtype=np.int64)[:, None]
    query = rows * (n_items + 1) + topk
    pos = np.searchsorted(keys, query)
    found = (
        keys[np.minimum(pos, len(keys) - 1)] == query
        if len(keys)
        else np.zeros(topk.shape, bool)
    )
    return found & (topk >= 0)


def per_user_accuracy(
    hits: np.ndarray, n_truth: np.ndarray, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-list metric values {"recall@10": float64 [n_lists], ...} from a hit matrix and truth sizes.

    Lists with n_truth == 0 get NaN (they are not averaged)."""
    hits = np.asarray(hits, dtype=bool)
    n_truth = np.asarray(n_truth, dtype=np.int64)
    width = hits.shape[1]
    kmax = max(ks)
    if width < kmax:  # short lists: the missing slots are misses
        hits = np.concatenate(
            [hits, np.zeros((hits.shape[0], kmax - width), bool)], axis=1
        )
    discount = 1.0 / np.log2(np.arange(kmax) + 2.0)
    # ideal[n] = IDCG with n relevant items
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    valid = n_truth > 0
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), kmax)
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in ks:
            h = hits[:, :k]
            n_hit = h.sum(axis=1).astype(np.float64)
            denom = np.minimum(n_truth, k)
            out[f"recall@{k}"] = np.where(valid, n_hit / denom, np.nan)
            out[f"recall_full@{k}"] = np.where(valid, n_hit / n_truth, np.nan)
            out[f"precision@{k}"] = np.where(valid, n_hit / k, np.nan)
            out[f"hitrate@{k}"] = np.where(
                valid, (n_hit > 0).astype(np.float64), np.nan
            )
            out[f"mrr@{k}"] = np.where(
                valid, np.where(first < k, 1.0 / (first + 1.0), 0.0), np.nan
            )
            out[f"ndcg@{k}"] = np.where(
                valid, (h * discount[:k]).sum(axis=1) / ideal[denom], np.nan
            )
    return out


def mean_metrics(
    per_user: dict[str, np.ndarray], mask: np.ndarray | None = None
) -> dict[str, float]:
    """Average of each per-user metric over users with truth (and in `mask`); NaN-free users only."""
    out = {}
    for name, v in per_user.items():
        sel = ~np.isnan(v) if mask is None else (~np.isnan(v) & mask)
        out[name] = float(v[sel].mean()) if sel.any() else float("nan")
    return out


def bootstrap_intervals(
    ours: np.ndarray,
    theirs: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float] | None]:
    """Percentile-bootstrap intervals over users: of the mean of `ours` (per-user values), of `theirs` (the same
    users, another system) and of the ratio of the two means, all from the same resamples of users (paired), so
    a ratio whose interval holds 1 is not a win. NaN users are left out of both."""
    keep = ~np.isnan(ours) if theirs is None else ~np.isnan(ours) & ~np.isnan(theirs)
    a = ours[keep]
    b = None if theirs is None else theirs[keep]
    if len(a) == 0:
        return {"ours": None, "theirs": None, "ratio": None}
    rng = np.random.default_rng(seed)
    means_a, means_b = np.empty(resamples), np.empty(resamples)
    for at in range(0, resamples, 100):  # 100 resamples at a time: memory 100 x users
        idx = rng.integers(0, len(a), size=(min(100, resamples - at), len(a)))
        means_a[at : at + len(idx)] = a[idx].mean(axis=1)
        if b is not None:
            means_b[at : at + len(idx)] = b[idx].mean(axis=1)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    interval = lambda v: [float(x) for x in np.percentile(v, q)]  # noqa: E731
    if b is None:
        return {"ours": interval(means_a), "theirs": None, "ratio": None}
    ratio = means_a / np.where(means_b > 0, means_b, np.nan)
    return {
        "ours": interval(means_a),
        "theirs": interval(means_b),
        "ratio": interval(ratio) if np.isfinite(ratio).all() else None,
    }


def item_popularity(train_items: np.ndarray, n_items: int) -> np.ndarray:
    """Number of training interactions of each item (int64 [n_items])."""
    return np.bincount(np.asarray(train_items, np.int64), minlength=n_items)


def coverage(topk: np.ndarray, n_candidates: int) -> float:
    """Catalogue coverage: share of the candidate items that appear in at least one list."""
    rec = np.unique(topk[topk >= 0])
    return float(len(rec) / n_candidates) if n_candidates else float("nan")


def novelty(topk: np.ndarray, popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2 p(i) of recommended items, p(i) = (pop(i) + 1) / (n_users + 1).

    The +1 smoothing gives never-seen (cold) items a finite, maximal novelty."""
    rec = topk[topk >= 0]
    if rec.size == 0:
        return float("nan")
    p = (popularity[rec] + 1.0) / (n_users + 1.0)
    return float((-np.log2(p)).mean())


def popularity_bias(
    topk: np.ndarray, popularity: np.ndarray, candidates: np.ndarray
) -> dict[str, float]:
    """Average recommendation popularity (ARP), its ratio to the candidates' mean popularity, and the share
    of recommendations at least as popular as the candidate at the top-20% cut (head share; NaN when that
    candidate was never interacted with, e.g. among cold items)."""
    rec = topk[topk >= 0]
    cand_pop = popularity[candidates].astype(np.float64)
    if rec.size == 0 or cand_pop.size == 0:
        return {
            "arp": float("nan"),
            "arp_ratio": float("nan"),
            "head_share": float("nan"),
        }
    arp = float(popularity[rec].mean())
    # Head = candidates at least as popular as the one at the 20% cut; undefined when no candidate was ever seen.
    threshold = np.sort(cand_pop)[::-1][max(1, int(round(0.2 * len(cand_pop)))) - 1]
    mean_pop = float(cand_pop.mean())
    head_share = (
        float((popularity[rec] >= threshold).mean()) if threshold > 0 else float("nan")
    )
    return {
        "arp": arp,
        "arp_ratio": arp / mean_pop if mean_pop > 0 else float("nan"),
        "head_share": head_share,
    }


def intra_list_diversity(
    topk: np.ndarray, features: np.ndarray, mask: np.ndarray, batch: int = 512
) -> float:
    """Mean pairwise cosine distance (1 - cos) between the content vectors of items in the same list.

    Only pairs of items that both have content count; lists with fewer than two such items are skipped."""
    f, has = unit_rows(features, mask)
    total, count = 0.0, 0
    for s in range(0, topk.shape[0], batch):
        t = topk[s : s + batch]
        ok = (t >= 0) & has[np.maximum(t, 0)]
        # [b, K, d], rows without content are zero
        v = f[np.maximum(t, 0)] * ok[..., None]
        sim = np.einsum("bkd,bjd->bkj", v, v)
        pair = ok[:, :, None] & ok[:, None, :]
        diag = np.arange(t.shape[1])
        pair[:, diag, diag] = False  # no self-pairs
        n_pairs = pair.sum(axis=(1, 2))
        keep = n_pairs > 0
        if keep.any():
            dist = ((1.0 - sim) * pair).sum(axis=(1, 2))
            total += float((dist[keep] / n_pairs[keep]).sum())
            count += int(keep.sum())
    return total / count if count else float("nan")


def activity_buckets(
    train_counts: np.ndarray, edges: Sequence[int] = ACTIVITY_EDGES
) -> tuple[np.ndarray, list[str]]:
    """Bucket index of each user by training-interaction count, and the bucket labels ("0", "1-5", ..., "201+")."""
    edges = list(edges)
    labels = []
    for lo, hi in zip(edges, edges[1:] + [None]):
        labels.append(
            f"{lo}+" if hi is None else (str(lo) if hi - 1 == lo else f"{lo}-{hi - 1}")
        )
    return np.searchsorted(
        np.asarray(edges), np.asarray(train_counts), side="right"
    ) - 1, labels


def validation_users(n_candidates: int, cap: int | None = None) -> int:
    """How many users a validation set may score among `n_candidates` items (VALIDATION_CELLS), at most `cap`."""
    n = max(1, VALIDATION_CELLS // max(n_candidates, 1))
    return n if cap is None else min(n, cap)


def sample_validation_rows(
    truth: sp.csr_matrix, n_candidates: int, seed: int = 0
) -> sp.csr_matrix:
    """`truth` [U, I] with only a seeded random sample of its users' rows kept, `validation_users` of them (all
    when they fit): the held-out set that model selection scores."""
    truth = truth.tocsr()
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    n = validation_users(n_candidates)
    if len(users) <= n:
        return truth
    keep = np.zeros(truth.shape[0], bool)
    keep[np.random.default_rng(seed).choice(users, n, replace=False)] = True
    coo = truth.tocoo()
    kept = keep[coo.row]
    return sp.csr_matrix(
        (coo.data[kept], (coo.row[kept], coo.col[kept])), shape=truth.shape
    )


@torch.no_grad()
def embedding_accuracy(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    truth: sp.csr_matrix,
    exclude: sp.csr_matrix,
    candidates: np.ndarray,
    k: int = 20,
    chunk: int = 2048,
) -> tuple[float, float, int]:
    """(NDCG@k, Recall@k, users counted) of dot-product lists among `candidates`, excluded items removed.

    truth / exclude: [U, I] binary CSR. Users without truth among the candidates do not count. The metric
    definitions are `per_user_accuracy`'s; this only builds the lists from embeddings, `chunk` users at a time.
    """
    truth = truth[:, candidates].tocsr()
    exclude = exclude[:, candidates].tocsr()
    n_true = np.diff(truth.indptr)
    users = np.flatnonzero(n_true > 0)
    if len(users) == 0 or len(candidates) == 0:
        return float("nan"), float("nan"), 0
    kk = min(k, len(candidates))
    v = item_emb[torch.as_tensor(candidates, device=item_emb.device)]
    ndcg = recall = 0.0
    for s in range(0, len(users), chunk):
        u = users[s : s + chunk]
        scores = user_emb[torch.as_tensor(u, device=user_emb.device)] @ v.T
        ex = torch.as_tensor(exclude[u].toarray(), device=scores.device)
        top = (
            scores.masked_fill(ex, float("-inf")).topk(kk, dim=1).indices.cpu().numpy()
        )
        acc = per_user_accuracy(
            np.take_along_axis(truth[u].toarray(), top, axis=1), n_true[u], [k]
        )
        ndcg += float(acc[f"ndcg@{k}"].sum())
        recall += float(acc[f"recall@{k}"].sum())
    return ndcg / len(users), recall / len(users), len(users)
