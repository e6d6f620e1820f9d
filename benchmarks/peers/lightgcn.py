"""PyG's LightGCN (He et al. 2020) trained with BPR, propagating over a CSR adjacency as graphrec does.

The adjacency is normalised once here (D^-1/2 A D^-1/2) and the model is built with normalize=False: with
the default normalize=True, LGConv would run gcn_norm on the sparse tensor in every layer of every step
(and a pre-normalised matrix would be normalised twice).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from benchmarks.peers.base import WARM, FitInput, Scorer, System

EPOCH_STEPS = (20, 40, 70, 100)


def normalized_adjacency(X: sp.csr_matrix) -> torch.Tensor:
    n_users, n_items = X.shape
    A = sp.bmat([[None, X], [X.T, None]], format="csr").astype(np.float32)
    deg = np.asarray(A.sum(axis=1)).ravel()
    d = np.where(deg > 0, deg, 1.0) ** -0.5
    A = (sp.diags(d) @ A @ sp.diags(d)).tocsr()
    return torch.sparse_csr_tensor(
        torch.from_numpy(A.indptr.astype(np.int64)),
        torch.from_numpy(A.indices.astype(np.int64)),
        torch.from_numpy(A.data),
        size=A.shape,
    )


class LightGCN(System):
    name, family, tasks = "lightgcn", "graph", (WARM,)
    checkpointed = True  # epochs are selected on validation
    epoch_seconds: list[float]

    def grid(self, task: str, quick: bool) -> list[dict[str, Any]]:
        # One full propagation per batch costs ~0.1-0.2 s on 2 cores at MovieLens size: a layer grid would not
        # fit the hour, so the grid is the epoch count (checkpoints), with the paper's 3 layers.
        base = {"dim": 64, "layers": 3, "lr": 5e-3, "reg": 1e-4, "batch": 4096}
        return [{**base, "epochs": 20 if quick else max(EPOCH_STEPS)}]

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        from torch_geometric.nn.models import LightGCN as PyGLightGCN

        torch.manual_seed(data.seed)
        torch.set_num_threads(data.threads)
        n_users, n_items = data.X.shape
        adj = normalized_adjacency(data.X)
        model = PyGLightGCN(
            n_users + n_items, params["dim"], params["layers"], normalize=False
        )
        opt = torch.optim.Adam(model.parameters(), lr=params["lr"])
        coo = data.X.tocoo()
        users = torch.from_numpy(coo.row.astype(np.int64))
        items = torch.from_numpy(coo.col.astype(np.int64)) + n_users
        gen = torch.Generator().manual_seed(data.seed)
        stops = (
            [e for e in EPOCH_STEPS if e <= params["epochs"]]
            if checkpoints
            else [params["epochs"]]
        )
        self.epoch_seconds = []
        epoch = 0
        for stop in stops:
            model.train()
            while epoch < stop:
                start = time.perf_counter()
                order = torch.randperm(len(users), generator=gen)
                for s in range(0, len(order), params["batch"]):
                    b = order[s : s + params["batch"]]
                    u, pos = users[b], items[b]
                    neg = torch.randint(0, n_items, (len(b),), generator=gen) + n_users
                    emb = model.get_embedding(adj)
                    pos_rank = (emb[u] * emb[pos]).sum(-1)
                    neg_rank = (emb[u] * emb[neg]).sum(-1)
                    loss = model.recommendation_loss(
                        pos_rank,
                        neg_rank,
                        node_id=torch.cat([u, pos, neg]),
                        lambda_reg=params["reg"],
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                epoch += 1
                self.epoch_seconds.append(time.perf_counter() - start)
            model.eval()
            with torch.no_grad():
                emb = model.get_embedding(adj).numpy()
            ue, ie = emb[:n_users].copy(), emb[n_users:].copy()
            yield {**params, "epochs": stop}, (lambda idx, ue=ue, ie=ie: ue[idx] @ ie.T)
