r"""GraphRec: LightGCN-style propagation over the knowledge graph with a content path for cold items.

Notation: U users, I items, d dimensions, K layers, Â the symmetric-normalised user-item operator.

Content of item i (per-relation mean aggregation, masked modalities)::

    z_i = sum_m mask_im * P_m x_im  +  sum_r mean_{a in N_r(i)} A_a          (P_m: [d_m -> d], A: attribute nodes)
    z   <- (z + S z) / 2                      if item-item similarity edges exist (S row-normalised; LATTICE/FREEDOM)

Collaborative view (LightGCN, layer mean), with content entering every item's layer 0::

    x^0_u = E_u [deg_u > 0] + sum_r mean_{a in N_r(u)} B_a          x^0_i = E_i [deg_i > 0] + z_i
    x^{k+1} = Â x^k,       h = (x^0 + ... + x^K) / (K + 1)

Content path (what a cold item gets; ALDI-style student of the collaborative teacher)::

    c_i = T z_i                                    (T: [d -> d], initialised to the identity)
    b_i = w^T z_i                                  content-predicted popularity, shared by both paths

Score: s(u, i) = h_u . v_i + b_i with v_i = h_i for items with interactions, c_i for the rest; it is exported
as a plain dot product of [h_u, 1] and [v_i, b_i]. Loss per batch of (u, i+, i-)::

    BPR(h) + lambda_cold * BPR(c)  (DropoutNet: rank with the CF view removed)
           + lambda_align * ||c_i+ - sg(h_i+)||^2 / d  + lambda_reg * ||x^0 of the batch||^2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from graphrec.model.artifacts import ModelRecord
from graphrec.model.propagation import GraphInputs, SparseOp, row_normalized

# triples per chunk of the full-graph loss: its memory is O(LOSS_CHUNK d)
LOSS_CHUNK = 1 << 17


@dataclass(frozen=True)
class LossWeights:
    """The loss's weights next to BPR(h): lambda_cold, lambda_align, lambda_reg (module docstring)."""

    cold: float
    align: float
    reg: float


@dataclass
class Embeddings:
    user: torch.Tensor  # [U, d] propagated
    item_cf: torch.Tensor  # [I, d] propagated (meaningful for items with interactions)
    item_content: torch.Tensor  # [I, d] content path c
    bias: torch.Tensor  # [I] content-predicted popularity
    item_ego: torch.Tensor  # [I, d] layer 0, for the L2 term
    user_ego: torch.Tensor  # [U, d]

    def item(self, warm: torch.Tensor) -> torch.Tensor:
        """v_i: collaborative embedding for warm items, content embedding for the rest."""
        return torch.where(warm[:, None], self.item_cf, self.item_content)

    def export(self, warm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(users [U, d+1], items [I, d+1]) whose dot product is the score."""
        ones = torch.ones(
            len(self.user), 1, dtype=self.user.dtype, device=self.user.device
        )
        return torch.cat([self.user, ones], 1), torch.cat(
            [self.item(warm), self.bias[:, None]], 1
        )


class GraphRec(nn.Module):
    """The model's parameters; graph structure lives in `GraphInputs` and is passed to each call."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        layers: int = 3,
        modality_dims: dict[str, int] | None = None,
        node_types: dict[str, int] | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.n_users, self.n_items, self.dim, self.layers = (
            n_users,
            n_items,
            dim,
            layers,
        )
        self.modality_dims = dict(sorted((modality_dims or {}).items()))
        self.node_types = dict(sorted((node_types or {}).items()))
        g = generator
        self.user_id = nn.Parameter(torch.randn(n_users, dim, generator=g) * 0.1)
        self.item_id = nn.Parameter(torch.randn(n_items, dim, generator=g) * 0.1)
        # Attribute/entity nodes, one table per node type; keyed by position (type names may contain dots).
        self.attr = nn.ParameterList(
            [
                nn.Parameter(torch.randn(n, dim, generator=g) * 0.1)
                for n in self.node_types.values()
            ]
        )
        self.proj = nn.ParameterList(
            [
                nn.Parameter(torch.randn(dm, dim, generator=g) / np.sqrt(dm) * 0.5)
                for dm in self.modality_dims.values()
            ]
        )
        self.transfer = nn.Parameter(torch.eye(dim))
        self.bias_w = nn.Parameter(torch.zeros(dim))
        self._type_index = {t: k for k, t in enumerate(self.node_types)}

    def config(self) -> dict[str, Any]:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "dim": self.dim,
            "layers": self.layers,
            "modality_dims": self.modality_dims,
            "node_types": self.node_types,
        }

    # -- building blocks -----------------------------------------------------------------------------
    def content(self, inp: GraphInputs) -> torch.Tensor:
        """z: [I, d] from modality projections, attribute nodes and item-item similarity."""
        z = torch.zeros(inp.n_items, self.dim, device=self.item_id.device)
        for k, m in enumerate(self.modality_dims):
            if m in inp.features:
                z = z + inp.features[m] @ self.proj[k]
        for node_type, op in inp.item_attr.values():
            z = z + op @ self.attr[self._type_index[node_type]]
        if inp.item_sim is not None:
            z = 0.5 * (z + inp.item_sim @ z)
        return z

    def user_content(self, inp: GraphInputs) -> torch.Tensor:
        u = torch.zeros(inp.n_users, self.dim, device=self.user_id.device)
        for node_type, op in inp.user_attr.values():
            u = u + op @ self.attr[self._type_index[node_type]]
        return u

    def propagate(self, adj: SparseOp, x0: torch.Tensor) -> torch.Tensor:
        """LightGCN layer mean of K sparse products."""
        out, x = x0, x0
        for _ in range(self.layers):
            x = adj @ x
            out = out + x
        return out / (self.layers + 1)

    def get_embedding(self, inp: GraphInputs) -> Embeddings:
        """All users' and items' embeddings, propagated over the full graph."""
        z = self.content(inp)
        x_u = self.user_id * (inp.user_degree > 0)[:, None] + self.user_content(inp)
        x_i = self.item_id * (inp.item_degree > 0)[:, None] + z
        h = self.propagate(inp.ui, torch.cat([x_u, x_i]))
        return Embeddings(
            h[: inp.n_users],
            h[inp.n_users :],
            z @ self.transfer,
            z @ self.bias_w,
            x_i,
            x_u,
        )

    def get_embedding_sampled(
        self, inp: GraphInputs, nodes: torch.Tensor, sub: SparseOp
    ) -> torch.Tensor:
        """Propagated embeddings of `nodes` (global U+I ids) over a sampled sub-operator (mini-batch mode)."""
        z = self.content(inp)
        x_u = self.user_id * (inp.user_degree > 0)[:, None] + self.user_content(inp)
        x_i = self.item_id * (inp.item_degree > 0)[:, None] + z
        return self.propagate(sub, torch.cat([x_u, x_i])[nodes])

    def forward(
        self, inp: GraphInputs, users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Scores s(u, i) for index pairs, with the content path for items without interactions."""
        e = self.get_embedding(inp)
        v = e.item(inp.item_degree > 0)
        return (e.user[users] * v[items]).sum(-1) + e.bias[items]

    def recommend(
        self,
        inp: GraphInputs,
        users: torch.Tensor,
        k: int = 20,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Top-k item indices per user; `exclude` a bool [len(users), I] mask of items never to return."""
        e = self.get_embedding(inp)
        s = e.user[users] @ e.item(inp.item_degree > 0).T + e.bias
        if exclude is not None:
            s = s.masked_fill(exclude, float("-inf"))
        return s.topk(k, dim=1).indices

    @staticmethod
    def recommendation_loss(
        u: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        b_pos: torch.Tensor,
        b_neg: torch.Tensor,
    ) -> torch.Tensor:
        """Summed BPR: -log sigmoid(s(u, i+) - s(u, i-))."""
        return -F.logsigmoid(
            (u * pos).sum(-1) + b_pos - (u * neg).sum(-1) - b_neg
        ).sum()

    def batch_loss(
        self,
        u: torch.Tensor,
        cf: tuple[torch.Tensor, torch.Tensor],
        content: tuple[torch.Tensor, torch.Tensor],
        bias: tuple[torch.Tensor, torch.Tensor],
        ego_sq: torch.Tensor,
        w: LossWeights,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed (not averaged) loss terms of a batch, so shards of a batch add up exactly (DDP): the objective,
        written once; `sampled_loss` computes it by autograd, `full_graph_loss` by `triple_loss_grad`.

        cf / content / bias: (positive, negative) rows; ego_sq: squared norm of the batch's layer-0 rows.
        """
        bpr = self.recommendation_loss(u, cf[0], cf[1], bias[0], bias[1])
        cold = self.recommendation_loss(u, content[0], content[1], bias[0], bias[1])
        align = ((content[0] - cf[0].detach()) ** 2).sum() / self.dim
        total = bpr + w.cold * cold + w.align * align + w.reg * 0.5 * ego_sq
        return total, {"bpr": bpr.item(), "cold": cold.item(), "align": align.item()}

    def sampled_loss(
        self,
        inp: GraphInputs,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        nodes: torch.Tensor,
        sub: SparseOp,
        w: LossWeights,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`batch_loss` of triples (users, pos, neg) propagated over a sampled sub-operator `sub` of `nodes` (the
        triples' sorted unique U+I ids first, then their sampled neighbours: `propagation.sample_neighbourhood`)."""
        h = self.get_embedding_sampled(inp, nodes, sub)
        n_seed = len(
            torch.unique(torch.cat([users, pos + inp.n_users, neg + inp.n_users]))
        )
        loc = lambda g: torch.searchsorted(nodes[:n_seed], g)  # noqa: E731
        u, cf_p, cf_n = (
            h[loc(users)],
            h[loc(pos + inp.n_users)],
            h[loc(neg + inp.n_users)],
        )
        z = self.content(inp)
        c, b = z @ self.transfer, z @ self.bias_w
        x_u = self.user_id[users] * (inp.user_degree[users] > 0)[:, None]
        x_p = self.item_id[pos] * (inp.item_degree[pos] > 0)[:, None] + z[pos]
        x_n = self.item_id[neg] * (inp.item_degree[neg] > 0)[:, None] + z[neg]
        ego = x_u.pow(2).sum() + x_p.pow(2).sum() + x_n.pow(2).sum()
        return self.batch_loss(
            u, (cf_p, cf_n), (c[pos], c[neg]), (b[pos], b[neg]), ego, w
        )

    def full_graph_loss(
        self,
        inp: GraphInputs,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        w: LossWeights,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`batch_loss` of a batch on the full-graph embeddings: one propagation, the triples in chunks.

        The ranking terms depend on the parameters only through the tables T = (h_u) and (h_i, c_i, b_i), so
        their gradient is sum_T G_T . dT/dtheta with G_T = dL/dT, which `triple_loss_grad` gives chunk by chunk,
        scattered into G_T; the returned loss has the true value and, through sum_T <T, G_T>, the true gradient.
        The L2 term on the batch's layer-0 rows is sum_n count_n ||x^0_n||^2 over the tables, counts from the
        batch. So a batch costs one backward pass through the propagation (as DDP expects) and memory
        O(LOSS_CHUNK d) whatever its size."""
        e = self.get_embedding(inp)
        tables = (e.user, torch.cat([e.item_cf, e.item_content, e.bias[:, None]], 1))
        # a sum does not care for order: by user, a chunk reads and writes few user rows
        if len(users) > LOSS_CHUNK:
            order = torch.argsort(users)
            users, pos, neg = users[order], pos[order], neg[order]
        grads, value, parts = _table_gradients(
            tables[0].detach(), tables[1].detach(), users, pos, neg, w
        )
        linear = (tables[0] * grads[0]).sum() + (tables[1] * grads[1]).sum()
        ego = _batch_ego_sq(e, users, torch.cat([pos, neg]))
        return linear - linear.detach() + value + 0.5 * w.reg * ego, parts


def _table_gradients(
    user_table: torch.Tensor,
    item_table: torch.Tensor,
    users: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    w: LossWeights,
) -> tuple[tuple[torch.Tensor, torch.Tensor], float, dict[str, float]]:
    """(G_T of the user and item tables, ranking loss, its parts) of `full_graph_loss`, LOSS_CHUNK triples at a time."""
    grads = (torch.zeros_like(user_table), torch.zeros_like(item_table))
    value, parts = 0.0, {"bpr": 0.0, "cold": 0.0, "align": 0.0}
    chunk = LOSS_CHUNK
    for c0 in range(0, len(users), chunk):
        u, items = (
            users[c0 : c0 + chunk],
            torch.cat([pos[c0 : c0 + chunk], neg[c0 : c0 + chunk]]),
        )
        # index_select, not t[i]: advanced indexing is ~4x slower on CPU
        loss, chunk_parts, g_user, g_item = triple_loss_grad(
            user_table.index_select(0, u),
            item_table.index_select(0, items),
            w.cold,
            w.align,
        )
        grads[0].index_add_(0, u, g_user)
        grads[1].index_add_(0, items, g_item)
        value += loss
        parts = {k: parts[k] + v for k, v in chunk_parts.items()}
    return grads, value, parts


def _batch_ego_sq(
    e: Embeddings, users: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """sum_n count_n ||x^0_n||^2: the squared layer-0 norms of the batch's rows, each as often as the batch has it."""
    count_u = torch.bincount(users, minlength=len(e.user_ego)).to(e.user_ego.dtype)
    count_i = torch.bincount(items, minlength=len(e.item_ego)).to(e.item_ego.dtype)
    return count_u @ e.user_ego.pow(2).sum(1) + count_i @ e.item_ego.pow(2).sum(1)


def triple_loss_grad(
    user_rows: torch.Tensor,
    item_rows: torch.Tensor,
    cold_weight: float,
    align_weight: float,
) -> tuple[float, dict[str, float], torch.Tensor, torch.Tensor]:
    r"""The ranking terms of `GraphRec.batch_loss` for m triples, and their gradient by hand (no autograd graph).

    user_rows: [m, d] h_u; item_rows: [2m, 2d+1], the positives then the negatives, each (h_i, c_i, b_i).
    With x = h_u.(h_p - h_n) + b_p - b_n and y = h_u.(c_p - c_n) + b_p - b_n::

        L = sum softplus(-x) + lambda_cold sum softplus(-y) + lambda_align sum ||c_p - sg(h_p)||^2 / d
        g = dL/dx = -sigmoid(-x),  f = dL/dy = -lambda_cold sigmoid(-y)
        dL/dh_u = g (h_p - h_n) + f (c_p - c_n);  dL/dh_p = g h_u;  dL/dc_p = f h_u + 2 lambda_align (c_p - h_p) / d
        dL/db_p = g + f;  the negatives' with the opposite sign and no align term

    Returns (L, its parts, dL/duser_rows, dL/ditem_rows). Autograd would keep a graph of a dozen m x d
    tensors per batch; this keeps none, which lets one propagation serve a batch of millions of triples."""
    d, m = (item_rows.shape[1] - 1) // 2, len(user_rows)
    u, h, c, b = (
        user_rows,
        item_rows[:, :d],
        item_rows[:, d : 2 * d],
        item_rows[:, 2 * d],
    )
    dh, dc, db = h[:m] - h[m:], c[:m] - c[m:], b[:m] - b[m:]
    x, y = (u * dh).sum(1) + db, (u * dc).sum(1) + db
    gap = c[:m] - h[:m]
    bpr, cold = F.softplus(-x).sum().item(), F.softplus(-y).sum().item()
    # one fused pass, no squared copy
    align = torch.linalg.vector_norm(gap).item() ** 2 / d
    g, f = -torch.sigmoid(-x)[:, None], -cold_weight * torch.sigmoid(-y)[:, None]
    # written in place into the gradient rows: no concatenated copies of m x d blocks
    grad_user = dh.mul_(g).add_(dc.mul_(f))
    grad_item = _item_rows_grad(item_rows, u, g, f, gap, align_weight)
    total = bpr + cold_weight * cold + align_weight * align
    return total, {"bpr": bpr, "cold": cold, "align": align}, grad_user, grad_item


def _item_rows_grad(
    item_rows: torch.Tensor,
    u: torch.Tensor,
    g: torch.Tensor,
    f: torch.Tensor,
    gap: torch.Tensor,
    align_weight: float,
) -> torch.Tensor:
    """dL/ditem_rows of `triple_loss_grad` (its formulas), each block written in place into one new tensor."""
    d, m = (item_rows.shape[1] - 1) // 2, len(u)
    grad_item = torch.empty_like(item_rows)
    torch.mul(u, g, out=grad_item[:m, :d])
    torch.neg(grad_item[:m, :d], out=grad_item[m:, :d])
    torch.mul(u, f, out=grad_item[m:, d : 2 * d])
    torch.add(
        grad_item[m:, d : 2 * d],
        gap,
        alpha=2 * align_weight / d,
        out=grad_item[:m, d : 2 * d],
    )
    grad_item[m:, d : 2 * d].neg_()
    torch.add(g, f, out=grad_item[:m, 2 * d :])
    torch.neg(grad_item[:m, 2 * d :], out=grad_item[m:, 2 * d :])
    return grad_item


# -- inference without retraining (live updates) ---------------------------------------------------------
class TrainedModel:
    """A trained model loaded from a workspace: embeds new items from content and new users from items."""

    def __init__(
        self, model: GraphRec, user: np.ndarray, item: np.ndarray, meta: ModelRecord
    ):
        self.model, self.user, self.item, self.meta = model.eval(), user, item, meta

    @torch.no_grad()
    def item_embeddings_from_content(
        self,
        features_rows: dict[str, np.ndarray] | None = None,
        attribute_edges: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        n_new: int | None = None,
    ) -> np.ndarray:
        """[n_new, d+1] exported embeddings of new items (content path + predicted popularity).

        features_rows: modality -> [n_new, d_m] (rows of zeros mean "no content");
        attribute_edges: node type -> (new item row, attribute node index) pairs.
        """
        features_rows, attribute_edges = features_rows or {}, attribute_edges or {}
        if n_new is None:
            sizes = [len(v) for v in features_rows.values()] + [
                int(s.max()) + 1 for s, _ in attribute_edges.values() if len(s)
            ]
            n_new = max(sizes) if sizes else 0
        m = self.model
        z = torch.zeros(n_new, m.dim)
        for k, name in enumerate(m.modality_dims):
            if name in features_rows:
                v = torch.as_tensor(np.asarray(features_rows[name], np.float32))
                z = z + F.normalize(v, dim=1) @ m.proj[k]
        for node_type, (rows, nodes) in attribute_edges.items():
            if node_type not in m._type_index:
                continue  # a node type the model never saw carries no learned knowledge
            op = row_normalized(
                np.asarray(rows),
                np.asarray(nodes),
                np.ones(len(rows), np.float32),
                n_new,
                m.node_types[node_type],
            )
            z = z + op @ m.attr[m._type_index[node_type]]
        return torch.cat([z @ m.transfer, (z @ m.bias_w)[:, None]], 1).numpy()

    def user_embedding_from_items(self, item_indices: np.ndarray) -> np.ndarray:
        """[d+1] embedding of a user known only by a few items: the mean of their item embeddings.

        This is LightGCN's first-layer view of a new user (Â x restricted to its row), without retraining.
        """
        idx = np.asarray(item_indices, np.int64)
        v = (
            self.item[idx, :-1].mean(0)
            if len(idx)
            else np.zeros(self.item.shape[1] - 1, np.float32)
        )
        return np.concatenate([v, [1.0]]).astype(np.float32)
