"""MovieLens-1M as split by the LightGCN++ paper (../shared/data/ml-1m-lightgcnpp): graphrec, PyG LightGCN and EASE
under that paper family's protocol, in one run.

    OMP_NUM_THREADS=2 python -m benchmarks.ml1m [--systems graphrec,ease,lightgcn] [--lightgcn-epochs 40]
                                               [--protocol refit|paper]

Metrics (SOURCE.md of the data): all-item ranking for every test user; Recall@20 = hits / |test items of the
user| (not min(|test|, 20)); NDCG@20 with the ideal DCG over min(|test|, 20) positions. Each system selects on
valid with a fit on train and is scored on test once. Protocols:
- refit (ours): the chosen setting is refit on train+valid; test masks train and valid.
- paper (LightGCN++'s published table): no refit; test masks train only (valid items stay candidates);
  graphrec trains with `refit=False` (its GNN and its ranker's collaborative parts stay fitted on train) and
  its user vectors are built from the train history. graphrec runs its own library stages (import pre-split, build,
  train,
with its ranker) and is served by its scoring-space vectors (what `graphrec export` ships). Rows are appended to
benchmarks/results/ml1m.jsonl with wall times and peak RSS.
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
import scipy.sparse as sp

from benchmarks.peers.base import FitInput
from benchmarks.peers.lightgcn import LightGCN
from benchmarks.peers.linear import EASE
from benchmarks.run import rank

HERE = Path(__file__).resolve().parent
DATA = (
    Path(os.environ.get("GRAPHREC_SHARED", HERE.parent.parent / "shared"))
    / "data"
    / "ml-1m-lightgcnpp"
)
OUT = HERE / "results" / "ml1m.jsonl"
CUTOFFS = (10, 20, 40)


def read_lists(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`user item item ...` per line -> (users, items) int64."""
    users, items = [], []
    for line in path.read_text().splitlines():
        ids = [int(t) for t in line.split()]
        if len(ids) > 1:
            users += [ids[0]] * (len(ids) - 1)
            items += ids[1:]
    return np.asarray(users, np.int64), np.asarray(items, np.int64)


def paper_metrics(
    topk: np.ndarray, users: np.ndarray, truth: sp.csr_matrix
) -> dict[str, float]:
    """Recall@K = hits/|truth| and NDCG@K (ideal over min(|truth|, K)), averaged over users with truth, for K in
    CUTOFFS (the paper's supplement reports @10 and @40 next to the main table's @20)."""
    t = truth[users]
    n_true = np.diff(t.indptr)
    keep = n_true > 0
    hits = np.take_along_axis(t.toarray() > 0, np.maximum(topk, 0), axis=1) & (
        topk >= 0
    )
    hits, n_true = hits[keep], n_true[keep]
    out: dict[str, float] = {}
    for k in CUTOFFS:
        disc = 1.0 / np.log2(np.arange(2, k + 2))
        idcg = np.cumsum(disc)[np.minimum(n_true, k) - 1]
        out[f"recall@{k}"] = float((hits[:, :k].sum(axis=1) / n_true).mean())
        out[f"ndcg@{k}"] = float(((hits[:, :k] * disc).sum(axis=1) / idcg).mean())
    return {**out, "users": int(keep.sum())}


class Split:
    def __init__(self, root: Path):
        self.parts = {
            p: read_lists(root / f"{p}.txt") for p in ("train", "valid", "test")
        }
        self.n_users = 1 + max(int(u.max()) for u, _ in self.parts.values())
        self.n_items = 1 + max(int(i.max()) for _, i in self.parts.values())

    def matrix(self, *names: str) -> sp.csr_matrix:
        u = np.concatenate([self.parts[n][0] for n in names])
        i = np.concatenate([self.parts[n][1] for n in names])
        m = sp.csr_matrix(
            (np.ones(len(u), np.float32), (u, i)), shape=(self.n_users, self.n_items)
        )
        m.data[:] = 1.0
        return m

    def evaluate(self, scorer, phase: str, protocol: str = "refit") -> dict[str, float]:
        given = (
            ("train",)
            if phase == "valid" or protocol == "paper"
            else ("train", "valid")
        )
        truth = "valid" if phase == "valid" else "test"
        t = self.matrix(truth)
        users = np.flatnonzero(np.diff(t.indptr) > 0)
        cand = np.ones(self.n_items, bool)
        return paper_metrics(
            rank(scorer, users, cand, self.matrix(*given), max(CUTOFFS)), users, t
        )

    def fit_input(self, final: bool, threads: int) -> FitInput:
        x = self.matrix("train", "valid") if final else self.matrix("train")
        return FitInput(
            X=x,
            item_attr=sp.csr_matrix((self.n_items, 0), dtype=np.float32),
            user_attr=None,
            text=np.zeros((self.n_items, 0), np.float32),
            seed=1,
            threads=threads,
            final=final,
        )


def run_peer(
    system, split: Split, grid: list[dict], threads: int, protocol: str
) -> dict:
    start = time.perf_counter()
    trials = []
    for params in grid:
        for used, scorer in system.fit(
            split.fit_input(False, threads), params, checkpoints=True
        ):
            trials.append((split.evaluate(scorer, "valid")["ndcg@20"], used))
    best = max(trials, key=lambda t: t[0])[1]
    *_, (used, scorer) = system.fit(
        split.fit_input(protocol == "refit", threads), best, checkpoints=False
    )
    m = split.evaluate(scorer, "test", protocol)
    return {
        "params": used,
        "valid": [{"ndcg@20": round(v, 5), **p} for v, p in trials],
        **m,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def run_graphrec(split: Split, root: Path, train: dict, protocol: str) -> dict:
    import torch

    from graphrec.data.dataset import Dataset
    from graphrec.data.importer import import_files
    from graphrec.kg.build import run_build
    from graphrec.stages.rank import load_ranker
    from graphrec.stages.train import run_train

    start = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    files = {}
    for p, (u, i) in split.parts.items():
        f = root / f"{p}.csv"
        f.write_text("user_id,item_id\n" + "".join(f"{a},{b}\n" for a, b in zip(u, i)))
        files[p] = str(f)
    ws = root / "ws"
    import_files(ws, name="ml-1m-lightgcnpp", **files)
    run_build(ws, progress=False)
    trained = run_train(ws, seed=1, progress=False, refit=protocol == "refit", **train)
    r = load_ranker(ws)
    pipeline_s = time.perf_counter() - start
    ds = Dataset.load(ws)
    # the workspace's dense indices are its own: map the split's ids through ids.json
    uix = ds.user_index([str(u) for u in range(split.n_users)])
    iix = ds.item_index([str(i) for i in range(split.n_items)])
    item_vec = torch.from_numpy(r.item_vectors(iix))
    history = ds.matrix(("train",) if protocol == "paper" else ("train", "valid"))

    def scorer(users: np.ndarray) -> np.ndarray:
        return (
            torch.from_numpy(r.user_vectors(uix[users], history)) @ item_vec.T
        ).numpy()

    m = split.evaluate(scorer, "test", protocol)
    return {
        "params": {
            **train,
            "epochs_selected": trained.history[-1].get("epoch")
            if trained.history
            else None,
            "blocks": r.blocks(),
            "weights_warm": r.weights_warm,
            "ease_lambda": r.record.ease_lambda,
            "gnn_kept": r.record.gnn_kept,
            "validation_ndcg": r.record.selection.get("validation_ndcg"),
            "closed_form_validation_ndcg": r.record.selection.get(
                "closed_form_validation_ndcg"
            ),
        },
        **m,
        "wall_s": round(pipeline_s, 1),
        "epoch_s": round(float(np.mean([h["seconds"] for h in trained.history])), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", default="graphrec,ease,lightgcn")
    ap.add_argument(
        "--lightgcn-epochs",
        type=int,
        default=40,
        help="checkpoints every 10 epochs up to this",
    )
    ap.add_argument("--lightgcn-batch", type=int, default=8192)
    ap.add_argument(
        "--graphrec-epochs",
        type=int,
        default=None,
        help="graphrec's max selection epochs (default: its own)",
    )
    ap.add_argument(
        "--graphrec-batch",
        type=int,
        default=None,
        help="graphrec's batch size (default: its own)",
    )
    ap.add_argument(
        "--graphrec-lr",
        type=float,
        default=None,
        help="graphrec's learning rate (default: its own)",
    )
    ap.add_argument("--protocol", choices=("refit", "paper"), default="refit")
    ap.add_argument(
        "--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2"))
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/graphrec-ml1m"))
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(
            f"{DATA}: not found (set GRAPHREC_SHARED to the folder holding data/ml-1m-lightgcnpp)"
        )
    split = Split(DATA)
    print(
        f"ml-1m-lightgcnpp: {split.n_users} users, {split.n_items} items, "
        + ", ".join(f"{p} {len(u)}" for p, (u, _) in split.parts.items()),
        flush=True,
    )
    for name in args.systems.split(","):
        if name == "graphrec":
            train = {
                k: v
                for k, v in (
                    ("epochs", args.graphrec_epochs),
                    ("batch_size", args.graphrec_batch),
                    ("lr", args.graphrec_lr),
                )
                if v is not None
            }
            row = run_graphrec(split, args.work, train, args.protocol)
        elif name == "ease":
            row = run_peer(
                EASE(),
                split,
                [{"lambda": v} for v in (100.0, 300.0, 1000.0, 3000.0)],
                args.threads,
                args.protocol,
            )
        elif name == "lightgcn":
            import benchmarks.peers.lightgcn as lg

            lg.EPOCH_STEPS = tuple(range(10, args.lightgcn_epochs + 1, 10))
            base = {
                "dim": 64,
                "layers": 3,
                "lr": 5e-3,
                "reg": 1e-4,
                "batch": args.lightgcn_batch,
            }
            row = run_peer(
                LightGCN(),
                split,
                [{**base, "epochs": args.lightgcn_epochs}],
                args.threads,
                args.protocol,
            )
        else:
            raise SystemExit(f"unknown system {name!r}")
        row = {
            "system": name,
            "dataset": "ml-1m-lightgcnpp",
            "protocol": args.protocol,
            **row,
            "peak_rss_gib": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
            ),
            "command": "python -m benchmarks.ml1m " + " ".join(sys.argv[1:]),
        }
        print(json.dumps({k: v for k, v in row.items() if k != "valid"}), flush=True)
        OUT.parent.mkdir(exist_ok=True)
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
