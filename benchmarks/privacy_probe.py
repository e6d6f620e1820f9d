"""What a linear probe reads about users' attributes from exported user vectors (issue 13).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/privacy_probe.py [--data ../shared/data/ml-100k] \
        [--epochs 30] [--seed 0] [--work DIR] [--out benchmarks/results/ml-100k-privacy-probe.json]

MovieLens 100K (943 users with age band, gender, occupation and zip region), split as the quickstart splits
(10% valid / 10% test per user, 20% of items and 10% of users cold, 3 context items per cold user), lexical text
features, the knowledge graph, `--epochs` of training, the ranker. Two pipelines on the same split:

  with attributes     the dataset as `graphrec data movielens` loads it
  no attributes       the same tables with the user attribute columns removed (no user-attribute graph edges,
                      no group block): a collaborative/content-only model

Exports compared: the normal and the `--private` export of the first, the normal export of the second, and
the design `--private` did not take: the first model's user GNN rows recomputed with the user-attribute
edges removed from the graph (`graphrec.stages.train.refresh_embeddings`), group block dropped (probed only: its
short-history weights are those fitted with the attribute blocks, so its NDCG is not shown).

Probe: multinomial logistic regression (scikit-learn, standardised inputs, C chosen by inner 3-fold CV from
0.01 / 0.1 / 1) trained on 80% of the users and scored on the other 20%, 5 times (5-fold CV: every user is
held out once); the reported accuracy is over all users. Each export is probed on its whole user vector and on
each block alone (an attacker reads the layout from the manifest); the table shows the best of those. The
majority row predicts the training folds' most frequent value. NDCG@20 columns: the export's vectors ranking
the test parts (warm, cold-item, cold-user), the given items excluded, as `graphrec evaluate` ranks.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from graphrec.core.feature_store import load_features
from graphrec.core.io import write_json
from graphrec.data.dataset import GIVEN, TRAINED, Dataset
from graphrec.data.movielens import import_movielens
from graphrec.data.splits import run_split
from graphrec.kg.build import run_build
from graphrec.kg.graph import KnowledgeGraph
from graphrec.model.export_format import load_export
from graphrec.model.metrics import embedding_accuracy
from graphrec.stages.encode import run_encode
from graphrec.stages.export import export
from graphrec.stages.rank import Ranker, load_ranker
from graphrec.stages.train import load_model, refresh_embeddings, run_train

ATTRIBUTES = ("gender", "age_band", "occupation", "region")
TASKS = {"warm": "test", "cold_item": "cold_test", "cold_user": "cold_user_test"}
FOLDS = 5
REJECTED = "attribute edges removed (rejected)"


def pipeline(ws: Path, epochs: int, seed: int) -> None:
    run_encode(ws, ["lexical"], seed=seed, progress=False)
    run_build(ws, item_knn=10, progress=False)
    run_train(ws, epochs=epochs, seed=seed, progress=False)


def without_attribute_edges(
    ws: Path, ds: Dataset
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The rejected design: the trained model's user rows over the graph without user-attribute edges (the
    rest of the vector as the normal export, group block dropped). Returns (user, item vectors, blocks)."""
    trained = load_model(ws)
    kg = KnowledgeGraph.load(ws)
    kg = replace(
        kg,
        edges={
            k: e for k, e in kg.edges.items() if kg.relation_kind(k) != "user_attribute"
        },
    )
    pairs = lambda p: (p["user"].to_numpy(np.int64), p["item"].to_numpy(np.int64))
    context = ds.part("cold_user_context")
    user, _ = refresh_embeddings(
        trained.model,
        ds,
        kg,
        load_features(ws),
        pairs(ds.part(*(TRAINED if trained.meta.get("refit") else ("train",)))),
        pairs(context) if len(context) else None,
    )
    r: Ranker = load_ranker(ws, ds)
    r = replace(
        r,
        user_emb=user,
        groups=None,
        group_items=None,
        new_user_weights={b: w for b, w in r.new_user_weights.items() if b != "group"},
    )
    return (
        r.user_vectors(np.arange(ds.n_users), ds.matrix(GIVEN)),
        r.item_vectors(),
        r.blocks(),
    )


def folds(n: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), FOLDS)


def probe(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Held-out accuracy of the multinomial logistic regression probe, over all users (5-fold CV)."""
    right = 0
    for test in folds(len(y), seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        clf = make_pipeline(
            StandardScaler(),
            LogisticRegressionCV(Cs=[0.01, 0.1, 1.0], cv=3, max_iter=2000),
        )
        # rare classes (occupations held by 7 users) miss some inner folds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(x[train], y[train])
        right += int((clf.predict(x[test]) == y[test]).sum())
    return right / len(y)


def majority(y: np.ndarray, seed: int) -> float:
    right = 0
    for test in folds(len(y), seed):
        values, counts = np.unique(np.delete(y, test), return_counts=True)
        right += int((y[test] == values[counts.argmax()]).sum())
    return right / len(y)


def strongest(
    user: np.ndarray, blocks: dict[str, int], labels: dict[str, np.ndarray], seed: int
) -> dict[str, dict]:
    """Per attribute: the best probe accuracy over the whole vector and each varying block, and where."""
    parts, at = {"whole": user}, 0
    for name, width in blocks.items():
        parts[name], at = user[:, at : at + width], at + width
    out = {}
    for a, y in labels.items():
        acc = {
            n: probe(p, y, seed)
            for n, p in parts.items()
            if p.shape[1] > 1 and p.std(axis=0).max() > 0
        }
        best = max(acc, key=acc.get)
        out[a] = {"accuracy": acc[best], "from": best, "all": acc}
    return out


def quality(
    user: np.ndarray, item: np.ndarray, ds: Dataset, warm: np.ndarray
) -> dict[str, float]:
    seen = ds.matrix(GIVEN).astype(bool)
    out = {}
    for task, part in TASKS.items():
        cand = np.flatnonzero(~warm if task == "cold_item" else warm)
        out[task] = embedding_accuracy(
            torch.from_numpy(user),
            torch.from_numpy(item),
            ds.matrix((part,)).astype(bool),
            seen,
            cand,
            20,
        )[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        default=str(
            Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
        ),
    )
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--work",
        default=None,
        help="Folder for the two workspaces (default: a temporary one).",
    )
    ap.add_argument("--out", default=None, help="Write the results as JSON here.")
    a = ap.parse_args()
    start = time.perf_counter()
    work = Path(a.work or tempfile.mkdtemp(prefix="privacy-probe-"))
    attr, plain = work / "with-attributes", work / "no-attributes"
    for ws in (attr, plain):
        shutil.rmtree(ws, ignore_errors=True)
    import_movielens(attr, a.data, "100k")
    ds = run_split(
        attr,
        method="random",
        valid=0.1,
        test=0.1,
        cold_items=0.2,
        cold_users=0.1,
        cold_user_context=3,
        seed=a.seed,
    )
    labels = {c: ds.users[c].astype(str).to_numpy() for c in ATTRIBUTES}
    bare = Dataset.load(attr)
    bare.users = bare.users[["user_id"]]
    bare.schema.user_attribute_columns = []
    bare.save(plain)
    for ws in (attr, plain):
        pipeline(ws, a.epochs, a.seed)

    rows: dict[str, tuple[np.ndarray, np.ndarray, dict[str, int]]] = {}
    for name, ws, private in (
        ("normal export", attr, False),
        ("private export", attr, True),
        ("no-attribute model", plain, False),
    ):
        e = load_export(
            export(
                ws, work / f"export-{name.replace(' ', '-')}", ["npy"], private=private
            )
        )
        assert e.user_ids == [str(u) for u in ds.user_ids]
        rows[name] = (e.user_embeddings, e.item_embeddings, e.manifest.blocks)
        warm = e.item_warm
    rows[REJECTED] = without_attribute_edges(attr, ds)

    results = {
        "majority": {c: {"accuracy": majority(y, a.seed)} for c, y in labels.items()}
    }
    for name, (u, i, b) in rows.items():
        results[name] = strongest(u, b, labels, a.seed)
        # its short-history weights were fitted with the attribute blocks: not comparable
        if name != REJECTED:
            results[name]["ndcg@20"] = quality(u, i, ds, warm)
    seconds = time.perf_counter() - start

    print(
        f"held-out probe accuracy ({FOLDS}-fold, {ds.n_users} users; best of the whole vector and each block) "
        f"and NDCG@20; ml-100k, {a.epochs} epochs, seed {a.seed}, {seconds:.0f} s"
    )
    head = (
        " | ".join(f"{c:>10}" for c in ATTRIBUTES)
        + " | "
        + " | ".join(f"{t:>9}" for t in TASKS)
    )
    print(f"{'':38} | {head}")
    for name, r in results.items():
        probes = " | ".join(f"{r[c]['accuracy']:>10.3f}" for c in ATTRIBUTES)
        ndcg = (
            " | ".join(f"{r['ndcg@20'][t]:>9.4f}" for t in TASKS)
            if "ndcg@20" in r
            else ""
        )
        print(f"{name:38} | {probes} | {ndcg}")
    for name in rows:
        print(
            f"  {name}: strongest probe from "
            + ", ".join(f"{c} {results[name][c]['from']}" for c in ATTRIBUTES)
            + f"; blocks {rows[name][2]}"
        )
    if a.out:
        write_json(
            Path(a.out),
            {
                "dataset": "ml-100k",
                "epochs": a.epochs,
                "seed": a.seed,
                "seconds": round(seconds),
                "folds": FOLDS,
                "results": results,
            },
        )
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
