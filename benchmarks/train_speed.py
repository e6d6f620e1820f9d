"""Epoch time of graphrec's model (all content paths, CSR propagation) vs PyG's LightGCN on the same graph.

    OMP_NUM_THREADS=1 python -m benchmarks.train_speed WS [--epochs 2] [--batch-size 2048] [--device cpu]

All train BPR on the same triples of the workspace's train part, same dim/layers/batch size. PyG's LightGCN
runs twice: over the CSR adjacency normalised once with normalize=False (the benchmark peer's setup, its fast
path), and over the symmetric `edge_index` it normalises itself (gcn_norm) on every forward.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import scipy.sparse as sp
import torch

from benchmarks.peers.lightgcn import normalized_adjacency
from graphrec.core.device import resolve_device
from graphrec.core.workspace import Workspace
from graphrec.stages.train import TrainSettings, _Run, _Step, epoch_triples


def time_epochs(step, params, inp_call, triples, batch: int, epochs: int) -> float:
    opt = torch.optim.Adam(params, lr=1e-3)
    users, pos, neg = (torch.as_tensor(x) for x in triples)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for b in range(0, len(users), batch):
            loss = inp_call(
                step, users[b : b + batch], pos[b : b + batch], neg[b : b + batch]
            )
            loss.backward()
            opt.step()
            opt.zero_grad()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_propagation(
    inp, csr: torch.Tensor, dim: int, layers: int, dev, repeats: int = 20
) -> tuple[float, float]:
    """Seconds per propagation (forward + backward) over the user-item graph: graphrec's SparseOp (stored
    transpose for the backward) against PyG's LGConv over the same normalised CSR matrix."""
    from torch_geometric.nn import LGConv

    x = torch.randn(csr.shape[0], dim, device=dev, requires_grad=True)
    conv = LGConv(normalize=False)

    def ours() -> torch.Tensor:
        h = x
        for _ in range(layers):
            h = inp.ui @ h
        return h

    def pyg() -> torch.Tensor:
        h = x
        for _ in range(layers):
            h = conv(h, csr)
        return h

    out = []
    for f in (ours, pyg):
        f().sum().backward()  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            f().sum().backward()
        out.append((time.perf_counter() - t0) / repeats)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    from torch_geometric.nn.models import LightGCN

    dev = resolve_device(a.device)
    s = TrainSettings(
        dim=a.dim, layers=a.layers, batch_size=a.batch_size, device=str(dev)
    ).resolved(0)
    run = _Run(Workspace(a.workspace), s, dev, Workspace(a.workspace))
    inp = run.inputs(run.train)
    model = run.new_model(inp)
    step = _Step(model, s)
    pool = (inp.item_degree > 0).nonzero().ravel().cpu().numpy()
    triples = epoch_triples(run.train, run.ni, pool, 0, 0, 1)
    ours = time_epochs(
        step,
        list(model.parameters()),
        lambda st, u, p, n: st(inp, u.to(dev), p.to(dev), n.to(dev))[0] / len(u),
        triples,
        a.batch_size,
        a.epochs,
    )
    # the same model and training step on the user-item graph alone: LightGCN's inputs, for equal settings
    inp_cf = dataclasses.replace(
        inp, features={}, feature_mask={}, item_attr={}, user_attr={}, item_sim=None
    )
    model_cf = run.new_model(inp_cf)
    ours_cf = time_epochs(
        _Step(model_cf, s),
        list(model_cf.parameters()),
        lambda st, u, p, n: st(inp_cf, u.to(dev), p.to(dev), n.to(dev))[0] / len(u),
        triples,
        a.batch_size,
        a.epochs,
    )

    nu = run.nu
    u_idx = torch.as_tensor(run.train // run.ni)
    i_idx = torch.as_tensor(run.train % run.ni) + nu
    edge_index = torch.cat(
        [torch.stack([u_idx, i_idx]), torch.stack([i_idx, u_idx])], 1
    ).to(dev)
    X = sp.csr_matrix(
        (
            np.ones(len(run.train), np.float32),
            (run.train // run.ni, run.train % run.ni),
        ),
        shape=(nu, run.ni),
    )
    csr = normalized_adjacency(X).to(dev)

    def pyg_loss(graph):
        def loss(m, u, p, n):
            u, p, n = u.to(dev), p.to(dev) + nu, n.to(dev) + nu
            e = m.get_embedding(graph)
            pos_s, neg_s = (e[u] * e[p]).sum(-1), (e[u] * e[n]).sum(-1)
            return m.recommendation_loss(
                pos_s, neg_s, node_id=torch.cat([u, p, n]), lambda_reg=1e-4
            )

        return loss

    pyg = LightGCN(nu + run.ni, a.dim, a.layers).to(dev)
    edge = time_epochs(
        pyg,
        list(pyg.parameters()),
        pyg_loss(edge_index),
        triples,
        a.batch_size,
        a.epochs,
    )
    pyg_csr = LightGCN(nu + run.ni, a.dim, a.layers, normalize=False).to(dev)
    fast = time_epochs(
        pyg_csr,
        list(pyg_csr.parameters()),
        pyg_loss(csr),
        triples,
        a.batch_size,
        a.epochs,
    )
    prop_ours, prop_pyg = time_propagation(inp, csr, a.dim, a.layers, dev)
    print(
        f"device {dev}, {len(triples[0])} triples/epoch, batch {a.batch_size}, dim {a.dim}, layers {a.layers}"
    )
    print(
        f"one propagation, forward + backward, {a.layers} layers: graphrec SparseOp {prop_ours * 1e3:.1f} ms, "
        f"PyG LGConv(normalize=False) over the same CSR {prop_pyg * 1e3:.1f} ms"
    )
    print(
        f"graphrec (CF + {len(inp.features)} modalities + {len(inp.item_attr)} item relations"
        f"{' + item-item' if inp.item_sim is not None else ''}): {ours:.2f} s/epoch"
    )
    print(f"graphrec (user-item only, LightGCN's inputs): {ours_cf:.2f} s/epoch")
    print(
        f"PyG LightGCN (CSR, normalize=False, user-item only): {fast:.2f} s/epoch  -> ratio to graphrec "
        f"user-item only {fast / ours_cf:.2f}x, to full graphrec {fast / ours:.2f}x"
    )
    print(
        f"PyG LightGCN (edge_index, user-item only): {edge:.2f} s/epoch  -> ratio {edge / ours_cf:.2f}x, "
        f"{edge / ours:.2f}x"
    )


if __name__ == "__main__":
    main()
