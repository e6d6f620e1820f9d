"""A catalogue whose content is a large external knowledge graph: build, train, rank, peak memory.

    python -m benchmarks.kg_scale [--users 20000 --items 10000 --interactions 300000 --relations 50 \\
        --entities-per-relation 2000 --epochs 10]

Setup: the synthetic shop (`graphrec.data.synth`), split with 20% cold items, its attribute columns hidden so
the only content is a triples file: per relation r, every item links to one of `entities-per-relation`
entities, chosen from the block of entities of the item's hidden taste segment 70% of the time (else at
random), and every entity links to one of 100 "group" entities per relation (entity-entity chains). With the
defaults: 50 item relations + 50 entity relations, 100k entities + 5k groups. Then the stages as a user runs
them: `run_build(triples=...)`, `run_train` (the GNN and the ranker), `evaluate` (cold items are reached only through
the
KG). Prints one JSON row (appended to benchmarks/results/kg_scale.jsonl): seconds per stage, peak RSS,
graph size, cold-item Recall@20 and the random-ranking expectation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "kg_scale.jsonl"


def setup(ws: Path, a: argparse.Namespace) -> Path:
    from graphrec.data.importer import save_dataset
    from graphrec.data.splits import split_dataset
    from graphrec.data.synth import synthesize

    ds, truth = synthesize(a.users, a.items, a.interactions, seed=0, progress=False)
    ds = split_dataset(ds, cold_items=0.2, seed=0)
    ds.schema.attribute_columns = []  # the KG is the only item content
    ds.schema.text_columns = []
    save_dataset(ws, ds, {"source": "benchmark kg_scale"})
    rng = np.random.default_rng(1)
    seg = np.asarray(truth.item_segment)
    per_seg = max(1, a.entities_per_relation // (int(seg.max()) + 1))
    heads, rels, tails = [], [], []
    item_ids = np.asarray(ds.item_ids, dtype=object)
    for r in range(a.relations):
        ent = np.where(
            rng.random(len(seg)) < 0.7,
            seg * per_seg + rng.integers(per_seg, size=len(seg)),
            rng.integers(a.entities_per_relation, size=len(seg)),
        )
        heads.append(item_ids)
        rels.append(np.full(len(seg), f"r{r}", dtype=object))
        tails.append(np.char.add(f"e{r}_", ent.astype(str)).astype(object))
        used = np.unique(ent)
        heads.append(np.char.add(f"e{r}_", used.astype(str)).astype(object))
        rels.append(np.full(len(used), f"g{r}", dtype=object))
        tails.append(
            np.char.add(
                f"c{r}_", (used // max(1, a.entities_per_relation // 100)).astype(str)
            ).astype(object)
        )
    triples = ws.parent / "triples.csv"
    pd.DataFrame(
        {
            "head": np.concatenate(heads),
            "relation": np.concatenate(rels),
            "tail": np.concatenate(tails),
        }
    ).to_csv(triples, index=False)
    return triples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--interactions", type=int, default=300000)
    ap.add_argument("--relations", type=int, default=50)
    ap.add_argument("--entities-per-relation", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--work", type=Path, default=Path("/tmp/graphrec-kg-scale"))
    a = ap.parse_args()
    from graphrec.kg.build import run_build
    from graphrec.stages.evaluate import evaluate
    from graphrec.stages.rank import load_ranker
    from graphrec.stages.train import run_train

    shutil.rmtree(a.work, ignore_errors=True)
    ws = a.work / "ws"
    times = {}
    t = time.perf_counter()
    triples = setup(ws, a)
    times["setup_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    built = run_build(ws, triples=triples, progress=False)
    times["build_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    # the GNN and the ranker fitted on validation
    run_train(ws, epochs=a.epochs, seed=1, progress=False)
    times["train_s"] = round(time.perf_counter() - t, 1)
    r = load_ranker(ws)
    t = time.perf_counter()
    metrics = evaluate(ws, ks=(20,), ranker=r, progress=False)
    times["evaluate_s"] = round(time.perf_counter() - t, 1)
    cold = metrics["tasks"]["cold_item"]
    g = built.graph
    row = {
        "users": a.users,
        "items": a.items,
        "interactions": a.interactions,
        "relations": a.relations,
        "entities": int(
            sum(n for t_, n in g.num_nodes.items() if t_ not in ("user", "item"))
        ),
        "edge_types": len(g.edges),
        "edges": int(sum(len(e) for e in g.edges.values())),
        **times,
        "peak_rss_gib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
        ),
        "blocks": r.blocks(),
        "ridge_lambda": r.record.selection.get("ridge_lambda"),
        "cold_recall@20": round(cold["accuracy"]["recall@20"], 4),
        "cold_candidates": cold["candidates"],
        "cold_random_recall@20": round(20 / cold["candidates"], 4),
        "warm_ndcg@20": round(metrics["tasks"]["warm"]["accuracy"]["ndcg@20"], 4),
        "command": "python -m benchmarks.kg_scale " + " ".join(sys.argv[1:]),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(row))
    OUT.parent.mkdir(exist_ok=True)
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
