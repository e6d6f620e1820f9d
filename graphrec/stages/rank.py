"""The ranker: one scoring space. Every list graphrec serves is ranked by a dot product of a user vector and an
item vector (`Ranker.user_vectors` / `Ranker.item_vectors`), which `graphrec export` ships as they are, so an
outside system serving the export by dot product gets graphrec's own lists (the given items excluded).

The vectors are blocks, each a component of the score, weighted by a blend fitted on validation:

    gnn      user_emb[u] . item_emb[i]                      (model/embeddings.safetensors, all items)
    ease     (history[u] @ E_user) . E_item[i]               low-rank EASE (graphrec.model.closed_form) on the training
             + (history[u] @ L_user) . L_item[i]             matrix, `ease_dim` dimensions, plus gamma times the
             ideal low-pass graph filter (`lowpass_dim` dims; GraphFilter): one component, warm items
    ridge    the same user part . content_map(f_i)           cold items: a ridge map from item content f
             (modality blocks + the graph's item-attribute / entity multi-hots and log counts, kept sparse) to
             the warm items' E_item rows, so a cold item lands in the same space as the warm ones
    pop      1 . log(1 + training interactions of i)         (warm items; cold items carry the cold offset in
             one more dimension)
    cpop     1 . cold_pop_map(f_i)                           cold items: a ridge map from the same content f to
             log(1 + interactions), fitted on the warm items (which new items will be popular), riding on the
             cold offset's dimension
    content  (mean content over the user's history) . content[i]                (only when features exist)
    group    for users with at most `short_history` given items only (cold users): the user's attribute
             values (age band, gender, ...: the graph's user-attribute edges) . P(item | value) over the training
             users holding it ("what people like u chose"); with the gnn, pop and offset blocks re-weighted for
             those users, fitted on cold_user_valid

score = sum_c w_c * component_c / scale_c, one weight set for warm items (training interactions) and one for
cold items, plus an offset for cold items. The weights and scales fold into the item vectors:

    user = [m_gnn user_emb | history @ E_user | history @ L_user | m_pop | m_off | content profile | m_group groups]
    item = [a_t item_emb | b_t (E_item or content_map(f)) | b_t L_item | w_pop pop (warm) | offset (cold) | c_t content
            | P(item | value)]

t = warm or cold item; m_* = 1 (m_group = 0) for users with a history, fitted values for users without one.
`Ranker.without_user_attributes` (the private export) leaves out the gnn and group blocks, which carry the
users' attributes.

Cold items have no collaborative signal, so their weights cover gnn, content, ridge and cpop only: lacking ease/pop
never pushes them down. Warm weights are fitted on `valid` (warm candidates), cold weights on `cold_valid`
(cold candidates), the cold offset on both together (all items; its grid widens while the best value sits on
its edge) — when the split holds out whole cold items, the cold weights on one seeded half of cold_valid's items
and the offset on the other, so the offset is not chosen on the items the cold weights were —, each by coordinate
search on NDCG@K; once without the gnn block and once with it, the gnn kept only
when that has the higher mean validation NDCG (a trained part that does not earn is not served). The EASE
lambda is chosen on warm validation NDCG of EASE alone, then the low-pass gamma on that of the whole filter, the
ridge lambda (and the cpop one) on cold_valid NDCG of the ridge (cpop) score alone. After fitting, the filter, the
content map and
popularity are refit on train+valid (the protocol: select on validation, refit on everything but held-out
test; RankSettings.refit False keeps them on train, the paper protocol). The history used for fitting is what
training saw (train + cold_user_context); at serving time it is everything the system was given (train, valid,
cold_valid, cold_user_context), and every history item is excluded from the lists.

When the train stage keeps model/embeddings_select.safetensors (trained on train only, before its refit on
train+valid), the blend is fitted with those, since the final embeddings have seen the validation answers.
Lists break score ties by item index, so they do not depend on how users are batched.

Saved as model/ranker.json (weights, scales, settings, the embeddings' sha256) and model/ranker.safetensors
("ease_user" / "ease_item" float32 [n_items, ease_dim], "pop" float32 [n_items], "warm" uint8 [n_items], with the
low-pass block "lowpass_user" / "lowpass_item" float32 [n_items, lowpass_dim] (gamma folded into the item side), and
with the ridge component "ridge" float32 [d_used, ease_dim], "ridge_mean" [d_used], "ridge_target_mean"
[ease_dim], "ridge_columns" int64 [d_used] (the content columns the fitted items use), with the cpop component
"cold_pop" float32 [d_pop, 1], "cold_pop_mean" [d_pop], "cold_pop_target_mean" [1], "cold_pop_columns" int64 [d_pop];
the item content f is rebuilt from features/ and graph/ when loading, each block cut to its fitted width;
with the group block "group_items" float32 [n_items, n_values], the users' values rebuilt from graph/).
Every fitting step is linear in the interactions (graphrec.model.closed_form).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from graphrec.core.errors import InputError
from graphrec.core.feature_store import load_features, unit_rows
from graphrec.core.progress import progress_bar
from graphrec.core.settings import RankSettings
from graphrec.core.workspace import Workspace
from graphrec.data.dataset import Dataset
from graphrec.kg.graph import KnowledgeGraph
from graphrec.model import artifacts
from graphrec.model.ann import ApproximateTopK
from graphrec.model.artifacts import RankerRecord
from graphrec.model.closed_form import (
    ContentMap,
    ease_factors,
    fit_content_maps,
    ideal_lowpass,
    interaction_svd,
)
from graphrec.model.export_format import UserFoldIn
from graphrec.model.metrics import (
    embedding_accuracy,
    hit_matrix,
    mean_metrics,
    per_user_accuracy,
    sample_validation_rows,
    validation_users,
)

log = logging.getLogger(__name__)

COMPONENTS = ("gnn", "ease", "pop", "content", "ridge", "cpop")
COLD_COMPONENTS = ("gnn", "content", "ridge", "cpop")
# scored on cold candidates only (0 elsewhere), so their spread is measured there
COLD_ONLY = (
    "ridge",
    "cpop",
)
BLOCKS = (
    "gnn",
    "ease",
    "lowpass",
    "pop",
    "offset",
    "content",
    "group",
)  # the vectors' blocks, in order
FIT_HISTORY = ("train", "cold_user_context")
LOWPASS_GAMMAS = (
    0.0,
    0.1,
    0.2,
    0.3,
    0.5,
)  # its weight next to EASE, chosen on warm validation NDCG of the filter
EASE_LAMBDAS = (
    30.0,
    100.0,
    300.0,
    1000.0,
)  # chosen on warm validation NDCG of EASE alone
WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
# in units of the components' spreads
OFFSET_GRID = tuple(np.round(np.arange(-4.0, 4.01, 0.5), 2))
MAX_OFFSET = 64.0
ANN_USER_SAMPLE = (
    20_000  # users whose vectors whiten the approximate index's projection
)
ANN_OVERSAMPLE = 5  # first-pass candidates per list item, rescored exactly
RIDGE_LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0)
GROUP_MAX_VALUES = 256  # most frequent user-attribute values kept for the group block


@dataclass(frozen=True)
class Ranker:
    """The fitted ranker: frozen values, built by `fit_blend` / `load_ranker` (docs in the module's docstring)."""

    user_emb: np.ndarray  # float32 [n_users, d]
    item_emb: np.ndarray  # float32 [n_items, d]
    warm: np.ndarray  # bool [n_items]
    pop: np.ndarray  # float32 [n_items]
    # float32 [n_items, k]: a user's EASE vector is history @ ease_user
    ease_user: np.ndarray
    # float32 [n_items, k]: low-rank EASE rows (warm), content_map(f) rows (cold)
    ease_item: np.ndarray
    # float32 [n_items, dc], unit norm per modality, zero rows = no content
    content: np.ndarray | None
    content_map: ContentMap | None = (
        None  # item content -> ease_item space (the ridge component)
    )
    cold_pop_map: ContentMap | None = (
        None  # item content -> log(1 + interactions) (the cpop component)
    )
    cold_pop: np.ndarray | None = (
        None  # float32 [n_items]: cold_pop_map(content) for cold items, 0 for warm ones
    )
    lowpass_user: np.ndarray | None = (
        None  # float32 [n_items, m]: a user's low-pass vector is history @ this
    )
    lowpass_item: np.ndarray | None = (
        None  # float32 [n_items, m]: gamma D_i^1/2 V (zero rows for cold items)
    )
    groups: sp.csr_matrix | None = (
        None  # float32 [n_users, n_values]: the users' attribute values (0/1)
    )
    group_items: np.ndarray | None = (
        None  # float32 [n_items, n_values]: P(item | value), divided by its spread
    )
    # users with at most short_history given items: gnn / offset multipliers, their own pop and group weights ({}:
    # as everyone); the private export's own (without the gnn and group blocks; None: not fitted)
    new_user_weights: dict[str, float] = field(default_factory=dict)
    short_history: int = 0
    private_new_user_weights: dict[str, float] | None = None
    scale: dict[str, float] = field(
        default_factory=lambda: {c: 1.0 for c in COMPONENTS}
    )
    weights_warm: dict[str, float] = field(
        default_factory=lambda: {"gnn": 1.0, "ease": 0.0, "pop": 0.0, "content": 0.0}
    )
    weights_cold: dict[str, float] = field(
        default_factory=lambda: {"gnn": 1.0, "content": 0.0}
    )
    cold_offset: float = 0.0
    record: RankerRecord = field(default_factory=RankerRecord)

    @property
    def n_items(self) -> int:
        return int(self.item_emb.shape[0])

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(
            c
            for c in COMPONENTS
            if (c != "content" or self.content is not None)
            and (c != "ridge" or self.content_map is not None)
            and (c != "cpop" or self.cold_pop is not None)
        )

    # -- the vectors -------------------------------------------------------------------------------
    def _user_blocks(
        self, users: np.ndarray, history: sp.csr_matrix
    ) -> dict[str, np.ndarray]:
        h = history[users]
        out = {
            "gnn": self.user_emb[users],
            "ease": np.asarray(h @ self.ease_user, np.float32),
            "pop": np.ones((len(users), 1), np.float32),
            "offset": np.ones((len(users), 1), np.float32),
        }
        if self.lowpass_user is not None:
            out["lowpass"] = np.asarray(h @ self.lowpass_user, np.float32)
        if self.content is not None:
            deg = np.asarray(h.sum(axis=1)).ravel()
            out["content"] = np.asarray(
                sp.diags(1.0 / np.maximum(deg, 1.0)) @ h @ self.content, np.float32
            )
        if self.groups is not None:
            out["group"] = self.groups[users].toarray().astype(np.float32)
        return out

    def _item_blocks(self, items: np.ndarray) -> dict[str, np.ndarray]:
        out = {
            "gnn": self.item_emb[items],
            "ease": self.ease_item[items],
            "pop": self.pop[items, None],
        }
        if self.lowpass_item is not None:
            out["lowpass"] = self.lowpass_item[items]
        if self.content is not None:
            out["content"] = self.content[items]
        if self.group_items is not None:
            out["group"] = self.group_items[items]
        return out

    def blocks(self) -> dict[str, int]:
        """The vectors' layout: block name -> width, in order; blocks whose weights are all 0 are left out."""
        ww, wc = self.weights_warm, self.weights_cold
        used = {
            "gnn": ww.get("gnn", 0.0) or wc.get("gnn", 0.0),
            "ease": ww.get("ease", 0.0)
            or (wc.get("ridge", 0.0) and self.content_map is not None),
            "lowpass": self.lowpass_item is not None and ww.get("ease", 0.0),
            "pop": ww.get("pop", 0.0) or self.new_user_weights.get("pop", 0.0),
            "offset": self.cold_offset
            or (self.cold_pop is not None and wc.get("cpop", 0.0)),
            "content": self.content is not None
            and (ww.get("content", 0.0) or wc.get("content", 0.0)),
            "group": self.groups is not None
            and self.new_user_weights.get("group", 0.0),
        }
        widths = {
            "gnn": self.item_emb.shape[1],
            "ease": self.ease_item.shape[1],
            "pop": 1,
            "offset": 1,
            "lowpass": 0 if self.lowpass_item is None else self.lowpass_item.shape[1],
            "content": 0 if self.content is None else self.content.shape[1],
            "group": 0 if self.group_items is None else self.group_items.shape[1],
        }
        return {b: widths[b] for b in BLOCKS if used[b]}

    def without_user_attributes(self) -> Ranker:
        """A copy whose user vectors carry no user attribute (the private export, docs/export.md):

            user = [history @ E_user | m_pop(n) | m_off(n) | content profile of the history]
            item = the same item blocks as before

        n = the user's number of given items. Every user block is a function of the user's history alone, with
        parameters fitted on interactions and item content (EASE, popularity, the content map) or scalars common
        to all users (blend weights): two users with the same history get the same vector whatever their
        attributes. Left out, on both sides so the dot product stays a score: `group` (the user's attribute
        values; its item side is P(item | value), a table built from the attribute holders) and `gnn` (the model
        embeds attribute nodes into x^0_u; recomputing h_u without those edges is not enough, since the item ID
        embeddings were trained against them and a linear probe still reads age band and region from the
        recomputed rows better than from a model trained without attributes: benchmarks/privacy_probe.py).
        The score is the blend's score less those two terms. Users with at most `short_history` given items
        leaned on those two blocks, so they take their own pop and offset weights, fitted without them on
        cold_user_valid by `graphrec train` (`private_new_user_weights`; interactions only)."""
        if self.private_new_user_weights is None:
            raise InputError(
                f"model/{artifacts.RANKER_JSON} has no weights for a private export (fitted by an "
                f"older graphrec): {artifacts.RETRAIN}"
            )
        return self._attribute_free(self.private_new_user_weights)

    def _attribute_free(self, new_user_weights: dict[str, float]) -> Ranker:
        return replace(
            self,
            weights_warm={**self.weights_warm, "gnn": 0.0},
            weights_cold={**self.weights_cold, "gnn": 0.0},
            groups=None,
            group_items=None,
            new_user_weights=new_user_weights,
        )

    def user_vectors(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [len(users), dim]: the users' side of the scoring space, from their history rows."""
        users = np.asarray(users, np.int64)
        parts = self._user_blocks(users, history)
        # users known by at most `short_history` items (0: by attributes only) take the new-user weights
        new = (np.diff(history[users].indptr) <= self.short_history)[:, None]
        nw = self.new_user_weights
        parts["pop"] = np.where(
            new,
            nw.get("pop", self.weights_warm.get("pop", 0.0)),
            self.weights_warm.get("pop", 0.0),
        )
        if "group" in parts:
            parts["group"] = np.where(
                new, parts["group"] * np.float32(nw.get("group", 0.0)), 0.0
            )
        for b in ("gnn", "offset"):
            parts[b] = np.where(new, parts[b] * np.float32(nw.get(b, 1.0)), parts[b])
        return _stack([parts[b].astype(np.float32) for b in self.blocks()], len(users))

    def fold_in(self) -> UserFoldIn:
        """What computes a user's vector from the items they have, outside graphrec (docs/export.md): exactly
        `user_vectors` for a user without attribute values whose gnn row is the mean of its items' gnn rows (a user
        the model never saw: `TrainedModel.user_embedding_from_items`, as `Recommender.recommend(user_items=...)`
        embeds one), and for every user when the gnn block is not served (all other blocks are functions of the
        history)."""
        # per block: its item rows; [mean mask, scale, const (long), scale, const (short)]
        rows, terms = [], []
        for block, width in self.blocks().items():
            block_rows, block_terms = self._fold_in_block(block, width)
            rows.append(block_rows)
            terms.append(block_terms)
        columns = (
            np.array(
                [np.concatenate([t[j] for t in terms]) for j in range(5)], np.float32
            )
            if terms
            else np.zeros((5, 0), np.float32)
        )
        return UserFoldIn(_stack(rows, self.n_items), columns, self.short_history)

    def _fold_in_block(
        self, block: str, width: int
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One block of `fold_in`: its item rows [n_items, width] and its five terms (mean mask, scale and constant
        for long histories, scale and constant for short ones), each [width]."""
        zero, one = np.zeros(width, np.float32), np.ones(width, np.float32)
        # [mean of the items' gnn rows, 1], times the short-history weight
        if block == "gnn":
            rows = np.concatenate(
                [self.item_emb[:, :-1], np.zeros((self.n_items, 1), np.float32)], axis=1
            )
            last = np.eye(1, width, width - 1, dtype=np.float32)[0]
            short = np.float32(self.new_user_weights.get("gnn", 1.0))
            return rows, [one, one, last, one * short, last * short]
        if block in ("ease", "lowpass", "content"):
            # sums of the items' rows; the content profile is a mean
            # blocks() lists lowpass and content only when the ranker has them
            history_rows = {
                "ease": self.ease_user,
                "lowpass": self.lowpass_user,
                "content": self.content,
            }[block]
            mean = one if block == "content" else zero
            return cast(np.ndarray, history_rows), [mean, one, zero, one, zero]
        # constants: pop and offset weights (their own below short_history), no attribute values
        long, short = self._fold_in_constants(block)
        rows = np.zeros((self.n_items, width), np.float32)
        return rows, [zero, zero, one * np.float32(long), zero, one * np.float32(short)]

    def _fold_in_constants(self, block: str) -> tuple[float, float]:
        """A constant block's value for users with a long history and for those with a short one."""
        pop = self.weights_warm.get("pop", 0.0)
        return {
            "pop": (pop, self.new_user_weights.get("pop", pop)),
            "offset": (1.0, self.new_user_weights.get("offset", 1.0)),
        }.get(block, (0.0, 0.0))

    def item_vectors(self, items: np.ndarray | None = None) -> np.ndarray:
        """float32 [len(items), dim]: the items' side, the blend's weights and scales folded in."""
        items = (
            np.arange(self.n_items) if items is None else np.asarray(items, np.int64)
        )
        parts, warm = self._item_blocks(items), self.warm[items][:, None]

        def weight(warm_name: str, cold_name: str) -> np.ndarray:
            return np.where(
                warm,
                self.weights_warm.get(warm_name, 0.0) / self.scale[warm_name],
                self.weights_cold.get(cold_name, 0.0) / self.scale.get(cold_name, 1.0),
            ).astype(np.float32)

        offset = np.full((len(items), 1), self.cold_offset, np.float32)
        # the cold items' content-predicted popularity rides on their offset
        if self.cold_pop is not None:
            offset += self.cold_pop[items, None] * np.float32(
                self.weights_cold.get("cpop", 0.0) / self.scale["cpop"]
            )
        folded = {
            "gnn": parts["gnn"] * weight("gnn", "gnn"),
            "ease": parts["ease"] * weight("ease", "ridge"),
            "pop": np.where(warm, parts["pop"] / np.float32(self.scale["pop"]), 0.0),
            "offset": np.where(warm, 0.0, offset),
        }
        # the filter's second part, weighted as its first; a cold item's row is zero
        if "lowpass" in parts:
            folded["lowpass"] = parts["lowpass"] * weight("ease", "ridge")
        if "content" in parts:
            folded["content"] = parts["content"] * weight("content", "content")
        if "group" in parts:
            folded["group"] = parts["group"]
        return _stack([folded[b].astype(np.float32) for b in self.blocks()], len(items))

    # -- scoring -----------------------------------------------------------------------------------
    def component_scores(
        self, users: np.ndarray, cand: np.ndarray, history: sp.csr_matrix
    ) -> dict[str, torch.Tensor]:
        """Raw (unscaled) component scores float32 [len(users), len(cand)], for fitting the blend."""
        u, i = self._user_blocks(users, history), self._item_blocks(cand)
        dot = {
            b: torch.from_numpy(u[b]) @ torch.from_numpy(i[b]).T
            for b in ("gnn", "ease", "lowpass", "content")
            if b in i
        }
        warm = torch.from_numpy(self.warm[cand])
        # the closed-form graph filter: EASE plus its gamma-weighted ideal low-pass, one component
        out = {
            "gnn": dot["gnn"],
            "ease": (dot["ease"] + dot["lowpass"] if "lowpass" in dot else dot["ease"])
            * warm,
            "pop": torch.from_numpy(self.pop[cand]).expand(len(users), len(cand)),
        }
        if "content" in dot:
            out["content"] = dot["content"]
        if self.content_map is not None:
            out["ridge"] = dot["ease"] * ~warm
        if self.cold_pop is not None:
            out["cpop"] = torch.from_numpy(
                np.where(self.warm[cand], 0.0, self.cold_pop[cand]).astype(np.float32)
            ).expand(len(users), len(cand))
        return out

    def blend(
        self,
        comps: dict[str, torch.Tensor],
        cand: np.ndarray,
        weights_warm: dict[str, float] | None = None,
        weights_cold: dict[str, float] | None = None,
        cold_offset: float | None = None,
    ) -> torch.Tensor:
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

    def topk(
        self,
        users: np.ndarray,
        k: int,
        history: sp.csr_matrix,
        candidates: np.ndarray | None = None,
        batch: int = 1024,
        progress: bool = False,
        approximate: bool = False,
        exclude_history: bool = True,
        exclude: sp.csr_matrix | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k candidate items per user by the dot product of the vectors, history items excluded (unless
        `exclude_history` is False): items int64 [n, k] (-1 = no more candidates), scores float32 [n, k]; k is
        cut to the catalogue (a list holds every item at most), as implicit cuts N. exclude: more items to leave
        out, one row per user of `users` (they do not enter the user's vector, as history does).

        approximate: ANN_OVERSAMPLE x k candidates from a first pass in a few dimensions (`graphrec.model.ann`,
        its projection whitened by up to ANN_USER_SAMPLE of these users), rescored exactly, instead of scoring every
        candidate; for catalogues where users x items x dim is too much. The scores are exact dot products."""
        if k < 1:
            raise InputError(f"--k must be at least 1, got {k}")
        # before the [n, k] allocation: --k 10**12 asks for every item
        k = min(k, self.n_items)
        users = np.asarray(users, np.int64)
        cand = (
            np.arange(self.n_items)
            if candidates is None
            else np.unique(np.asarray(candidates, np.int64))
        )
        listed = min(k, len(cand))  # the lists' length: at most every candidate
        items = np.full((len(users), k), -1, np.int64)
        scores = np.full((len(users), k), np.nan, np.float32)
        if listed == 0 or len(users) == 0:
            return items, scores
        index = self._candidates(cand, users, history, approximate)
        steps = range(0, len(users), batch)
        for start in progress_bar(
            steps, show=progress and len(steps) > 1, desc="ranking", unit="batch"
        ):
            at = np.arange(start, min(start + batch, len(users)))
            known = self._excluded(users[at], history, exclude_history, exclude, at)
            uv = self.user_vectors(users[at], history)
            items[at, :listed], scores[at, :listed] = index.top(uv, known, listed)
        return items, scores

    def _candidates(
        self,
        cand: np.ndarray,
        users: np.ndarray,
        history: sp.csr_matrix,
        approximate: bool,
    ) -> _Candidates:
        """`topk`'s candidates `cand` with their vectors, and the approximate index over them when asked for."""
        item_np = self.item_vectors(cand)
        ann = None
        if approximate:  # the users' second moment whitens the first pass's projection: a sample of those served
            sample = np.sort(
                np.random.default_rng(0).choice(
                    users, min(len(users), ANN_USER_SAMPLE), replace=False
                )
            )
            ann = ApproximateTopK(item_np, self.user_vectors(sample, history))
        col_of = _columns_of(cand, self.n_items)
        return _Candidates(cand, col_of, torch.from_numpy(item_np), ann)

    def _excluded(
        self,
        users: np.ndarray,
        history: sp.csr_matrix,
        exclude_history: bool,
        exclude: sp.csr_matrix | None,
        at: np.ndarray,
    ) -> sp.csr_matrix:
        """The items left out of these users' lists: their history (unless `exclude_history` is False) and their
        rows `at` of `exclude`."""
        known = (
            history[users]
            if exclude_history
            else sp.csr_matrix((len(users), self.n_items), dtype=np.float32)
        )
        if exclude is not None:
            known = (known + exclude[at]).tocsr()
        return known


def _search_excluding(
    ann: ApproximateTopK,
    uv: np.ndarray,
    item_vec: torch.Tensor,
    known: sp.csr_matrix,
    col_of: np.ndarray,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top k among each user's ANN_OVERSAMPLE x k best first-pass candidates that are not known, stably
    ordered (ties by candidate column, as `topk_stable` orders the exact lists)."""
    first = _mask_known(ann.scores(uv), known, col_of)
    first_val, rows = torch.topk(first, min(ANN_OVERSAMPLE * k, first.shape[1]), dim=1)
    # column order: ties in the exact scores break as in the exact pass
    rows, order = torch.sort(rows, dim=1)
    first_val = torch.gather(first_val, 1, order)
    user = torch.from_numpy(np.ascontiguousarray(uv, np.float32))
    exact = torch.empty(rows.shape)
    for s in range(0, len(uv), 128):  # [users, candidates, dim] a few users at a time
        exact[s : s + 128] = torch.bmm(
            item_vec[rows[s : s + 128]], user[s : s + 128, :, None]
        )[:, :, 0]
    exact[
        ~torch.isfinite(first_val)
    ] = -torch.inf  # known items, or fewer candidates than asked for
    val, at = topk_stable(exact, min(k, rows.shape[1]))
    idx = torch.gather(rows, 1, at)
    if val.shape[1] < k:
        val = torch.cat([val, torch.full((len(uv), k - val.shape[1]), -torch.inf)], 1)
        idx = torch.cat(
            [idx, torch.full((len(uv), k - idx.shape[1]), -1, dtype=idx.dtype)], 1
        )
    return val, torch.where(torch.isfinite(val), idx, -1)


def _stack(blocks: list[np.ndarray], n: int) -> np.ndarray:
    return (
        np.ascontiguousarray(np.concatenate(blocks, axis=1), np.float32)
        if blocks
        else np.zeros((n, 0), np.float32)
    )


def topk_stable(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk with ties broken by column (lowest first), so lists do not depend on batch composition.

    Items with equal scores are common (e.g. cold items with identical content); torch.topk orders them
    arbitrarily. Take the top k + slack columns, then sort them stably; the rare rows whose tie at the k-th
    value runs past the slack take every tied column."""
    n = scores.shape[1]
    m = min(k + 16, n)
    val, idx = _sorted_by_column(*torch.topk(scores, m, dim=1))
    spill = (
        torch.nonzero(val[:, k - 1] == val[:, m - 1]).ravel()
        if m < n
        else torch.empty(0, dtype=torch.long)
    )
    val, idx = val[:, :k].clone(), idx[:, :k].clone()
    for r in spill.tolist():
        row = scores[r]
        tied = int((row >= val[r, k - 1]).sum())
        v, i = _sorted_by_column(*torch.topk(row[None], tied, dim=1))
        val[r], idx[r] = v[0, :k], i[0, :k]
    return val, idx


def _sorted_by_column(
    val: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of topk output ordered by value, descending, equal values by column."""
    idx, order = torch.sort(idx, dim=1)
    val = torch.gather(val, 1, order)
    val, order = torch.sort(val, dim=1, descending=True, stable=True)
    return val, torch.gather(idx, 1, order)


@dataclass(frozen=True)
class _Candidates:
    """The candidates of one `Ranker.topk` call, with what scores them: their vectors, each item's column among
    them, and the approximate index's first pass over them (None: every candidate is scored)."""

    items: np.ndarray  # int64 [n_cand]: the candidates' item indices, sorted
    # int64 [n_items]: an item's column among the candidates, -1 if not one
    col_of: np.ndarray
    vectors: torch.Tensor  # float32 [n_cand, dim]
    ann: ApproximateTopK | None

    def top(
        self, uv: np.ndarray, known: sp.csr_matrix, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best candidates per user vector, the known items left out: item ids (-1: no more candidates)
        and exact scores (nan there)."""
        with torch.no_grad():
            if self.ann is not None:
                top_val, top_idx = _search_excluding(
                    self.ann, uv, self.vectors, known, self.col_of, k
                )
            else:
                scores = torch.from_numpy(uv) @ self.vectors.T
                top_val, top_idx = topk_stable(
                    _mask_known(scores, known, self.col_of), k
                )
        val, idx = top_val.numpy(), top_idx.numpy()
        found = np.isfinite(val)
        return np.where(found, self.items[idx], -1), np.where(found, val, np.nan)


def _columns_of(cand: np.ndarray, n_items: int) -> np.ndarray:
    """int64 [n_items]: each item's column among the candidates `cand`, -1 for the items that are not one."""
    col_of = np.full(n_items, -1, np.int64)
    col_of[cand] = np.arange(len(cand))
    return col_of


def _mask_known(
    scores: torch.Tensor, known: sp.csr_matrix, col_of: np.ndarray
) -> torch.Tensor:
    coo = known.tocoo()
    cols = col_of[coo.col]
    keep = cols >= 0
    scores[
        torch.from_numpy(coo.row[keep].astype(np.int64)), torch.from_numpy(cols[keep])
    ] = float("-inf")
    return scores


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
    return (np.concatenate(blocks, axis=1) / np.float32(np.sqrt(len(blocks)))).astype(
        np.float32
    ), sorted(feats)


def _graph(ws: Workspace) -> KnowledgeGraph | None:
    return KnowledgeGraph.load(ws) if ws.stage_dir("graph").is_dir() else None


def attribute_blocks(
    kg: KnowledgeGraph | None, src: str, n: int
) -> list[sp.csr_matrix]:
    """Per attribute relation of the graph from `src` ("item" or "user") to attribute values or external
    entities: the 0/1 matrix [n, n_values], in a fixed relation order; [] without a graph."""
    if kg is None:
        return []
    blocks = []
    for (s_, _, dst), e in sorted(kg.edges.items()):
        if s_ == src and dst not in ("item", "user") and len(e):
            m = sp.csr_matrix(
                (np.ones(len(e), np.float32), (e.src, e.dst)),
                shape=(n, kg.num_nodes[dst]),
            )
            m.data[:] = 1.0
            blocks.append(m)
    return blocks


def _cut(
    blocks: list[sp.csr_matrix], widths: Sequence[int] | None
) -> list[sp.csr_matrix] | None:
    """Each block cut to its fitted width (values that appeared later have no fitted weight), or None when
    the blocks no longer have the fitted layout."""
    if widths is None:
        return blocks
    if len(widths) != len(blocks) or any(
        b.shape[1] < w for b, w in zip(blocks, widths)
    ):
        return None
    return [b[:, :w] for b, w in zip(blocks, widths)]


def ridge_content(
    kg: KnowledgeGraph | None,
    n_items: int,
    content: np.ndarray | None,
    widths: Sequence[int] | None = None,
) -> tuple[sp.csr_matrix | None, list[int]]:
    """The content map's item content (sparse) and its blocks' widths: the modality blocks, then per
    item-attribute relation of the graph (attributes, external entities) its multi-hot (unit norm per
    relation, so a relation with many values per item does not dominate) and log(1 + number of values)
    (tag counts predict popularity). `widths` (those fitted) cuts each block to its fitted width."""
    blocks = [] if content is None else [sp.csr_matrix(content)]
    for m in attribute_blocks(kg, "item", n_items):
        deg = np.asarray(m.sum(axis=1)).ravel()
        blocks += [
            sp.diags(1.0 / np.sqrt(np.maximum(deg, 1.0))) @ m,
            sp.csr_matrix(np.log1p(deg)[:, None]),
        ]
    cut = _cut(blocks, widths)
    if not cut:
        return None, []
    return sp.hstack(cut, format="csr", dtype=np.float32), [b.shape[1] for b in cut]


def user_groups(
    kg: KnowledgeGraph | None, n_users: int, layout: dict[str, list[int]] | None = None
) -> tuple[sp.csr_matrix | None, dict[str, list[int]]]:
    """The users' attribute values [n_users, n_values] (0/1; the GROUP_MAX_VALUES most held) and the layout
    that rebuilds the same columns later ({"widths": per relation, "columns": kept}); None without any."""
    blocks = _cut(
        attribute_blocks(kg, "user", n_users),
        None if layout is None else layout["widths"],
    )
    if not blocks:
        return None, {}
    g = sp.hstack(blocks, format="csr", dtype=np.float32)
    if layout is None:
        held = np.asarray(g.sum(axis=0)).ravel()
        keep = np.sort(np.argsort(-held, kind="stable")[:GROUP_MAX_VALUES])
        layout = {
            "widths": [b.shape[1] for b in blocks],
            "columns": keep[held[keep] > 0].tolist(),
        }
    return g[:, layout["columns"]].tocsr(), layout


def group_popularity(groups: sp.csr_matrix, x: sp.csr_matrix) -> np.ndarray:
    """P(item | value) float32 [n_items, n_values] among the users with interactions in x (what people who
    share an attribute value chose; the attr-popularity baseline's table)."""
    known = (np.diff(x.indptr) > 0).astype(np.float32)
    a = sp.diags(known) @ groups
    size = np.maximum(np.asarray(a.sum(axis=0)).ravel(), 1.0)
    return (
        np.asarray((x.T @ a).toarray(), np.float32) / size.astype(np.float32)
    ).astype(np.float32)


def _validation_ndcg(
    user: np.ndarray,
    item: np.ndarray,
    truth: sp.csr_matrix,
    exclude: sp.csr_matrix,
    cand: np.ndarray,
    k: int,
) -> float:
    return embedding_accuracy(
        torch.from_numpy(user), torch.from_numpy(item), truth, exclude, cand, k
    )[0]


def select_ease(
    x: sp.csr_matrix,
    warm: np.ndarray,
    ds: Dataset,
    k: int,
    dim: int,
    lambdas: Sequence[float],
) -> GraphFilter:
    """Low-rank EASE on x (the graph filter without its low-pass part) with the lambda of the best warm `valid`
    NDCG@k of EASE alone (history = what training saw)."""
    return select_filter(x, warm, ds, k, dim, 0, lambdas, (0.0,))


@dataclass(frozen=True)
class GraphFilter:
    """The closed-form item-item graph filter of the training matrix, as two pairs of factors: a user's score
    for item j is (h @ ease_user) . ease_item[j] + (h @ lowpass_user) . lowpass_item[j] for history h, i.e.
    h (B + gamma D^-1/2 V V' D^1/2)[:, j]: low-rank EASE plus gamma times GF-CF's ideal low-pass (`linear`)."""

    ease_lambda: float
    gamma: float
    ease_user: np.ndarray  # float32 [n_items, k]
    ease_item: np.ndarray  # float32 [n_items, k]
    lowpass_user: np.ndarray | None  # float32 [n_items, m]; None when gamma is 0
    lowpass_item: np.ndarray | None  # float32 [n_items, m], gamma folded in
    trials: dict[str, Any]


def select_filter(
    x: sp.csr_matrix,
    warm: np.ndarray,
    ds: Dataset,
    k: int,
    ease_dim: int,
    lowpass_dim: int,
    lambdas: Sequence[float],
    gammas: Sequence[float],
) -> GraphFilter:
    """The graph filter on x: EASE's lambda with the best warm `valid` NDCG@k of EASE alone, then the low-pass
    weight gamma with the best of the whole filter (history = what training saw; one value each: no search)."""
    singular_values, vectors = interaction_svd(x, ease_dim)
    low = ideal_lowpass(x, lowpass_dim) if lowpass_dim and any(gammas) else None
    score = _filter_ndcg(ds, warm, k, low)
    trials: dict[str, Any] = {}
    factors = {
        float(lam): ease_factors(singular_values, vectors, lam) for lam in lambdas
    }
    lam = float(lambdas[0])
    if len(lambdas) > 1:
        trials["ease_validation_ndcg"] = {
            str(m): round(score(f, 0.0), 6) for m, f in factors.items()
        }
        lam = max(factors, key=lambda m: trials["ease_validation_ndcg"][str(m)])
    gamma = float(gammas[0]) if low is not None else 0.0
    if low is not None and len(gammas) > 1:
        trials["lowpass_validation_ndcg"] = {
            str(g): round(score(factors[lam], float(g)), 6) for g in gammas
        }
        gamma = float(
            max(gammas, key=lambda g: trials["lowpass_validation_ndcg"][str(g)])
        )
    return _graph_filter(lam, gamma, factors[lam], low, trials)


def _filter_ndcg(
    ds: Dataset,
    warm: np.ndarray,
    k: int,
    low: tuple[np.ndarray, np.ndarray] | None,
) -> Callable[[tuple[np.ndarray, np.ndarray], float], float]:
    """The warm `valid` NDCG@k of a graph filter given its EASE factors and its low-pass weight gamma (0: EASE
    alone; history = what training saw), for `select_filter`'s choices."""
    history = ds.matrix(FIT_HISTORY)
    cand = np.flatnonzero(warm)
    truth, seen = (
        sample_validation_rows(ds.matrix(("valid",)), len(cand)).astype(bool),
        history.astype(bool),
    )

    def score(lam_factors: tuple[np.ndarray, np.ndarray], gamma: float) -> float:
        # gamma is 0 without a low-pass part
        user = [history @ lam_factors[0]] + (
            [history @ low[0]] if gamma and low is not None else []
        )
        item = [lam_factors[1]] + (
            [gamma * low[1]] if gamma and low is not None else []
        )
        return _validation_ndcg(
            np.hstack(user).astype(np.float32),
            np.hstack(item).astype(np.float32),
            truth,
            seen,
            cand,
            k,
        )

    return score


def _graph_filter(
    lam: float,
    gamma: float,
    ease: tuple[np.ndarray, np.ndarray],
    low: tuple[np.ndarray, np.ndarray] | None,
    trials: dict[str, Any],
) -> GraphFilter:
    """The filter of the chosen EASE factors and low-pass weight (no low-pass part when gamma is 0)."""
    ease_user, ease_item = ease
    if not gamma or low is None:
        return GraphFilter(lam, 0.0, ease_user, ease_item, None, None, trials)
    return GraphFilter(
        lam,
        gamma,
        ease_user,
        ease_item,
        low[0],
        (gamma * low[1]).astype(np.float32),
        trials,
    )


@dataclass(frozen=True)
class ColdMaps:
    """The cold items' two content maps, fitted on the warm items (`fit_cold_maps`):

    * ridge (the ridge component): content -> the warm items' ease_item rows, giving the cold items theirs;
    * pop (the cpop component, or None): content -> log(1 + interactions), the cold items' predicted popularity
      (which new items will be popular; a strong cold-start baseline alone)."""

    ridge: ContentMap
    pop: ContentMap | None
    # the lambdas chosen, and each lambda's validation NDCG
    selection: dict[str, Any] = field(default_factory=dict)

    def on(self, r: Ranker, feats: sp.csr_matrix) -> Ranker:
        """`r` with these maps and the cold items' rows they give (warm rows unchanged)."""
        cold_pop = (
            None
            if self.pop is None
            else _mapped(self.pop, feats, r.warm, np.zeros((r.n_items, 1)))[:, 0]
        )
        return replace(
            r,
            ease_item=_mapped(self.ridge, feats, r.warm, r.ease_item),
            content_map=self.ridge,
            cold_pop_map=self.pop,
            cold_pop=cold_pop,
        )


def _mapped(
    m: ContentMap, feats: sp.csr_matrix, warm: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """float32 `rows` with the cold items' rows replaced by the map of their content."""
    out = rows.astype(np.float32)  # a copy
    cold = np.flatnonzero(~warm)
    out[cold] = m(feats[cold])
    return out


def fit_cold_maps(
    r: Ranker,
    feats: sp.csr_matrix,
    x: sp.csr_matrix,
    ridge_lambdas: Sequence[float],
    pop_lambdas: Sequence[float],
    ds: Dataset | None = None,
    k: int = 20,
) -> ColdMaps | None:
    """The cold maps from content `feats` to r's warm ease_item rows and to log(1 + interactions in x), in one ridge
    solve (one decomposition of the content for every lambda and both targets). No pop_lambdas: no cpop map.

    With one lambda each they are fitted as they are (the refit). With several, each keeps the lambda with the best
    cold_valid NDCG@k of its own score alone (`ds` gives cold_valid); None when there is no cold_valid to select
    on."""
    maps = _cold_map_candidates(r, feats, x, ridge_lambdas, pop_lambdas)
    chosen = {"ridge": ridge_lambdas[0]}
    if pop_lambdas:
        chosen["cold_pop"] = pop_lambdas[0]
    selection: dict[str, Any] = {}
    if len(ridge_lambdas) > 1:
        if ds is None:
            raise ValueError(
                "selecting the cold maps' lambdas needs the dataset (its cold_valid)"
            )
        trials = _cold_map_trials(r, feats, ds, k, maps)
        if trials is None:
            return None
        for name, ndcg in trials.items():
            if ndcg:
                chosen[name] = max(ndcg, key=ndcg.__getitem__)
                selection.update(
                    {
                        f"{name}_lambda": chosen[name],
                        f"{name}_validation_ndcg": {
                            str(lam): round(v, 6) for lam, v in ndcg.items()
                        },
                    }
                )
    ridge, pop = maps["ridge"], maps["cold_pop"]
    return ColdMaps(
        ridge[chosen["ridge"]], pop[chosen["cold_pop"]] if pop else None, selection
    )


def _cold_map_candidates(
    r: Ranker,
    feats: sp.csr_matrix,
    x: sp.csr_matrix,
    ridge_lambdas: Sequence[float],
    pop_lambdas: Sequence[float],
) -> dict[str, dict[float, ContentMap]]:
    """The ridge and cold-pop maps fitted on the warm items for each of their lambdas ("ridge", "cold_pop" ->
    lambda -> map), all from one ridge solve of the content against both targets."""
    rows = np.flatnonzero(r.warm)
    width = r.ease_item.shape[1]
    target = np.hstack(
        [r.ease_item[rows], np.log1p(np.asarray(x.sum(axis=0)).ravel())[rows, None]]
    )
    lambdas = sorted({*ridge_lambdas, *pop_lambdas})
    fitted = dict(zip(lambdas, fit_content_maps(feats[rows], target, lambdas)))
    return {
        "ridge": {
            lam: fitted[lam].target_columns(slice(0, width)) for lam in ridge_lambdas
        },
        "cold_pop": {
            lam: fitted[lam].target_columns(slice(width, width + 1))
            for lam in pop_lambdas
        },
    }


def _cold_map_trials(
    r: Ranker,
    feats: sp.csr_matrix,
    ds: Dataset,
    k: int,
    maps: dict[str, dict[float, ContentMap]],
) -> dict[str, dict[float, float]] | None:
    """Each candidate map's cold_valid NDCG@k of its own score alone ("ridge", "cold_pop" -> lambda -> NDCG);
    None when there is no cold_valid or no cold item to score."""
    cold = np.flatnonzero(~r.warm)
    truth = sample_validation_rows(ds.matrix(("cold_valid",)), len(cold)).astype(bool)
    if truth.nnz == 0 or len(cold) == 0:
        return None
    history = ds.matrix(FIT_HISTORY)
    # each map's score alone: the user's EASE vector . the mapped rows; 1 . the predicted popularity
    user = {
        "ridge": np.asarray(history @ r.ease_user, np.float32),
        "cold_pop": np.ones((ds.n_users, 1), np.float32),
    }
    base = {"ridge": r.ease_item, "cold_pop": np.zeros((r.n_items, 1))}
    return {
        name: {
            lam: _validation_ndcg(
                user[name],
                _mapped(m, feats, r.warm, base[name]),
                truth,
                history.astype(bool),
                cold,
                k,
            )
            for lam, m in by_lambda.items()
        }
        for name, by_lambda in maps.items()
    }


def fit_blend(
    workspace: Workspace | str | Path,
    embeddings: tuple[np.ndarray, np.ndarray],
    settings: RankSettings | None = None,
    *,
    ds: Dataset | None = None,
    progress: bool = True,
) -> Ranker:
    """Fit the ranker's blend on validation: the ranking step of `graphrec train`.

    The collaborative parts are built from train, the blend is fitted on validation with the GNN's
    selection-phase `embeddings`, then the collaborative parts are refit on train+valid (unless
    `settings.refit` is False). Reads the workspace, writes nothing (`save_ranker` does, into the
    model/ folder a writer stages). The returned ranker decides whether the GNN block is served
    (`record.gnn_kept`); `graphrec train` refits the GNN only when it is, then hands the final
    embeddings to `serve_embeddings`.

    Args:
        workspace: The workspace (or its folder) read: dataset/, and features/ and graph/ where
            present.
        embeddings: The GNN's selection-phase (user, item) embeddings, trained on train only: one
            row per user / item.
        settings: The `RankSettings`; None: the defaults.
        ds: The workspace's dataset, when the caller has it loaded; None: loaded from the workspace.
        progress: Show progress bars.

    Returns:
        The fitted `Ranker`, its fit recorded in `record` (k, the chosen EASE lambda and low-pass
        gamma, the modalities, `gnn_kept`, the selection on validation).

    Raises:
        InputError: On bad input: a dataset not split into train/valid/test, or a setting out of
            range (or one whose EASE block cannot fit in memory).

    Example::

        from graphrec.core.settings import RankSettings
        from graphrec.core.workspace import Workspace
        from graphrec.data.dataset import Dataset
        from graphrec.model import artifacts
        from graphrec.stages.rank import fit_blend

        ws = Workspace("ws")
        ds = Dataset.load(ws)
        user, item, _ = artifacts.read_embeddings(ws, ds, select=True)
        ranker = fit_blend(ws, (user, item), RankSettings(k=20), ds=ds)
    """
    ws = Workspace.of(workspace)
    s = settings or RankSettings()
    ds = _split_dataset(ws, ds)
    s.check(ds.n_users, ds.n_items)
    k = s.k
    train = ds.matrix(("train",))
    # during selection; served lists treat train+valid items as warm
    warm = ds.warm_items(("train",))
    r, gf, modalities = _selection_ranker(ws, ds, s, embeddings, train, warm)
    # loaded once: item attributes for the content map, user attributes for the group block
    kg = _graph(ws)
    feats, widths = ridge_content(kg, ds.n_items, r.content)
    r, cold = _with_cold_maps(r, feats, train, ds, k)
    r, blend = _with_blend(r, ds, s, progress)
    groups, group_layout = user_groups(kg, ds.n_users)
    r, new_users = _with_new_users(r, ds, s, groups, train)
    r = _refit(r, ds, s, gf, cold, feats, train)
    selection = {
        "warm_items": int(warm.sum()),
        **gf.trials,
        **(cold.selection if cold else {}),
        **blend.selection,
        **(new_users.selection if new_users else {}),
    }
    return replace(
        r,
        record=RankerRecord(
            k=k,
            max_fit_users=s.max_fit_users,
            ease_lambda=gf.ease_lambda,
            lowpass_gamma=gf.gamma,
            modalities=tuple(modalities),
            ridge_widths=tuple(widths) if widths is not None else None,
            group_layout=group_layout if r.groups is not None else None,
            gnn_kept=blend.gnn_kept,
            selection=selection,
        ),
    )


def _split_dataset(ws: Workspace, ds: Dataset | None) -> Dataset:
    """`ds`, or the workspace's dataset, refused in one line when it is not split: the blend is fitted on
    validation."""
    ds = ds if ds is not None else Dataset.load(ws)
    if not ds.is_split:
        raise InputError(
            "dataset is not split into train/valid/test: run `graphrec data split` first",
            file=ws.path,
        )
    return ds


def _selection_ranker(
    ws: Workspace,
    ds: Dataset,
    settings: RankSettings,
    embeddings: tuple[np.ndarray, np.ndarray],
    train: sp.csr_matrix,
    warm: np.ndarray,
) -> tuple[Ranker, GraphFilter, list[str]]:
    """The ranker the blend is selected with, before any fitting of its blend: the embeddings, popularity and
    the graph filter on train (its lambda and gamma chosen on validation), the content; with the filter and the
    content's modalities."""
    lambdas = EASE_LAMBDAS if settings.ease_lambda is None else (settings.ease_lambda,)
    log.info(
        "ranker: graph filter, low-rank EASE (%d dims, lambda %s) + ideal low-pass (%d dims) on %d warm items",
        settings.ease_dim,
        " / ".join(map(str, lambdas)),
        settings.lowpass_dim,
        int(warm.sum()),
    )
    graph_filter = select_filter(
        train,
        warm,
        ds,
        settings.k,
        settings.ease_dim,
        settings.lowpass_dim,
        lambdas,
        LOWPASS_GAMMAS,
    )
    content, modalities = _content_matrix(ws, ds.n_items)
    ranker = Ranker(
        *embeddings,
        warm,
        _log_pop(train),
        graph_filter.ease_user,
        graph_filter.ease_item,
        content,
        lowpass_user=graph_filter.lowpass_user,
        lowpass_item=graph_filter.lowpass_item,
    )
    return ranker, graph_filter, modalities


def _with_cold_maps(
    r: Ranker, feats: sp.csr_matrix | None, train: sp.csr_matrix, ds: Dataset, k: int
) -> tuple[Ranker, ColdMaps | None]:
    """r with the cold items' content maps, their lambdas chosen on cold_valid, and the maps (None without item
    content, warm items or cold_valid: r as it is)."""
    cold = (
        fit_cold_maps(r, feats, train, RIDGE_LAMBDAS, RIDGE_LAMBDAS, ds, k)
        if feats is not None and r.warm.any()
        else None
    )
    return (cold.on(r, feats) if cold is not None else r), cold


def _with_blend(
    r: Ranker, ds: Dataset, settings: RankSettings, progress: bool
) -> tuple[Ranker, BlendFit]:
    """r with the blend's weights, cold offset and scales fitted on validation (`fit_weights`), and that fit."""
    blend = fit_weights(
        r,
        ds,
        settings.k,
        settings.max_fit_users,
        progress,
        settings.keep_gnn,
        settings.gnn,
    )
    blended = replace(
        r,
        weights_warm=blend.weights_warm,
        weights_cold=blend.weights_cold,
        cold_offset=blend.cold_offset,
        scale=blend.scale,
    )
    return blended, blend


def _with_new_users(
    r: Ranker,
    ds: Dataset,
    settings: RankSettings,
    groups: sp.csr_matrix | None,
    train: sp.csr_matrix,
) -> tuple[Ranker, NewUsersFit | None]:
    """r with the weights of users with a short history (and the group block), and the private export's own
    weights for them; with the first fit (None without cold_user_valid)."""
    k, max_users = settings.k, settings.max_fit_users
    new_users = fit_new_users(r, ds, k, max_users, groups, train)
    r = new_users.on(r) if new_users is not None else r
    # the private export's own (no gnn, no group block): fitted here, so no reader ever fits
    attribute_free = r._attribute_free(
        {b: w for b, w in r.new_user_weights.items() if b not in ("gnn", "group")}
    )
    private = fit_new_users(attribute_free, ds, k, max_users, None, train)
    private_weights = (
        attribute_free.new_user_weights if private is None else private.weights
    )
    return replace(r, private_new_user_weights=private_weights), new_users


def _refit(
    r: Ranker,
    ds: Dataset,
    settings: RankSettings,
    selected: GraphFilter,
    cold: ColdMaps | None,
    feats: sp.csr_matrix | None,
    train: sp.csr_matrix,
) -> Ranker:
    """r as served: its warm items, and its collaborative parts (graph filter, popularity, cold maps, group table)
    refit with the values chosen, on what served lists treat as given (train+valid; train when not `refit`)."""
    # Selected on validation, served refit: the collaborative parts see train+valid, as the embeddings do.
    # (cold_valid only selects: refitting on it would turn the cold items it shares with cold_test warm.)
    fitted_on = ds.refit_parts if settings.refit else ("train",)
    given = ds.matrix(fitted_on)
    r = replace(r, warm=ds.warm_items(fitted_on))
    if given.nnz > train.nnz:
        r = _refit_filter(r, ds, settings, selected, given)
    if cold is not None:
        r = _refit_cold_maps(r, cold, feats, given)
    if r.group_items is not None:
        r = replace(
            r,
            group_items=group_popularity(r.groups, given)
            / np.float32(r.scale["group"]),
        )
    return r


def _refit_filter(
    r: Ranker,
    ds: Dataset,
    settings: RankSettings,
    selected: GraphFilter,
    given: sp.csr_matrix,
) -> Ranker:
    """r with the graph filter (its chosen lambda and gamma) and popularity refit on `given`."""
    final = select_filter(
        given,
        r.warm,
        ds,
        settings.k,
        settings.ease_dim,
        settings.lowpass_dim,
        (selected.ease_lambda,),
        (selected.gamma,),
    )
    return replace(
        r,
        pop=_log_pop(given),
        ease_user=final.ease_user,
        ease_item=final.ease_item,
        lowpass_user=final.lowpass_user,
        lowpass_item=final.lowpass_item,
    )


def _refit_cold_maps(
    r: Ranker, cold: ColdMaps, feats: sp.csr_matrix | None, given: sp.csr_matrix
) -> Ranker:
    """r with the cold maps refit (their chosen lambdas) against its refit rows and the popularity in `given`."""
    pop_lambda = [cold.selection["cold_pop_lambda"]] if cold.pop is not None else []
    # one lambda each: fitted as they are, never None
    refit_maps = cast(
        ColdMaps,
        fit_cold_maps(r, feats, given, [cold.selection["ridge_lambda"]], pop_lambda),
    )
    return refit_maps.on(r, feats)


def _log_pop(x: sp.csr_matrix) -> np.ndarray:
    return np.log1p(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)


def serve_embeddings(
    r: Ranker, user: np.ndarray, item: np.ndarray, sha256: str, refit: bool
) -> Ranker:
    """The fitted ranker serving the GNN's final embeddings (model/embeddings.safetensors, whose sha256 the
    ranker records); `refit`: they are the refit ones, not those the blend was fitted with."""
    return replace(
        r,
        user_emb=user,
        item_emb=item,
        record=replace(
            r.record,
            fitted_with=artifacts.SELECT_EMBEDDINGS if refit else artifacts.EMBEDDINGS,
            embeddings_sha256=sha256,
        ),
    )


@dataclass(frozen=True)
class BlendFit:
    """The blend's fitted values (`fit_weights`) and what validation said of them."""

    weights_warm: dict[str, float]
    weights_cold: dict[str, float]
    cold_offset: float
    scale: dict[str, float]  # each component's spread on validation candidates
    gnn_kept: (
        bool  # the blend with the GNN's block beat the closed-form blend without it
    )
    # users fitted on, validation NDCG with and without the GNN
    selection: dict[str, Any]


def fit_weights(
    r: Ranker,
    ds: Dataset,
    k: int,
    max_users: int,
    progress: bool,
    keep_gnn: bool,
    gnn: bool = True,
) -> BlendFit:
    """The blend of r's components by coordinate search on validation NDCG@k (warm weights on `valid`, cold ones
    on `cold_valid`, the cold offset on both); once without the gnn and once with it, the gnn kept only when it
    adds (or `keep_gnn`; `gnn` False: never tried)."""
    data = _blend_tasks(r, ds, max_users)
    scale = _spreads(r, data)
    objective = _blend_objective(replace(r, scale=scale), data, k)
    bar = progress_bar(show=progress, desc="fitting blend on validation", unit="eval")
    # The trained GNN is kept only when the blend with it beats the closed-form blend without it on validation
    # (mean NDCG@k over the tasks fitted): a part that costs without earning is not served (keep_gnn: always).
    closed = _search_blend(
        objective, data, tuple(c for c in r.components if c != "gnn"), bar
    )
    with_gnn = (
        _search_blend(objective, data, r.components, bar)
        if gnn and "gnn" in r.components
        else None
    )
    bar.close()
    gnn_kept = with_gnn is not None and (keep_gnn or _gnn_earns(with_gnn, closed))
    chosen = with_gnn if with_gnn is not None and gnn_kept else closed
    rounded = lambda fit: {n: round(v, 6) for n, v in fit.validation_ndcg.items()}  # noqa: E731
    return BlendFit(
        chosen.weights_warm,
        chosen.weights_cold,
        chosen.cold_offset,
        scale,
        gnn_kept,
        {
            "fitted_on": {n: int(len(d[0])) for n, d in data.items()},
            "validation_ndcg": rounded(chosen),
            "closed_form_validation_ndcg": rounded(closed),
            "with_gnn_validation_ndcg": None if with_gnn is None else rounded(with_gnn),
        },
    )


def _spreads(r: Ranker, data: dict[str, tuple]) -> dict[str, float]:
    """r's scales with each component's spread on the validation tasks' candidates (1 where none has it), so the
    weights compare components of different units."""
    # Spreads measured on warm candidates, where every component but the cold-only ones is informative.
    scale = dict(r.scale)
    for c in r.components:
        task = next(
            (
                n
                for n in (("cold",) if c in COLD_ONLY else ("warm", "cold", "mixed"))
                if n in data
            ),
            None,
        )
        scale[c] = (float(data[task][2][c].std()) or 1.0) if task else 1.0
    return scale


def _blend_objective(
    scaled: Ranker, data: dict[str, tuple], k: int
) -> Callable[[str, dict, dict, float], float]:
    """The validation NDCG@k on a task of `data` of the blend of `scaled`'s components with the given warm weights,
    cold weights and cold offset: what the blend's search maximises."""

    def objective(
        name: str, weights_warm: dict, weights_cold: dict, offset: float
    ) -> float:
        users, cand, comps, truth_rows, truth_items, mask = data[name]
        scores = scaled.blend(comps, cand, weights_warm, weights_cold, offset) + mask
        idx = topk_stable(scores, min(k, len(cand)))[1].numpy()
        return _ndcg(cand[idx], truth_rows, truth_items, len(users), scaled.n_items, k)

    return objective


def _ndcg(
    lists: np.ndarray,
    truth_rows: np.ndarray,
    truth_items: np.ndarray,
    n_users: int,
    n_items: int,
    k: int,
) -> float:
    """The mean NDCG@k of the lists (item ids, one row per user) against the held-out (row, item) pairs."""
    hits = hit_matrix(lists, truth_rows, truth_items, n_items)
    return mean_metrics(
        per_user_accuracy(hits, np.bincount(truth_rows, minlength=n_users), [k])
    )[f"ndcg@{k}"]


def _gnn_earns(with_gnn: _SearchedBlend, closed: _SearchedBlend) -> bool:
    """Whether the blend with the GNN weighs it and beats the closed-form blend on mean validation NDCG."""
    return (
        bool(with_gnn.weights_warm.get("gnn") or with_gnn.weights_cold.get("gnn"))
        and with_gnn.mean_ndcg > closed.mean_ndcg + 1e-9
    )


def _blend_tasks(r: Ranker, ds: Dataset, max_users: int) -> dict[str, tuple]:
    """The validation tasks the blend is fitted on: name -> (users, candidates, component scores, truth rows,
    truth items, the mask of known items); warm on `valid`, cold on `cold_valid`, mixed on both."""
    history = ds.matrix(FIT_HISTORY)
    rng = np.random.default_rng(0)
    tasks = {
        "warm": (("valid",), np.flatnonzero(r.warm)),
        "cold": (("cold_valid",), np.flatnonzero(~r.warm)),
        "mixed": (("valid", "cold_valid"), np.arange(r.n_items)),
    }
    for_weights = _cold_weights_half(r, ds)
    data = {}
    for name, (parts, cand) in tasks.items():
        truth = _task_truth(ds, name, parts, for_weights)
        users = _sample_users(
            np.unique(truth["user"].to_numpy()),
            validation_users(len(cand), max_users),
            rng,
        )
        if len(users) == 0 or len(cand) == 0:
            continue
        data[name] = (
            users,
            cand,
            r.component_scores(users, cand, history),
            *_truth_rows(truth, users, ds.n_users),
            _mask_known(
                torch.zeros(len(users), len(cand)),
                history[users],
                _columns_of(cand, r.n_items),
            ),
        )
    return data


def _cold_weights_half(r: Ranker, ds: Dataset) -> np.ndarray | None:
    """bool [n_items]: the cold items whose cold_valid interactions choose the cold weights (the others choose the
    cold offset), a seeded half; None when cold_valid and cold_test share their items (both choose on all)."""
    # When validation's cold items are items the test never sees (a split that holds out whole items, as new items
    # come to a shop), the cold weights and the cold offset are chosen on different ones (halves of cold_valid's,
    # seeded): chosen on the same few hundred items, cold items looked better on validation than on new ones and the
    # offset gave them most of the list (BENCHMARKS.md, "New items: cold by time against cold at random"). A split
    # whose cold_valid and cold_test share their items (held out by interaction) tests on those very items.
    cold_valid, cold_test = (
        np.unique(ds.part(p)["item"].to_numpy()) for p in ("cold_valid", "cold_test")
    )
    if np.isin(cold_valid, cold_test).any():
        return None
    return ~r.warm & (np.random.default_rng(1).random(r.n_items) < 0.5)


def _task_truth(
    ds: Dataset,
    name: str,
    parts: tuple[str, ...],
    for_weights: np.ndarray | None,
) -> pd.DataFrame:
    """A validation task's held-out interactions: those of its parts, the cold task's on the cold weights' half of
    the cold items and the mixed task's on the warm items and the other half (when the cold items are halved)."""
    truth = ds.part(*parts)
    if name != "warm" and for_weights is not None:
        on_half = for_weights[truth["item"].to_numpy()]
        truth = truth[on_half if name == "cold" else ~on_half]
    return truth


def _sample_users(
    users: np.ndarray, n_users: int, rng: np.random.Generator
) -> np.ndarray:
    """`users`, or a sorted random sample of n_users of them when there are more: it bounds a search's cost on large
    datasets."""
    if len(users) > n_users:
        return np.sort(rng.choice(users, n_users, replace=False))
    return users


def _truth_rows(
    truth: pd.DataFrame, users: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """The held-out (row, item) pairs of the sampled `users`: each pair's row among `users` and its item."""
    pos = np.full(n_users, -1, np.int64)
    pos[users] = np.arange(len(users))
    kept = truth[pos[truth["user"].to_numpy()] >= 0]
    return pos[kept["user"].to_numpy()], kept["item"].to_numpy()


@dataclass(frozen=True)
class _SearchedBlend:
    weights_warm: dict[str, float]
    weights_cold: dict[str, float]
    cold_offset: float
    validation_ndcg: dict[str, float]  # per task fitted

    @property
    def mean_ndcg(self) -> float:
        return (
            float(np.mean(list(self.validation_ndcg.values())))
            if self.validation_ndcg
            else 0.0
        )


def _search_blend(
    objective: Callable[[str, dict, dict, float], float],
    data: dict[str, Any],
    components: Sequence[str],
    bar: tqdm,
) -> _SearchedBlend:
    """The blend over `components` by coordinate search on validation: warm weights on the warm task, cold
    weights on the cold task, the cold offset on the mixed task."""
    weights_warm = {
        c: (1.0 if c == components[0] else 0.0)
        for c in components
        if c not in COLD_ONLY
    }
    fitted: dict[str, float] = {}
    if "warm" in data:
        weights_warm, fitted["warm_ndcg"] = _coordinate_search(
            lambda w: objective("warm", w, {}, 0.0),
            weights_warm,
            tuple(c for c in components if c not in COLD_ONLY),
            bar,
        )
    cold_names = tuple(c for c in COLD_COMPONENTS if c in components)
    weights_cold = {c: weights_warm.get(c, 0.0) for c in cold_names}
    if "cold" in data:
        weights_cold, fitted["cold_ndcg"] = _coordinate_search(
            lambda w: objective("cold", weights_warm, w, 0.0),
            weights_cold,
            cold_names,
            bar,
        )
    offset = 0.0
    if "mixed" in data and "cold" in data and "warm" in data:
        offset, fitted["mixed_ndcg"] = _search_offset(
            lambda off: objective("mixed", weights_warm, weights_cold, off), bar
        )
    return _SearchedBlend(weights_warm, weights_cold, offset, fitted)


def _search_offset(mixed: Callable[[float], float], bar: tqdm) -> tuple[float, float]:
    """The cold offset with the best NDCG on the mixed task, and that NDCG: ties go to the smallest |offset|; a best
    value on the grid's edge widens the grid (up to MAX_OFFSET)."""
    trials: dict[float, tuple] = {}
    grid = OFFSET_GRID
    while True:
        for off in (float(o) for o in grid if float(o) not in trials):
            trials[off] = (mixed(off), -abs(off), off)
            bar.update()
        best = max(trials.values())
        edge = max(abs(o) for o in trials)
        if abs(best[2]) < edge or edge >= MAX_OFFSET:
            break
        grid = np.sign(best[2]) * (edge + np.arange(1, 9) * edge / 8)
    return best[2], best[0]


@dataclass(frozen=True)
class NewUsersFit:
    """The weights of users known by at most `short_history` given items (`fit_new_users`), with the group block
    when users have attributes."""

    weights: dict[str, float]
    short_history: int
    groups: sp.csr_matrix | None  # the users' attribute values
    # P(item | value) over the training users holding it, divided by its spread
    group_items: np.ndarray | None
    group_scale: float
    selection: dict[str, Any]

    def on(self, r: Ranker) -> Ranker:
        if self.groups is None:
            return replace(
                r, new_user_weights=self.weights, short_history=self.short_history
            )
        return replace(
            r,
            new_user_weights=self.weights,
            short_history=self.short_history,
            groups=self.groups,
            group_items=self.group_items,
            scale={**r.scale, "group": self.group_scale},
        )


def fit_new_users(
    r: Ranker,
    ds: Dataset,
    k: int,
    max_users: int,
    groups: sp.csr_matrix | None,
    x: sp.csr_matrix,
) -> NewUsersFit | None:
    """Users known by attributes and at most a few items (cold users, with their cold_user_context if any): the
    group block (when users have attributes) and their own gnn, pop, offset and group weights, fitted on
    cold_user_valid over all items. Their history blocks (ease, content) keep the weights everyone has. The
    weights then apply to every user with at most as many given items as the longest such history
    (short_history): a cold offset fitted for warm users would otherwise fill their lists with new items.
    None when cold_user_valid is empty."""
    history = ds.matrix(FIT_HISTORY)
    truth = ds.part("cold_user_valid")
    users = _sample_users(
        np.unique(truth["user"].to_numpy()),
        validation_users(r.n_items, max_users),
        np.random.default_rng(0),
    )
    if len(users) == 0:
        return None
    rest, scores = _new_user_scores(r, users, history)
    group_items, group_scale = None, 1.0
    if groups is not None:
        group_items, group_scale, scores["group"] = _group_scores(groups, x, users)
    truth_rows = _truth_rows(truth, users, ds.n_users)
    objective = _new_user_objective(rest, scores, history[users], truth_rows, k)
    weights, before, after = _search_new_user_weights(
        objective, r.weights_warm.get("pop", 0.0), tuple(scores)
    )
    short_history = int(np.diff(history[users].indptr).max())
    return NewUsersFit(
        weights,
        short_history,
        groups,
        group_items,
        group_scale,
        {
            "new_user_validation_ndcg": {
                "without_group_block": round(before, 6),
                "fitted": round(after, 6),
            },
            "fitted_on_new_users": int(len(users)),
        },
    )


def _search_new_user_weights(
    objective: Callable[[dict[str, float]], float], pop: float, names: Sequence[str]
) -> tuple[dict[str, float], float, float]:
    """The new users' weights of the blocks `names` by coordinate search from everyone's (`pop`: everyone's pop
    weight; no group block), with the objective before and after."""
    with progress_bar(show=False) as bar:
        start = {"gnn": 1.0, "pop": pop, "offset": 1.0, "group": 0.0}
        before = objective(start)
        weights, after = _coordinate_search(objective, start, names, bar)
    return weights, before, after


def _new_user_scores(
    r: Ranker, users: np.ndarray, history: sp.csr_matrix
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The new users' scores [len(users), n_items]: the part the new-user weights leave alone (the history blocks,
    from the few given items, with everyone's weights) and, per block they re-weight, its score (gnn, offset, pop)."""
    items = r.item_vectors()
    # before any new-user weight: the vectors everyone gets
    known = r.user_vectors(users, history)
    column, scores = 0, {}
    rest = torch.zeros(len(users), r.n_items)
    for block, width in r.blocks().items():
        block_items = torch.from_numpy(items[:, column : column + width]).T
        if block in ("gnn", "offset"):
            user = (
                r.user_emb[users]
                if block == "gnn"
                else np.ones((len(users), 1), np.float32)
            )
            scores[block] = torch.from_numpy(user) @ block_items
        elif block in ("ease", "lowpass", "content"):  # 0 for users with no item
            rest += torch.from_numpy(known[:, column : column + width]) @ block_items
        column += width
    pop = np.where(r.warm, r.pop / np.float32(r.scale["pop"]), 0.0).astype(np.float32)
    scores["pop"] = torch.from_numpy(pop).expand(len(users), r.n_items)
    return rest, scores


def _group_scores(
    groups: sp.csr_matrix, x: sp.csr_matrix, users: np.ndarray
) -> tuple[np.ndarray, float, torch.Tensor]:
    """The group block: P(item | value) among x's users divided by its spread, that spread (on the sampled users'
    scores), and those users' scores divided by it."""
    group_items = group_popularity(groups, x)
    raw = (
        torch.from_numpy(groups[users].toarray().astype(np.float32))
        @ torch.from_numpy(group_items).T
    )
    group_scale = float(raw.std()) or 1.0
    return group_items / np.float32(group_scale), group_scale, raw / group_scale


def _new_user_objective(
    rest: torch.Tensor,
    scores: dict[str, torch.Tensor],
    seen: sp.csr_matrix,
    truth_rows: tuple[np.ndarray, np.ndarray],
    k: int,
) -> Callable[[dict[str, float]], float]:
    """The new users' NDCG@k over all items, their given items `seen` left out, of the score `rest` plus the
    weighted `scores`: what their weights' search maximises."""
    n_users, n_items = rest.shape
    known = seen.tocoo()
    known_rows = torch.from_numpy(known.row.astype(np.int64))
    known_cols = torch.from_numpy(known.col.astype(np.int64))

    def objective(weights: dict[str, float]) -> float:
        score = rest + sum(weights.get(b, 0.0) * v for b, v in scores.items())
        score[known_rows, known_cols] = float("-inf")
        lists = topk_stable(score, min(k, n_items))[1].numpy()
        return _ndcg(lists, *truth_rows, n_users, n_items, k)

    return objective


def _coordinate_search(
    f: Callable[[dict[str, float]], float],
    start: dict[str, float],
    names: Sequence[str],
    bar: tqdm,
    rounds: int = 2,
) -> tuple[dict, float]:
    """Maximise f(weights) one weight at a time over WEIGHT_GRID (ties keep the current value)."""
    w = {c: start.get(c, 0.0) for c in names}
    if not any(w.values()) and names:
        w[names[0]] = 1.0
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


def save_ranker(staged: Workspace, r: Ranker) -> None:
    """model/ranker.* of a staged workspace (through graphrec.model.artifacts): the fitted blend and its tensors."""
    # cold rows: rebuilt from content
    ease_item = np.where(r.warm[:, None], r.ease_item, 0.0).astype(np.float32)
    tensors = {
        "ease_user": r.ease_user,
        "ease_item": ease_item,
        "pop": r.pop,
        "warm": r.warm.astype(np.uint8),
    }
    if r.lowpass_item is not None:
        # lowpass_user is set with lowpass_item (GraphFilter)
        tensors.update(
            lowpass_user=cast(np.ndarray, r.lowpass_user), lowpass_item=r.lowpass_item
        )
    for name, m in (("ridge", r.content_map), ("cold_pop", r.cold_pop_map)):
        if m is not None:
            tensors.update(
                {
                    name: m.weights,
                    f"{name}_mean": m.feature_mean,
                    f"{name}_target_mean": m.target_mean,
                    f"{name}_columns": m.columns.astype(np.int64),
                }
            )
    if r.group_items is not None:
        tensors["group_items"] = r.group_items
    blend = artifacts.Blend(
        components=list(r.components),
        scale=r.scale,
        weights_warm=r.weights_warm,
        weights_cold=r.weights_cold,
        cold_offset=r.cold_offset,
        new_user_weights=r.new_user_weights,
        blocks=r.blocks(),
        short_history=r.short_history,
        private_new_user_weights=r.private_new_user_weights,
        ease_dim=int(r.ease_item.shape[1]),
        lowpass_dim=0 if r.lowpass_item is None else int(r.lowpass_item.shape[1]),
    )
    artifacts.write_ranker(staged, tensors, blend, r.record)


def load_ranker(
    workspace: Workspace | str | Path, ds: Dataset | None = None
) -> Ranker | None:
    """The saved ranker, or None when there is none or it was fitted for other embeddings or content."""
    ws = Workspace.of(workspace)
    ds = ds if ds is not None else Dataset.load(ws)
    saved = artifacts.read_ranker(ws, ds.n_items)
    if saved is None:
        return None
    tensors, blend, record = saved
    content = _content_matrix(ws, ds.n_items)[0]
    if "content" in blend.components and content is None:
        return None
    ranker: Ranker | None = _saved_blend(ws, ds, tensors, blend, record, content)
    kg = _graph(ws) if "group_items" in tensors or "ridge" in blend.components else None
    if ranker is not None and "group_items" in tensors:
        ranker = _with_saved_groups(ranker, kg, ds, tensors, record)
    if ranker is not None and "ridge" in blend.components:
        ranker = _with_saved_cold_maps(ranker, kg, content, tensors, blend, record)
    return ranker


def _saved_blend(
    ws: Workspace,
    ds: Dataset,
    tensors: dict[str, np.ndarray],
    blend: artifacts.Blend,
    record: RankerRecord,
    content: np.ndarray | None,
) -> Ranker:
    """The ranker's blend as saved, over the workspace's embeddings (groups and cold maps still to add)."""
    user_emb, item_emb, _ = artifacts.read_embeddings(ws, ds)
    return Ranker(
        user_emb,
        item_emb,
        tensors["warm"].astype(bool),
        tensors["pop"],
        tensors["ease_user"],
        tensors["ease_item"],
        content if "content" in blend.components else None,
        lowpass_user=tensors.get("lowpass_user"),
        lowpass_item=tensors.get("lowpass_item"),
        new_user_weights=blend.new_user_weights,
        short_history=blend.short_history or 0,
        private_new_user_weights=blend.private_new_user_weights,
        scale=blend.scale,
        weights_warm=blend.weights_warm,
        weights_cold=blend.weights_cold,
        cold_offset=blend.cold_offset,
        record=record,
    )


def _with_saved_groups(
    ranker: Ranker,
    kg: KnowledgeGraph | None,
    ds: Dataset,
    tensors: dict[str, np.ndarray],
    record: RankerRecord,
) -> Ranker | None:
    """The ranker with its group block: the users' attribute values rebuilt from graph/ with the fitted
    layout; None when they no longer fit the saved block."""
    groups = user_groups(kg, ds.n_users, record.group_layout)[0]
    if groups is None or groups.shape[1] != tensors["group_items"].shape[1]:
        return None
    return replace(ranker, groups=groups, group_items=tensors["group_items"])


def _with_saved_cold_maps(
    ranker: Ranker,
    kg: KnowledgeGraph | None,
    content: np.ndarray | None,
    tensors: dict[str, np.ndarray],
    blend: artifacts.Blend,
    record: RankerRecord,
) -> Ranker | None:
    """The ranker with its content maps: the content they map rebuilt, cut to the fitted blocks' widths;
    None when it no longer fits them."""
    n_items = len(ranker.warm)
    feats = ridge_content(kg, n_items, content, record.ridge_widths)[0]
    if (
        feats is None
        or "ridge_columns" not in tensors
        or feats.shape[1] != sum(record.ridge_widths or ())
    ):
        return None
    maps = {
        name: ContentMap(
            tensors[name],
            tensors[f"{name}_mean"],
            tensors[f"{name}_target_mean"],
            tensors[f"{name}_columns"],
        )
        for name in ("ridge", "cold_pop")
        if name in tensors
    }  # read_ranker checked: ridge is there
    cold_pop = maps.get("cold_pop") if "cpop" in blend.components else None
    return ColdMaps(maps["ridge"], cold_pop).on(ranker, feats)


def extend_ranker(
    ws: Workspace, staged: Workspace, old: Dataset, grown: Dataset
) -> bool:
    """The ranker's own update step: carry the fitted blend over to the staged workspace's new embeddings.
    New items are cold (gnn + content + the content map, no pop/EASE penalty) and add no EASE dimension to a
    user's vector; popularity counts include the new interactions. False when there is no current ranker."""
    r = load_ranker(ws, old)
    if r is None:
        return False
    new = grown.n_items - old.n_items
    # new items: zero rows; the cold rows of ease_item and cold_pop are rebuilt from content on loading
    save_ranker(
        staged,
        replace(
            r,
            warm=_zero_rows(r.warm, new),
            ease_user=_zero_rows(r.ease_user, new),
            ease_item=_zero_rows(r.ease_item, new),
            lowpass_user=_zero_rows(r.lowpass_user, new),
            lowpass_item=_zero_rows(r.lowpass_item, new),
            group_items=_zero_rows(r.group_items, new),
            cold_pop=_zero_rows(r.cold_pop, new),
            pop=_log_pop(grown.matrix(("train",))),
            record=replace(
                r.record, embeddings_sha256=artifacts.embeddings_sha256(staged)
            ),
        ),
    )
    return True


@overload
def _zero_rows(a: np.ndarray, n: int) -> np.ndarray: ...
@overload
def _zero_rows(a: None, n: int) -> None: ...
def _zero_rows(a: np.ndarray | None, n: int) -> np.ndarray | None:
    """`a` with n zero rows appended (None: an array the ranker does not have)."""
    return (
        None if a is None else np.concatenate([a, np.zeros((n, *a.shape[1:]), a.dtype)])
    )


def serving_ranker(
    workspace: Workspace | str | Path, ds: Dataset | None = None
) -> Ranker:
    """The saved ranker every reader serves from; one line naming the command that makes it when model/ has
    none for its embeddings. Readers never fit one: `graphrec train` fits it before its model/ is switched in."""
    ws = Workspace.of(workspace)
    ds = ds if ds is not None else Dataset.load(ws)
    r = load_ranker(ws, ds)
    if r is None:
        artifacts.read_embeddings(ws, ds)  # a damaged embeddings file is named as such
        d = artifacts.model_dir(ws)
        why = (
            f"was not fitted for {artifacts.EMBEDDINGS} and the content of features/ and graph/ beside it"
            if (d / artifacts.RANKER_JSON).exists()
            else "is missing"
        )
        raise InputError(
            f"model/ has no ranker fitted for its embeddings: {artifacts.RANKER_JSON} {why}: "
            f"{artifacts.RETRAIN}",
            file=d,
        )
    return r
