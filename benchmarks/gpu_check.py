"""CUDA training check: a few epochs of the full model on a synthetic graph; epoch time and peak memory.

    python benchmarks/gpu_check.py                      # cuda, 100k users, 50k items, 3M interactions
    python benchmarks/gpu_check.py --device cpu --users 2000 --items 1000 --interactions 50000

The graph has every path of the real model: user-item CF, two modalities (one missing for 30% of items),
two attribute relations, an item-item similarity relation and a user attribute. 20% of items are cold.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from graphrec.core.device import resolve_device
from graphrec.core.feature_store import Features
from graphrec.kg.graph import EdgeSet, KnowledgeGraph
from graphrec.model.gnn import GraphRec
from graphrec.model.propagation import build_inputs
from graphrec.stages.train import TrainSettings, _Step, epoch_triples


def synthetic(n_users: int, n_items: int, n_inter: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    # Zipf-like popularity
    pop = (1.0 / np.arange(1, n_items + 1) ** 0.8)[rng.permutation(n_items)]
    pop[rng.random(n_items) < 0.2] = 0  # cold items
    items = rng.choice(n_items, n_inter, p=pop / pop.sum())
    users = rng.integers(n_users, size=n_inter)
    genre, brand = rng.integers(20, size=n_items), rng.integers(500, size=n_items)
    knn = rng.integers(n_items, size=(n_items, 10))
    kg = KnowledgeGraph(
        {"user": n_users, "item": n_items, "genre": 20, "brand": 500, "band": 6},
        {
            ("item", "has_genre", "genre"): EdgeSet(
                np.arange(n_items), genre, np.ones(n_items, np.float32)
            ),
            ("item", "has_brand", "brand"): EdgeSet(
                np.arange(n_items), brand, np.ones(n_items, np.float32)
            ),
            ("item", "similar_text", "item"): EdgeSet(
                np.repeat(np.arange(n_items), 10),
                knn.ravel(),
                np.ones(n_items * 10, np.float32),
            ),
            ("user", "has_band", "band"): EdgeSet(
                np.arange(n_users),
                rng.integers(6, size=n_users),
                np.ones(n_users, np.float32),
            ),
        },
    )
    feats = {
        "image": Features(
            "image",
            rng.standard_normal((n_items, 512), np.float32),
            rng.random(n_items) > 0.3,
            {},
        ),
        "text": Features(
            "text",
            rng.standard_normal((n_items, 384), np.float32),
            np.ones(n_items, bool),
            {},
        ),
    }
    return users, items, kg, feats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--interactions", type=int, default=3_000_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mode", default="full", choices=["full", "sampled"])
    a = ap.parse_args()
    dev = resolve_device(a.device)
    t0 = time.perf_counter()
    users, items, kg, feats = synthetic(a.users, a.items, a.interactions)
    inp = build_inputs(a.users, a.items, users, items, kg, feats).to(dev)
    print(
        f"graph built in {time.perf_counter() - t0:.1f} s: {inp.ui.a._nnz() // 2} user-item edges"
    )
    s = TrainSettings(
        dim=a.dim, batch_size=a.batch_size, mode=a.mode, device=str(dev)
    ).resolved(a.interactions)
    types = {
        t: int(op.shape[1])
        for t, op in list(inp.item_attr.values()) + list(inp.user_attr.values())
    }
    model = GraphRec(
        a.users,
        a.items,
        a.dim,
        s.layers,
        {m: int(v.shape[1]) for m, v in inp.features.items()},
        types,
        generator=torch.Generator().manual_seed(0),
    ).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    step = _Step(model, s)
    pairs = np.unique(users.astype(np.int64) * a.items + items)
    pool = np.flatnonzero(inp.item_degree.cpu().numpy() > 0)
    gen = torch.Generator(device=dev).manual_seed(0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        u, p, n = (
            torch.as_tensor(x, device=dev)
            for x in epoch_triples(pairs, a.items, pool, 0, 0, epoch)
        )
        total = 0.0
        for b in range(0, len(u), a.batch_size):
            loss, _ = step(
                inp,
                u[b : b + a.batch_size],
                p[b : b + a.batch_size],
                n[b : b + a.batch_size],
                gen,
            )
            (loss / len(u[b : b + a.batch_size])).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            total += loss.item()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        print(
            f"epoch {epoch}: {time.perf_counter() - t0:.2f} s, {len(u)} triples, loss {total / len(u):.4f}"
        )
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**30
        print(f"peak GPU memory {peak:.2f} GiB on {torch.cuda.get_device_name(dev)}")
    model.eval()
    with torch.no_grad():
        user, item = model.get_embedding(inp).export(inp.item_degree > 0)
    assert torch.isfinite(user).all() and torch.isfinite(item).all()
    print("embeddings finite:", tuple(user.shape), tuple(item.shape))


if __name__ == "__main__":
    main()
