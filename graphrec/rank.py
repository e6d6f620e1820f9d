"""The hybrid ranker: the GNN dot score blended with collaborative and content signals, fitted on validation.

Per (user, item) components, each divided by its spread on the validation users so weights are comparable:

    gnn      user_emb[u] . item_emb[i]                       (model/embeddings.safetensors, all items)
    ease     history[u] @ B[:, i], B = EASE closed form on the training matrix (warm items only), its
             lambda chosen from EASE_LAMBDAS on warm validation NDCG of EASE alone
    pop      log(1 + training interactions of i)
    content  mean over the user's history h of cos(content[h], content[i])   (only when features exist)
    ridge    (history[u] @ Q) . (f_i - mean f), cold items only: a ridge map from item content f (modality
             blocks + the graph's item-attribute multi-hots and log counts) to the item's column of the
             EASE-smoothed matrix X B, Q = B F_e (F_e'F_e + lam I)^-1 over the EASE items (the idea of
             the ridge-to-ALS-factors cold-start baseline, closed form). lam is chosen on cold_valid.

score = sum_c w_c * component_c / scale_c, with one weight set for warm items (training interactions) and
one for cold items, plus an offset for cold items. Cold items have no collaborative signal, so their weights
cover gnn, content and ridge only: lacking ease/pop never pushes them down. Warm weights are fitted on `valid`
(warm candidates), cold weights on `cold_valid` (cold candidates), the cold offset on both together (all
items; its grid widens while the best value sits on its edge), each by coordinate search on NDCG@K. After
fitting, EASE and popularity are refit on train+valid (the protocol: select on validation, refit on everything
but held-out test). The history used for fitting is what training saw (train + cold_user_context); at
serving time it is everything the system was given (train, valid, cold_valid,
cold_user_context), and every history item is excluded from the lists.

When the train stage keeps model/embeddings_select.safetensors (trained on train only, before its refit on
train+valid), the blend is fitted with those, since the final embeddings have seen the validation answers.
Lists break score ties by item index, so they do not depend on how users are batched.

Saved as model/ranker.json (weights, scales, settings, the embeddings' sha256) and model/ranker.safetensors
("ease" float16 [n_e, n_e], "ease_items" int64 [n_e], "pop" float32 [n_items], "warm" uint8 [n_items], and
with the ridge component "ridge" float16 [n_e, d_f], "ridge_mean" float32 [d_f]; the item content f is rebuilt
from features/ and graph/ when loading).
EASE costs n_e^2 memory and n_e^3 time, so it covers at most `ease_max_items` of the most popular warm items
(the rest score 0 on that component, like cold items).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from graphrec import artifacts
from graphrec.data.dataset import TRAINED, Dataset
from graphrec.errors import InputError
from graphrec.features import load_features, unit_rows
from graphrec.kg.graph import KnowledgeGraph
from graphrec.metrics import embedding_accuracy, hit_matrix, mean_metrics, per_user_accuracy
from graphrec.train import TrainResult
from graphrec.workspace import Workspace

log = logging.getLogger(__name__)

COMPONENTS = ("gnn", "ease", "pop", "content", "ridge")
COLD_COMPONENTS = ("gnn", "content", "ridge")
COLD_ONLY = ("ridge",)  # scored on cold candidates only (0 elsewhere), so their spread is measured there
FIT_HISTORY = ("train", "cold_user_context")
EASE_LAMBDAS = (100.0, 300.0, 1000.0)  # chosen on warm validation NDCG of EASE alone
WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
OFFSET_GRID = tuple(np.round(np.arange(-4.0, 4.01, 0.5), 2))  # in units of the components' spreads
MAX_OFFSET = 64.0
MAX_FIT_USERS = 3000
RIDGE_LAMBDAS = (3.0, 10.0, 30.0, 100.0)
RIDGE_MAX_VALUES = 2000  # most frequent values kept per attribute relation: the ridge solve is cubic in d_f


@dataclass
class Ranker:
    user_emb: np.ndarray  # float32 [n_users, d]
    item_emb: np.ndarray  # float32 [n_items, d]
    warm: np.ndarray  # bool [n_items]
    pop: np.ndarray  # float32 [n_items]
    ease_items: np.ndarray  # int64 [n_e]
    ease: np.ndarray  # float32 [n_e, n_e]
    content: np.ndarray | None  # float32 [n_items, dc], unit norm per modality, zero rows = no content
    ridge: np.ndarray | None = None  # float32 [n_e, d_f]: Q, history over the EASE items -> content space
    ridge_feats: np.ndarray | None = None  # float32 [n_items, d_f], centred ridge content f - mean f
    ridge_mean: np.ndarray | None = None  # float32 [d_f], mean f over the EASE items
    scale: dict[str, float] = field(default_factory=lambda: {c: 1.0 for c in COMPONENTS})
    weights_warm: dict[str, float] = field(default_factory=lambda: {"gnn": 1.0, "ease": 0.0, "pop": 0.0, "content": 0.0})
    weights_cold: dict[str, float] = field(default_factory=lambda: {"gnn": 1.0, "content": 0.0})
    cold_offset: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.item_emb.shape[0])

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(c for c in COMPONENTS if (c != "content" or self.content is not None)
                     and (c != "ridge" or self.ridge is not None))

    # -- scoring -----------------------------------------------------------------------------------
    def component_scores(self, users: np.ndarray, cand: np.ndarray, history: sp.csr_matrix) -> dict[str, torch.Tensor]:
        """Raw (unscaled) component scores float32 [len(users), len(cand)]."""
        h = history[users]
        out = {"gnn": torch.from_numpy(self.user_emb[users]) @ torch.from_numpy(self.item_emb[cand]).T}
        ease_full = np.zeros((len(users), self.n_items), np.float32)
        if len(self.ease_items):
            ease_full[:, self.ease_items] = h[:, self.ease_items] @ self.ease
        out["ease"] = torch.from_numpy(ease_full[:, cand])
        out["pop"] = torch.from_numpy(self.pop[cand]).expand(len(users), len(cand))
        if self.content is not None:
            deg = np.asarray(h.sum(axis=1)).ravel()
            profile = sp.diags(1.0 / np.maximum(deg, 1.0)).astype(np.float32) @ h @ self.content
            out["content"] = torch.from_numpy(np.asarray(profile, np.float32)) @ torch.from_numpy(self.content[cand]).T
        if self.ridge is not None and self.ridge_feats is not None:
            cold = np.flatnonzero(~self.warm[cand])
            ridge = torch.zeros(len(users), len(cand))
            user_q = torch.from_numpy(np.asarray(h[:, self.ease_items] @ self.ridge, np.float32))
            ridge[:, cold] = user_q @ torch.from_numpy(self.ridge_feats[cand[cold]]).T
            out["ridge"] = ridge
        return out

    def blend(self, comps: dict[str, torch.Tensor], cand: np.ndarray, weights_warm: dict[str, float] | None = None,
              weights_cold: dict[str, float] | None = None, cold_offset: float | None = None) -> torch.Tensor:
        ww = self.weights_warm if weights_warm is None else weights_warm
        wc = self.weights_cold if weights_cold is None else weights_cold
        off = self.cold_offset if cold_offset is None else cold_offset
        warm = torch.from_numpy(self.warm[cand])
        score = torch.zeros_like(comps["gnn"])
        for c, v in comps.items():
            col = torch.where(warm, ww.get(c, 0.0), wc.get(c, 0.0)) / self.scale[c]
            if bool((col != 0).any()):
                score += v * col
        return score + torch.where(warm, 0.0, off)

    def topk(self, users: np.ndarray, k: int, history: sp.csr_matrix, candidates: np.ndarray | None = None,
             batch: int = 1024, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k candidate items per user, history items excluded: items int64 [n, k] (-1 = no more
        candidates), scores float32 [n, k]."""
        users = np.asarray(users, np.int64)
        cand = np.arange(self.n_items) if candidates is None else np.unique(np.asarray(candidates, np.int64))
        kk = min(k, len(cand))
        items = np.full((len(users), k), -1, np.int64)
        scores = np.full((len(users), k), np.nan, np.float32)
        if kk == 0 or len(users) == 0:
            return items, scores
        col_of = np.full(self.n_items, -1, np.int64)
        col_of[cand] = np.arange(len(cand))
        steps = range(0, len(users), batch)
        for s in tqdm(steps, desc="ranking", unit="batch", disable=not progress or len(steps) < 2):
            u = users[s:s + batch]
            with torch.no_grad():
                sc = self.blend(self.component_scores(u, cand, history), cand)
                sc = _mask_known(sc, history[u], col_of)
                val, idx = topk_stable(sc, kk)
            val, idx = val.numpy(), idx.numpy()
            found = np.isfinite(val)
            items[s:s + len(u), :kk] = np.where(found, cand[idx], -1)
            scores[s:s + len(u), :kk] = np.where(found, val, np.nan)
        return items, scores


def topk_stable(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk with ties broken by column (lowest first), so lists do not depend on batch composition.

    Items with equal scores are common (e.g. cold items with identical content); torch.topk orders them
    arbitrarily. Take every column tied with the k-th value, then sort that small set stably."""
    val = torch.topk(scores, k, dim=1).values
    m = int((scores >= val[:, -1:]).sum(dim=1).max())
    val, idx = torch.topk(scores, m, dim=1)
    idx, order = torch.sort(idx, dim=1)
    val = torch.gather(val, 1, order)
    val, order = torch.sort(val, dim=1, descending=True, stable=True)
    return val[:, :k], torch.gather(idx, 1, order)[:, :k]


def _mask_known(scores: torch.Tensor, known: sp.csr_matrix, col_of: np.ndarray) -> torch.Tensor:
    coo = known.tocoo()
    cols = col_of[coo.col]
    keep = cols >= 0
    scores[torch.from_numpy(coo.row[keep].astype(np.int64)), torch.from_numpy(cols[keep])] = float("-inf")
    return scores


def ease_matrix(train: sp.csr_matrix, items: np.ndarray, lam: float) -> np.ndarray:
    """EASE (Steck 2019): B = I - P / diag(P), P = (X'X + lam I)^-1, diag(B) = 0; float32 [len(items)]^2."""
    x = train[:, items]
    # float32 agrees with float64 to ~1e-6 relative on MovieLens and is ~1.6x faster.
    gram = torch.from_numpy((x.T @ x).toarray().astype(np.float32))
    gram.diagonal().add_(lam)
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    b = -p / p.diagonal()[None, :]
    b.diagonal().zero_()
    return b.numpy()


def _content_matrix(ws: Workspace, n_items: int) -> tuple[np.ndarray | None, list[str]]:
    """Concatenated per-modality unit vectors (zero where a modality is absent), or None without features."""
    if not ws.stage_dir("features").is_dir():
        return None, []
    feats = load_features(ws)
    blocks = []
    for f in feats.values():
        blocks.append(unit_rows(f.values, f.mask)[0])
    if not blocks:
        return None, []
    return (np.concatenate(blocks, axis=1) / np.float32(np.sqrt(len(blocks)))).astype(np.float32), sorted(feats)


def ridge_content(ws: Workspace, n_items: int, content: np.ndarray | None) -> np.ndarray | None:
    """The ridge map's item content: the modality blocks, then per item-attribute relation of the graph its
    multi-hot over the RIDGE_MAX_VALUES most frequent values (unit norm per relation, so a relation with many
    values per item does not dominate) and log(1 + number of values) (tag counts predict popularity)."""
    blocks = [] if content is None else [content]
    if ws.stage_dir("graph").is_dir():
        kg = KnowledgeGraph.load(ws)
        for (src, _, dst), e in sorted(kg.edges.items()):
            if src != "item" or dst in ("item", "user") or len(e) == 0:
                continue
            m = sp.csr_matrix((np.ones(len(e), np.float32), (e.src, e.dst)), shape=(n_items, kg.num_nodes[dst]))
            m.data[:] = 1.0
            m = m[:, np.sort(np.argsort(-np.asarray(m.sum(axis=0)).ravel(), kind="stable")[:RIDGE_MAX_VALUES])]
            deg = np.asarray(m.sum(axis=1)).ravel()
            blocks += [(sp.diags(1.0 / np.sqrt(np.maximum(deg, 1.0))) @ m).toarray(), np.log1p(deg)[:, None]]
    return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else None


def ridge_map(ease: np.ndarray, feats: np.ndarray, lams: Sequence[float]) -> list[np.ndarray]:
    """Q = B F (F'F + lam I)^-1 per lam, F = the EASE items' centred content [n_e, d_f]: history @ Q predicts
    the EASE-smoothed user row's projection onto the content space, i.e. (history @ Q) . f_j is the ridge
    prediction of item j's column of X B from j's content."""
    f = torch.from_numpy(feats)
    bf = torch.from_numpy(ease) @ f
    gram = f.T @ f
    eye = torch.eye(gram.shape[0])
    return [torch.linalg.solve(gram + lam * eye, bf.T).T.contiguous().numpy() for lam in lams]


def _select_ease(train: sp.csr_matrix, items: np.ndarray, ds: Dataset, k: int, lambdas: Sequence[float]
                 ) -> tuple[float, np.ndarray, dict[str, Any]]:
    """The EASE lambda with the best warm `valid` NDCG@k of EASE alone (history = what training saw)."""
    if len(items) == 0:
        return float(lambdas[0]), np.zeros((0, 0), np.float32), {}
    truth = ds.part("valid")
    users = np.unique(truth["user"].to_numpy())
    if len(lambdas) == 1 or len(users) == 0:
        return float(lambdas[0]), ease_matrix(train, items, lambdas[0]), {}
    pos = np.full(ds.n_users, -1, np.int64)
    pos[users] = np.arange(len(users))
    h = ds.matrix(FIT_HISTORY)[users][:, items]
    seen = torch.from_numpy(h.toarray() > 0)
    tu, ti = pos[truth["user"].to_numpy()], truth["item"].to_numpy()
    best: tuple[float, float, np.ndarray] | None = None
    trials = {}
    for lam in lambdas:
        b = ease_matrix(train, items, lam)
        sc = torch.from_numpy(np.asarray(h @ b, np.float32)).masked_fill_(seen, float("-inf"))
        hits = hit_matrix(items[topk_stable(sc, min(k, len(items)))[1].numpy()], tu, ti, ds.n_items)
        ndcg = mean_metrics(per_user_accuracy(hits, np.bincount(tu, minlength=len(users)), [k]))[f"ndcg@{k}"]
        trials[str(lam)] = round(ndcg, 6)
        if best is None or ndcg > best[0]:
            best = (ndcg, float(lam), b)
    return best[1], best[2], {"ease_validation_ndcg": trials}


def _select_ridge(r: Ranker, ds: Dataset, k: int, feats_e: np.ndarray) -> dict[str, Any]:
    """Sets r.ridge to the lam of RIDGE_LAMBDAS with the best cold_valid NDCG@k of the ridge score alone;
    returns the lam and the trials ({} without cold_valid: then no ridge component)."""
    truth = ds.matrix(("cold_valid",)).astype(bool)
    cold = np.flatnonzero(~r.warm)
    if truth.nnz == 0 or len(cold) == 0:
        return {}
    history = ds.matrix(FIT_HISTORY)
    h = history[:, r.ease_items]
    feats = torch.from_numpy(r.ridge_feats)
    trials = []
    for lam, q in zip(RIDGE_LAMBDAS, ridge_map(r.ease, feats_e, RIDGE_LAMBDAS)):
        user_q = torch.from_numpy(np.asarray(h @ q, np.float32))
        trials.append((embedding_accuracy(user_q, feats, truth, history.astype(bool), cold, k)[0], lam, q))
    lam, r.ridge = max(trials, key=lambda t: t[0])[1:]
    return {"ridge_lambda": lam, "ridge_validation_ndcg": {str(t[1]): round(t[0], 6) for t in trials}}


def fit_ranker(workspace: Workspace | str | Path, trained: TrainResult | None = None, *, k: int = 20,
               ease_lambda: float | None = None, ease_max_items: int = 10000, max_fit_users: int = MAX_FIT_USERS,
               progress: bool = True) -> Ranker:
    """Build the collaborative parts from train, fit the blend on validation, refit the collaborative parts
    on train+valid, save model/ranker.*.

    trained: what `run_train` just returned (its embeddings are used as they are); None reads model/.
    k: the cut-off of the validation NDCG the blend maximises. ease_lambda: fixed, or None to choose from
    EASE_LAMBDAS. ease_max_items: EASE covers at most this many of the most popular warm items.
    max_fit_users: users sampled per validation task. progress: show the fitting's progress bar.
    """
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    if not ds.is_split:
        raise InputError("dataset is not split into train/valid/test: run `graphrec data split` first", file=ws.path)
    if trained is not None:
        user_emb, item_emb, sha, select = trained.user, trained.item, trained.embeddings_sha256, trained.select
    else:
        user_emb, item_emb, _ = artifacts.read_embeddings(ws, ds)
        sha = artifacts.embeddings_sha256(ws)
        select = artifacts.read_embeddings(ws, ds, select=True)[:2] if artifacts.has_select_embeddings(ws) else None
    # Embeddings refit on train+valid have seen the validation answers: fit the blend on the selection-phase
    # embeddings (trained on train only) when the train stage kept them, then serve with the final ones.
    fit_emb = select if select is not None else (user_emb, item_emb)
    train = ds.matrix(("train",))
    counts = np.asarray(train.sum(axis=0)).ravel()
    warm = ds.warm_items(("train",))  # during selection; served lists treat train+valid items as warm
    order = np.argsort(-counts, kind="stable")
    ease_items = np.sort(order[: min(int(warm.sum()), ease_max_items)])
    lambdas = EASE_LAMBDAS if ease_lambda is None else (ease_lambda,)
    log.info("ranker: EASE on %d warm items (lambda %s)", len(ease_items), " / ".join(map(str, lambdas)))
    ease_lambda, ease, ease_info = _select_ease(train, ease_items, ds, k, lambdas)
    content, modalities = _content_matrix(ws, ds.n_items)
    r = Ranker(*fit_emb, warm, np.log1p(counts).astype(np.float32), ease_items.astype(np.int64), ease, content)
    feats, ridge_info = ridge_content(ws, ds.n_items, content), {}
    if feats is not None and len(ease_items):
        r.ridge_mean = feats[ease_items].mean(axis=0)
        r.ridge_feats = feats - r.ridge_mean
        ridge_info = _select_ridge(r, ds, k, r.ridge_feats[ease_items])
        if not ridge_info:
            r.ridge_feats = r.ridge_mean = None
    _fit_weights(r, ds, k, max_fit_users, progress)
    # Selected on validation, served refit: the collaborative parts see train+valid, as the embeddings do.
    # (cold_valid only selects: refitting on it would turn the cold items it shares with cold_test warm.)
    given = ds.matrix(TRAINED)
    if given.nnz > train.nnz:
        r.pop = np.log1p(np.asarray(given.sum(axis=0)).ravel()).astype(np.float32)
        r.ease = ease_matrix(given, ease_items, ease_lambda) if len(ease_items) else r.ease
        if r.ridge is not None:
            r.ridge = ridge_map(r.ease, r.ridge_feats[ease_items], [ridge_info["ridge_lambda"]])[0]
    r.user_emb, r.item_emb, r.warm = user_emb, item_emb, ds.warm_items(TRAINED)
    r.info = {"k": k, "ease_lambda": ease_lambda, "ease_max_items": ease_max_items, "ease_items": len(ease_items),
              "max_fit_users": max_fit_users,
              "modalities": modalities, "warm_items": int(warm.sum()), **ease_info, **ridge_info, **r.info,
              "fitted_with": artifacts.SELECT_EMBEDDINGS if select is not None else artifacts.EMBEDDINGS,
              "embeddings_sha256": sha}
    save_ranker(ws, r)
    return r


def _fit_weights(r: Ranker, ds: Dataset, k: int, max_users: int, progress: bool) -> None:
    history = ds.matrix(FIT_HISTORY)
    rng = np.random.default_rng(0)
    warm_c, cold_c, all_c = np.flatnonzero(r.warm), np.flatnonzero(~r.warm), np.arange(r.n_items)
    tasks = {"warm": (("valid",), warm_c), "cold": (("cold_valid",), cold_c), "mixed": (("valid", "cold_valid"), all_c)}
    data = {}
    for name, (parts, cand) in tasks.items():
        truth = ds.part(*parts)
        users = np.unique(truth["user"].to_numpy())
        if len(users) > max_users:  # a random sample bounds the search's cost on large datasets
            users = np.sort(rng.choice(users, max_users, replace=False))
        if len(users) == 0 or len(cand) == 0:
            continue
        pos = np.full(ds.n_users, -1, np.int64)
        pos[users] = np.arange(len(users))
        t = truth[pos[truth["user"].to_numpy()] >= 0]
        comps = r.component_scores(users, cand, history)
        col_of = np.full(r.n_items, -1, np.int64)
        col_of[cand] = np.arange(len(cand))
        data[name] = (users, cand, comps, pos[t["user"].to_numpy()], t["item"].to_numpy(),
                      _mask_known(torch.zeros(len(users), len(cand)), history[users], col_of))
    # Spreads measured on warm candidates, where every component but the cold-only ones is informative.
    for c in r.components:
        name = next((n for n in (("cold",) if c in COLD_ONLY else ("warm", "cold", "mixed")) if n in data), None)
        r.scale[c] = float(data[name][2][c].std()) or 1.0 if name else 1.0

    def objective(name: str, ww: dict, wc: dict, off: float) -> float:
        users, cand, comps, tu, ti, mask = data[name]
        sc = r.blend(comps, cand, ww, wc, off) + mask
        idx = topk_stable(sc, min(k, len(cand)))[1].numpy()
        hits = hit_matrix(cand[idx], tu, ti, r.n_items)
        return mean_metrics(per_user_accuracy(hits, np.bincount(tu, minlength=len(users)), [k]))[f"ndcg@{k}"]

    bar = tqdm(desc="fitting blend on validation", unit="eval", disable=not progress)
    fitted: dict[str, Any] = {}
    if "warm" in data:
        r.weights_warm, fitted["warm_ndcg"] = _coordinate_search(
            lambda w: objective("warm", w, r.weights_cold, 0.0), dict(r.weights_warm),
            tuple(c for c in r.components if c not in COLD_ONLY), bar)
    r.weights_cold = {c: r.weights_warm.get(c, 0.0) for c in COLD_COMPONENTS}
    if "cold" in data:
        r.weights_cold, fitted["cold_ndcg"] = _coordinate_search(
            lambda w: objective("cold", r.weights_warm, w, 0.0), dict(r.weights_cold),
            tuple(c for c in COLD_COMPONENTS if c in r.components), bar)
    if "mixed" in data and "cold" in data and "warm" in data:
        trials: dict[float, tuple] = {}
        grid = OFFSET_GRID
        while True:  # ties go to the smallest |offset|; a best value on the grid's edge widens the grid
            for off in (float(o) for o in grid if float(o) not in trials):
                trials[off] = (objective("mixed", r.weights_warm, r.weights_cold, off), -abs(off), off)
                bar.update()
            best = max(trials.values())
            edge = max(abs(o) for o in trials)
            if abs(best[2]) < edge or edge >= MAX_OFFSET:
                break
            grid = np.sign(best[2]) * (edge + np.arange(1, 9) * edge / 8)
        r.cold_offset, fitted["mixed_ndcg"] = best[2], best[0]
    bar.close()
    r.info = {"fitted_on": {n: int(len(d[0])) for n, d in data.items()},
              "validation_ndcg": {n: round(v, 6) for n, v in fitted.items()}}


def _coordinate_search(f: Callable[[dict[str, float]], float], start: dict[str, float], names: Sequence[str],
                       bar: tqdm, rounds: int = 2) -> tuple[dict, float]:
    """Maximise f(weights) one weight at a time over WEIGHT_GRID (ties keep the current value)."""
    w = {c: start.get(c, 0.0) for c in names}
    if not any(w.values()):
        w["gnn"] = 1.0
    best = f(w)
    bar.update()
    for _ in range(rounds):
        changed = False
        for c in names:
            for g in WEIGHT_GRID:
                if g == w[c] or not any(v for n, v in w.items() if n != c) and g == 0.0:
                    continue
                trial = {**w, c: g}
                val = f(trial)
                bar.update()
                if val > best + 1e-9:
                    best, w, changed = val, trial, True
        if not changed:
            break
    return w, best


def save_ranker(ws: Workspace, r: Ranker) -> None:
    """model/ranker.* (through graphrec.artifacts): the fitted blend and its tensors."""
    tensors = {"ease": r.ease.astype(np.float16), "ease_items": r.ease_items, "pop": r.pop,
               "warm": r.warm.astype(np.uint8)}
    if r.ridge is not None and r.ridge_mean is not None:
        tensors["ridge"] = r.ridge.astype(np.float16)
        tensors["ridge_mean"] = r.ridge_mean
    artifacts.write_ranker(ws, tensors, {"components": list(r.components), "scale": r.scale,
                                         "weights_warm": r.weights_warm, "weights_cold": r.weights_cold,
                                         "cold_offset": r.cold_offset, **r.info})


def load_ranker(workspace: Workspace | str | Path, ds: Dataset | None = None) -> Ranker | None:
    """The saved ranker, or None when there is none or it was fitted for other embeddings."""
    ws = Workspace.of(workspace)
    saved = artifacts.read_ranker(ws)
    if saved is None:
        return None
    t, info = saved
    ds = ds if ds is not None else Dataset.load(ws)
    user_emb, item_emb, _ = artifacts.read_embeddings(ws, ds)
    content = _content_matrix(ws, ds.n_items)[0]
    if "content" in info["components"] and content is None:
        return None
    ridge = {}
    if "ridge" in info["components"]:  # the content it maps is rebuilt: it must still have the fitted layout
        feats = ridge_content(ws, ds.n_items, content)
        if feats is None or "ridge" not in t or feats.shape[1] != t["ridge_mean"].shape[0]:
            return None
        ridge = {"ridge": t["ridge"].astype(np.float32), "ridge_feats": feats - t["ridge_mean"],
                 "ridge_mean": t["ridge_mean"]}
    rest = {k: v for k, v in info.items() if k not in ("components", "scale", "weights_warm", "weights_cold", "cold_offset")}
    # ease is float16 on disk: half the size, ranking unaffected
    return Ranker(user_emb, item_emb, t["warm"].astype(bool), t["pop"], t["ease_items"].astype(np.int64),
                  torch.from_numpy(t["ease"]).float().numpy(), content if "content" in info["components"] else None,
                  **ridge, scale=info["scale"], weights_warm=info["weights_warm"], weights_cold=info["weights_cold"],
                  cold_offset=float(info["cold_offset"]), info=rest)


def extend_ranker(ws: Workspace, staged: Workspace, old: Dataset, grown: Dataset) -> bool:
    """The ranker's own update step: carry the fitted blend over to the staged workspace's new embeddings.
    New items are cold (gnn + content, no pop/EASE penalty); popularity counts include the new interactions.
    False when there is no current ranker."""
    r = load_ranker(ws, old)
    if r is None:
        return False
    counts = np.asarray(grown.matrix(("train",)).sum(axis=0)).ravel()
    r.warm = np.concatenate([r.warm, np.zeros(grown.n_items - old.n_items, bool)])
    r.pop = np.log1p(counts).astype(np.float32)
    r.info["embeddings_sha256"] = artifacts.embeddings_sha256(staged)
    save_ranker(staged, r)
    return True


def ensure_ranker(workspace: Workspace | str | Path, ds: Dataset | None = None, progress: bool = True) -> Ranker:
    """The saved ranker if it matches the current embeddings, else a freshly fitted one."""
    r = load_ranker(workspace, ds)
    return r if r is not None else fit_ranker(workspace, progress=progress)
