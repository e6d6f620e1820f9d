"""Issue 12: candidates for ONE scoring space, score(u, i) = user_vec[u] . item_vec[i].

Every candidate below returns (user_vec [n_users, d], item_vec [n_items, d]); warm, cold and mixed lists are
ranked by that dot product only (items the user was given excluded). Protocol = benchmarks/run.py: select on
valid / cold_valid by NDCG@20 with the model fit on train, refit the chosen setting on train+valid, rank all
candidates (warm: train items; cold: cold_valid+cold_test items; mixed: both) and score test / cold_test.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        python -m benchmarks.candidates --seeds 1 --candidates ease,lrease,gfcf,elsa,ials

Candidates (X = binary user x item matrix the model is fit on, x_u its row, "active" = items with interactions):
  ease     EASE (Steck 2019), reference. Not fixed-dim: user_vec = x_u (n_items dims), item_vec = B[:, i].
  lrease   EASE of the rank-k approximation of X, from a randomized SVD X ~ U S V' (linear in nnz):
           P = (V S^2 V' + lam I)^-1 = V diag(1/(s^2+lam)) V' + (I - V V')/lam, B = I - P diag(1/P_jj), so for j != i
           B_ij = [V diag(s^2/(s^2+lam)) V']_ij / (lam P_jj) and
             user_vec = x_u V diag(s^2/(s^2+lam))          item_vec_j = V_j / (1 - sum_m V_jm^2 s_m^2/(s_m^2+lam))
           (the B diagonal / identity part only scores the user's own items, which are excluded). Exact EASE when
           k = rank(X) (<= n_users: on ml-latest-small that is 610).
  gfcf     GF-CF (Shen et al. 2021): s_u = x_u R~'R~ + alpha x_u D^-1/2 V_k V_k' D^1/2, R~ = Du^-1/2 X Di^-1/2 = P S V'.
           R~'R~ = V S^2 V' has rank <= n_users: as a dot product it needs n_users dims (user_vec = x_u R~',
           item_vec = R~[:, i]), which grows with the data, so the fixed-dim version truncates it to the same V_k:
             user_vec = [x_u V_k S_k^2 , alpha x_u D^-1/2 V_k]      item_vec = [V_k , D^1/2 V_k]      (2k dims)
           "gfcf-exact" keeps the full linear part (n_users + k dims) for comparison.
  elsa     ELSA (Vancura et al. 2022): A [n_items, d] row-normalised, B = A A' - I, Adam on the normalised-MSE of
           reconstructed user rows; user_vec = x_u A, item_vec = A.
  ials     implicit's ALS (Hu et al. 2008) at high dimension; user_vec/item_vec = its factors.

Cold items (content only) for a chosen candidate: item_vec_c = f_c W, f_c = [text (384, L2-normed), w_a * attr
multi-hot / ||attr|| (sparse)] + intercept, fit on the warm items, selected on cold_valid:
  ridge    W = argmin ||F W - item_vec||^2 + alpha ||W||^2 (solved in the content dimension, one eigh for all alpha)
  wridge   the same with warm rows weighted by popularity^gamma (gamma 0.5 / 1 selected on cold_valid)
  bilin    W = argmin ||X - user_vec W' F'||^2 + lam ||W||^2 over warm items: fits the *scores* directly; closed
           form from eigh(user_vec' user_vec) and eigh(F'F): W~_ab = [P' U' X F Q]_ab / (lu_a lf_b + lam).
Mixed (one list over warm + cold items, test + cold_test): user_vec -> [user_vec / ||user_vec||, 1],
item_vec -> [item_vec, 0] for warm, [s * mapped item_vec, b] for cold; s and b selected on valid + cold_valid.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp

from benchmarks.run import rank
from benchmarks.run import score as score_topk
from benchmarks.split import prepare

OUT = Path(__file__).resolve().parent / "results" / "candidates.jsonl"


def log(*a):
    print(*a, flush=True)


# ------------------------------------------------------------------------------------------- protocol
class Stage:
    """What a model is fit on and scored against: 'select' (train -> valid) or 'final' (train+valid -> test)."""

    def __init__(self, data, final: bool):
        self.data, self.final = data, final
        self.X = data.matrix("train", "valid") if final else data.matrix("train")
        self.exclude = data.matrix("train", "valid", "cold_valid") if final else self.X
        self.warm_truth = data.parts["test" if final else "valid"]
        self.cold_truth = data.parts["cold_test" if final else "cold_valid"]
        self.warm_cand = data.item_mask("train")
        self.cold_cand = data.item_mask("cold_valid", "cold_test")
        self.warm_known = np.asarray(self.X.sum(axis=0)).ravel() > 0

    def _eval(self, scorer, cand, truth):
        # users without truth do not count in the means; ranking them changes nothing
        users = np.unique(truth[0])
        topk = rank(scorer, users, cand, self.exclude)
        m = score_topk(topk, users, truth, self.data.n_users, self.data.n_items)
        return {"recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"]}

    def warm(self, scorer):
        return self._eval(scorer, self.warm_cand, self.warm_truth)

    def cold(self, scorer):
        return self._eval(scorer, self.cold_cand, self.cold_truth)

    def mixed(self, scorer):
        truth = tuple(
            np.concatenate([a, b]) for a, b in zip(self.warm_truth, self.cold_truth)
        )
        return self._eval(scorer, self.warm_cand | self.cold_cand, truth)


def dot(U: np.ndarray, V: np.ndarray):
    U, V = np.ascontiguousarray(U, np.float32), np.ascontiguousarray(V, np.float32)
    return lambda users: U[users] @ V.T


# ------------------------------------------------------------------------------------------- linear algebra
def rsvd(M: sp.csr_matrix, k: int, seed: int, n_iter: int = 5, oversample: int = 30):
    """Randomized SVD (Halko et al. 2011), top-k singular values / right vectors. O(nnz l n_iter + (m+n) l^2)."""
    rng = np.random.default_rng(seed)
    M = M.astype(np.float64).tocsr()
    width = min(k + oversample, min(M.shape))
    Q, _ = np.linalg.qr(M @ rng.standard_normal((M.shape[1], width)))
    for _ in range(n_iter):
        Z, _ = np.linalg.qr(M.T @ Q)
        Q, _ = np.linalg.qr(M @ Z)
    _, s, Vt = np.linalg.svd(np.asarray((M.T @ Q).T), full_matrices=False)
    k = min(k, width)
    return s[:k], Vt[:k].T  # [k], [n, k]


# ------------------------------------------------------------------------------------------- candidates
# Each candidate: fit(X, grid, seed) -> iterator of (params, user_vec, item_vec); expensive work is shared
# across the grid (one SVD for all k and lambda). Called with the whole grid to select, with [best] to refit.
def fit_ease(X, grid, seed):
    active = np.flatnonzero(np.asarray(X.sum(axis=0)).ravel() > 0)
    Xa = X[:, active]
    G = (Xa.T @ Xa).toarray().astype(np.float64)
    for p in grid:
        Gl = G.copy()
        Gl[np.diag_indices_from(Gl)] += p["lambda"]
        P = sl.inv(Gl, overwrite_a=True, check_finite=False)
        B = -P / np.diag(P)[None, :]
        np.fill_diagonal(B, 0.0)
        item = np.zeros((X.shape[1], len(active)), np.float32)
        # item_vec_j = B[:, j] over active items; user_vec = x_u over active items
        item[active] = B.T
        yield p, Xa.toarray(), item


def fit_lrease(X, grid, seed):
    s, V = rsvd(X, max(p["k"] for p in grid), seed)
    for p in grid:
        k, lam = p["k"], p["lambda"]
        Vk, s2 = V[:, :k], s[:k] ** 2
        f = s2 / (s2 + lam)
        lamP = 1.0 - (Vk**2) @ f  # lambda * P_jj
        item = Vk / np.maximum(lamP, 1e-6)[:, None]
        user = X @ (Vk * f)
        yield {**p, "dim": k}, user, item


def _gfcf_parts(X):
    du = np.asarray(X.sum(axis=1)).ravel()
    di = np.asarray(X.sum(axis=0)).ravel()
    iu = np.where(du > 0, du, 1.0) ** -0.5
    ii = np.where(di > 0, di, np.inf) ** -0.5  # 0 for items without interactions
    R = sp.diags(iu) @ X.astype(np.float64) @ sp.diags(ii)
    return R.tocsr(), ii, np.sqrt(di)


def fit_gfcf(X, grid, seed):
    R, dinv, dsq = _gfcf_parts(X)
    s, V = rsvd(R, max(p["k"] for p in grid), seed)
    for p in grid:
        k, a = p["k"], p["alpha"]
        Vk = V[:, :k]
        XD = X @ (Vk * dinv[:, None])  # x_u D^-1/2 V_k
        if a == "ideal":  # ideal low-pass only: k dims
            yield {**p, "dim": k}, XD, dsq[:, None] * Vk
            continue
        user = np.hstack([X @ (Vk * s[:k] ** 2), a * XD])
        item = np.hstack([Vk, dsq[:, None] * Vk])
        yield {**p, "dim": 2 * k}, user, item


def fit_gfcf_exact(X, grid, seed):
    """Full linear filter x_u R~'R~ (n_users dims) + alpha * ideal low-pass (k dims)."""
    R, dinv, dsq = _gfcf_parts(X)
    s, V = rsvd(R, max(p["k"] for p in grid), seed)
    XR = np.asarray((X @ R.T).todense())  # x_u R~' [n_users, n_users]
    Rt = R.T.toarray()  # item_vec part: column i of R~ [n_items, n_users]
    for p in grid:
        Vk = V[:, : p["k"]]
        user = np.hstack([XR, p["alpha"] * (X @ (Vk * dinv[:, None]))])
        item = np.hstack([Rt, dsq[:, None] * Vk])
        yield {**p, "dim": X.shape[0] + p["k"]}, user, item


def fit_elsa(X, grid, seed, eval_epochs=None):
    """ELSA; with eval_epochs yields a checkpoint at each listed epoch (the epoch count is selected on valid)."""
    import torch

    torch.set_num_threads(1)
    active = np.flatnonzero(np.asarray(X.sum(axis=0)).ravel() > 0)
    Xa = X[:, active].tocsr().astype(np.float32)
    rows = np.flatnonzero(np.diff(Xa.indptr) > 0)
    for p in grid:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        W = torch.nn.Parameter(
            torch.nn.init.xavier_uniform_(torch.empty(len(active), p["d"]))
        )
        opt = torch.optim.Adam([W], lr=p["lr"])
        stops = sorted(eval_epochs or [p["epochs"]])
        t0 = time.perf_counter()
        for epoch in range(1, stops[-1] + 1):
            perm = rng.permutation(rows)
            for s in range(0, len(perm), p["batch"]):
                xb = torch.from_numpy(Xa[perm[s : s + p["batch"]]].toarray())
                A = torch.nn.functional.normalize(W, dim=-1)
                pred = (xb @ A) @ A.T - xb
                loss = torch.nn.functional.mse_loss(
                    torch.nn.functional.normalize(pred, dim=-1),
                    torch.nn.functional.normalize(xb, dim=-1),
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
            if epoch in stops:
                with torch.no_grad():
                    A = torch.nn.functional.normalize(W, dim=-1).numpy()
                item = np.zeros((X.shape[1], p["d"]), np.float32)
                item[active] = A
                yield (
                    {
                        **p,
                        "epochs": epoch,
                        "dim": p["d"],
                        "train_s": round(time.perf_counter() - t0, 1),
                    },
                    X @ item,
                    item,
                )


def fit_ials(X, grid, seed):
    from implicit.cpu.als import AlternatingLeastSquares

    for p in grid:
        m = AlternatingLeastSquares(
            factors=p["factors"],
            regularization=p["reg"],
            alpha=p["alpha"],
            iterations=p.get("iterations", 15),
            random_state=seed,
            num_threads=1,
        )
        m.fit(X.tocsr(), show_progress=False)
        U, V = np.asarray(m.user_factors), np.asarray(m.item_factors)
        yield {**p, "dim": U.shape[1]}, U, V


CANDIDATES = {
    "ease": (fit_ease, [{"lambda": v} for v in (30.0, 100.0, 300.0, 1000.0)]),
    "lrease": (
        fit_lrease,
        [
            {"k": k, "lambda": v}
            for k in (64, 128, 256, 512)
            for v in (30.0, 100.0, 300.0, 1000.0)
        ],
    ),
    "gfcf": (
        fit_gfcf,
        [
            {"k": k, "alpha": a}
            for k in (64, 128, 256, 512)
            for a in (0.0, 0.03, 0.1, 0.3, 1.0, "ideal")
        ],
    ),
    "gfcf-exact": (
        fit_gfcf_exact,
        [
            {"k": k, "alpha": a}
            for k in (64, 128, 256, 512)
            for a in (0.03, 0.1, 0.3, 1.0)
        ],
    ),
    "elsa": (
        fit_elsa,
        [
            {"d": d, "lr": lr, "batch": 64, "epochs": 0}
            for d in (256, 512)
            for lr in (0.01, 0.003)
        ],
    ),
    # implicit's loss: sum_observed (1 + alpha)(1 - u.v)^2 + sum_unobserved (u.v)^2 + reg (|u|^2 + |v|^2); the good
    # region has reg ~ 3..6 x (1 + alpha) (seed-1 probe), so the grid is alpha x that ratio
    "ials": (
        fit_ials,
        [
            {"factors": f, "reg": r * (1 + a), "alpha": a}
            for f in (256, 512)
            for a in (1.0, 4.0, 9.0)
            for r in (3.0, 4.5, 6.0)
        ],
    ),
}
ELSA_EPOCHS = (4, 6, 8, 10, 12, 15, 20, 25, 30)


# ------------------------------------------------------------------------------------------- content -> item_vec
class Content:
    """Item content with the attribute multi-hot kept sparse: F = [text, w_a attr/||attr||, 1]."""

    def __init__(self, data, w_attr: float):
        A = data.item_attr.tocsr().astype(np.float64)
        norm = np.sqrt(np.asarray(A.multiply(A).sum(axis=1)).ravel())
        A = sp.diags(w_attr / np.where(norm > 0, norm, 1.0)) @ A
        self.F = sp.hstack(
            [
                sp.csr_matrix(data.text.astype(np.float64)),
                A,
                sp.csr_matrix(np.ones((data.n_items, 1))),
            ]
        ).tocsr()
        self.dim = self.F.shape[1]

    def gram(self, rows):
        Fr = self.F[rows]
        return (Fr.T @ Fr).toarray(), Fr


def cold_ridge(content: Content, rows, target, alphas, weight=None):
    """W for each alpha: ridge from content to the item vectors of the warm `rows` (targets centred, the mean
    added back); `weight` (per row) makes it a weighted ridge, e.g. popularity^gamma."""
    Fr = content.F[rows]
    w = np.ones(len(rows)) if weight is None else weight / weight.mean()
    G = (Fr.T @ sp.diags(w) @ Fr).toarray()
    mu = (w[:, None] * target).sum(axis=0) / w.sum()
    FtY = np.asarray(Fr.T @ (w[:, None] * (target - mu)))
    lam, Q = np.linalg.eigh(G)
    QtFY = Q.T @ FtY
    for a in alphas:
        W = Q @ (QtFY / (lam + a)[:, None])
        yield a, W, mu


def cold_bilinear(content: Content, rows, X, user, lams):
    """W for each lam: min ||X[:, rows] - user W' F[rows]'||^2 + lam ||W||^2 (fits user_vec . item_vec to X)."""
    G, Fr = content.gram(rows)
    lf, Q = np.linalg.eigh(G)
    lu, P = np.linalg.eigh(user.T.astype(np.float64) @ user)
    C = P.T @ (user.T.astype(np.float64) @ (X[:, rows] @ Fr).toarray()) @ Q  # [k, d_c]
    for lam in lams:
        Wt = P @ (C / (np.outer(lu, lf) + lam)) @ Q.T  # [k, d_c]
        yield lam, Wt.T, 0.0


def cold_vectors(content: Content, item, W, mu, cold_rows):
    out = item.copy()
    out[cold_rows] = np.asarray(content.F[cold_rows] @ W) + mu
    return out


# ------------------------------------------------------------------------------------------- runner
def run_candidate(name, data, seed, cold: bool, rows_out: list, per_dim: bool = False):
    fit, grid = CANDIDATES[name]
    sel, fin = Stage(data, False), Stage(data, True)
    kw = {"eval_epochs": ELSA_EPOCHS} if name == "elsa" else {}
    checked, best, best_v, best_vecs = [], None, -1.0, None
    t0 = time.perf_counter()
    for params, U, V in fit(sel.X, grid, seed, **kw):
        m = sel.warm(dot(U, V))
        checked.append({**params, "valid_ndcg@20": round(m["ndcg@20"], 4)})
        log(f"  [{name} s{seed}] valid {params} ndcg@20 {m['ndcg@20']:.4f}")
        if m["ndcg@20"] > best_v:
            best, best_v, best_vecs = params, m["ndcg@20"], (U, V)
    select_s = time.perf_counter() - t0
    refit = {k: v for k, v in best.items() if k not in ("dim", "train_s")}
    t0 = time.perf_counter()
    *_, (params, U, V) = fit(fin.X, [refit], seed)
    fit_s = time.perf_counter() - t0
    m = fin.warm(dot(U, V))
    row = {
        "candidate": name,
        "seed": seed,
        "task": "warm",
        "selected": params,
        "dim": params.get("dim"),
        "valid_ndcg@20": round(best_v, 4),
        "fit_s": round(fit_s, 1),
        "select_s": round(select_s, 1),
        "recall@20": round(m["recall@20"], 4),
        "ndcg@20": round(m["ndcg@20"], 4),
        "grid": checked,
    }
    log(
        f"== {name} seed {seed} warm: R@20 {m['recall@20']:.4f} N@20 {m['ndcg@20']:.4f} "
        f"(selected {params}, fit {fit_s:.1f}s)"
    )
    rows_out.append(row)
    if per_dim:  # best setting within each dimension, refit and tested (the dimension/quality curve)
        dims = sorted({c["dim"] for c in checked})
        for d in dims:
            b = max(
                (c for c in checked if c["dim"] == d), key=lambda c: c["valid_ndcg@20"]
            )
            p = {
                k: v
                for k, v in b.items()
                if k not in ("dim", "train_s", "valid_ndcg@20")
            }
            t1 = time.perf_counter()
            *_, (pp, Ud, Vd) = fit(fin.X, [p], seed)
            fs = time.perf_counter() - t1
            md = fin.warm(dot(Ud, Vd))
            rows_out.append(
                {
                    "candidate": name,
                    "seed": seed,
                    "task": "warm@dim",
                    "selected": pp,
                    "dim": d,
                    "valid_ndcg@20": b["valid_ndcg@20"],
                    "fit_s": round(fs, 1),
                    "recall@20": round(md["recall@20"], 4),
                    "ndcg@20": round(md["ndcg@20"], 4),
                }
            )
            log(
                f"   {name} dim {d}: R@20 {md['recall@20']:.4f} N@20 {md['ndcg@20']:.4f} ({pp})"
            )
    if cold and name != "ease" and name != "gfcf-exact":
        run_cold(name, data, seed, sel, fin, best_vecs, (U, V), refit, rows_out)


COLD_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
COLD_LAMS_REL = (
    1e-6,
    1e-5,
    1e-4,
    1e-3,
    1e-2,
    1e-1,
)  # bilinear lam, relative to max(lu) * max(lf)
W_ATTR = (0.5, 1.0, 2.0)
COLD_KINDS = ("ridge", "wridge", "bilin")


def _cold_maps(data, stage, U, V, w_attr, kind):
    content = Content(data, w_attr)
    rows = np.flatnonzero(stage.warm_known)
    cold_rows = np.flatnonzero(stage.cold_cand)
    if kind == "ridge":
        for a, W, mu in cold_ridge(
            content, rows, V[rows].astype(np.float64), COLD_ALPHAS
        ):
            yield a, cold_vectors(content, V, W, mu, cold_rows)
    # rows weighted by popularity^gamma: well-observed item vectors count more
    elif kind == "wridge":
        pop = np.asarray(stage.X.sum(axis=0)).ravel()[rows]
        for g in (0.5, 1.0):
            for a, W, mu in cold_ridge(
                content, rows, V[rows].astype(np.float64), COLD_ALPHAS, pop**g
            ):
                yield (g, a), cold_vectors(content, V, W, mu, cold_rows)
    else:
        scale = (
            np.linalg.eigvalsh(U.T.astype(np.float64) @ U).max()
            * np.linalg.eigvalsh(content.gram(rows)[0]).max()
        )
        lams = [r * scale for r in COLD_LAMS_REL]
        for r, (_lam, W, mu) in zip(
            COLD_LAMS_REL, cold_bilinear(content, rows, stage.X, U, lams)
        ):
            yield r, cold_vectors(content, V, W, mu, cold_rows)


def run_cold(name, data, seed, sel, fin, sel_vecs, fin_vecs, refit, rows_out):
    for kind in COLD_KINDS:
        best, best_v = None, -1.0
        t0 = time.perf_counter()
        for w in W_ATTR:
            for reg, Vc in _cold_maps(data, sel, *sel_vecs, w, kind):
                m = sel.cold(dot(sel_vecs[0], Vc))
                if m["ndcg@20"] > best_v:
                    best, best_v, best_Vc = (w, reg), m["ndcg@20"], Vc
        select_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        w, reg = best
        Vc = next(v for r, v in _cold_maps(data, fin, *fin_vecs, w, kind) if r == reg)
        fit_s = time.perf_counter() - t0
        m = fin.cold(dot(fin_vecs[0], Vc))
        rows_out.append(
            {
                "candidate": f"{name}+{kind}",
                "seed": seed,
                "task": "cold",
                "warm_selected": refit,
                "selected": {"w_attr": w, "reg": reg},
                "valid_ndcg@20": round(best_v, 4),
                "fit_s": round(fit_s, 1),
                "select_s": round(select_s, 1),
                "recall@20": round(m["recall@20"], 4),
                "ndcg@20": round(m["ndcg@20"], 4),
            }
        )
        log(
            f"== {name}+{kind} seed {seed} cold: R@20 {m['recall@20']:.4f} N@20 {m['ndcg@20']:.4f} "
            f"(selected w_attr={w} reg={reg}, valid {best_v:.4f})"
        )
        run_mixed(
            f"{name}+{kind}",
            seed,
            sel,
            fin,
            (sel_vecs[0], best_Vc),
            (fin_vecs[0], Vc),
            rows_out,
        )


def _mixed_vecs(U, Vc, cold_mask, norm_user, s, b):
    Un = (
        U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
        if norm_user
        else U
    )
    Vm = Vc.copy()
    Vm[cold_mask] *= s
    return (
        np.hstack([Un, np.ones((len(U), 1))]),
        np.hstack([Vm, np.where(cold_mask, b, 0.0)[:, None]]),
    )


def run_mixed(name, seed, sel, fin, sel_vecs, fin_vecs, rows_out):
    """One list over warm + cold items; cold items get item_vec = [s * mapped, b], warm [item_vec, 0], users
    [user_vec (optionally L2-normalised), 1]: the offset b is the extra dimension."""

    def scale_of(U, V, stage, norm_user):
        Un = (
            U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
            if norm_user
            else U
        )
        users = np.unique(stage.warm_truth[0])
        S = Un[users] @ V[stage.warm_cand].T
        # typical top-20 warm score
        return float(np.median(np.sort(S, axis=1)[:, -20:]))

    U, V = sel_vecs
    best, best_v, grid = None, -1.0, []
    for norm_user in (False, True):
        top = scale_of(U, V, sel, norm_user)
        for s in (0.1, 0.25, 0.5, 1.0, 2.0):
            for rel in (-1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5):
                Um, Vm = _mixed_vecs(U, V, sel.cold_cand, norm_user, s, rel * top)
                m = sel.mixed(dot(Um, Vm))
                grid.append((norm_user, s, rel, round(m["ndcg@20"], 4)))
                if m["ndcg@20"] > best_v:
                    best, best_v = (norm_user, s, rel), m["ndcg@20"]
    norm_user, s, rel = best
    U, V = fin_vecs
    Um, Vm = _mixed_vecs(
        U, V, fin.cold_cand, norm_user, s, rel * scale_of(U, V, fin, norm_user)
    )
    m = fin.mixed(dot(Um, Vm))
    # no-offset reference (s=1, b=0, raw user_vec) on test, for comparison
    U0, V0 = _mixed_vecs(U, V, fin.cold_cand, False, 1.0, 0.0)
    m0 = fin.mixed(dot(U0, V0))
    rows_out.append(
        {
            "candidate": name,
            "seed": seed,
            "task": "mixed",
            "selected": {"norm_user": norm_user, "s": s, "b_rel_top20": rel},
            "valid_ndcg@20": round(best_v, 4),
            "recall@20": round(m["recall@20"], 4),
            "ndcg@20": round(m["ndcg@20"], 4),
            "no_offset_recall@20": round(m0["recall@20"], 4),
            "no_offset_ndcg@20": round(m0["ndcg@20"], 4),
        }
    )
    log(
        f"== {name} seed {seed} mixed: R@20 {m['recall@20']:.4f} N@20 {m['ndcg@20']:.4f} "
        f"(selected norm_user={norm_user} s={s} b={rel}*top20; no offset: N@20 {m0['ndcg@20']:.4f})"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--candidates", default="ease,lrease,gfcf,elsa,ials")
    ap.add_argument(
        "--cold",
        default="lrease,gfcf,elsa,ials",
        help="candidates that also get the cold/mixed tasks",
    )
    ap.add_argument(
        "--grid", default="", help="JSON {candidate: [params, ...]} overriding a grid"
    )
    ap.add_argument(
        "--elsa-epochs",
        default="",
        help="comma-separated checkpoint epochs for ELSA selection",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--per-dim",
        default="",
        help="candidates that also report the best setting per dimension",
    )
    args = ap.parse_args(argv)
    if args.grid:
        for k, v in json.loads(args.grid).items():
            CANDIDATES[k] = (CANDIDATES[k][0], v)
    if args.elsa_epochs:
        global ELSA_EPOCHS
        ELSA_EPOCHS = tuple(int(e) for e in args.elsa_epochs.split(","))
    cold = set(args.cold.split(","))
    for seed in (int(s) for s in args.seeds.split(",")):
        data = prepare(args.dataset, seed)
        for name in args.candidates.split(","):
            rows: list = []
            t0 = time.perf_counter()
            run_candidate(
                name, data, seed, name in cold, rows, name in args.per_dim.split(",")
            )
            for r in rows:
                r["dataset"], r["wall_s"] = (
                    args.dataset,
                    round(time.perf_counter() - t0, 1),
                )
                r["peak_rss_mb"] = round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                )
            with open(args.out, "a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
