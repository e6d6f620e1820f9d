"""Similar items on MovieLens latest-small imported whole (serve mode): graphrec's export next to implicit's ALS and
EASE neighbours, for five well-known films.

    OMP_NUM_THREADS=2 python -m benchmarks.similar_items [--out benchmarks/results/similar_items.md]

graphrec: `data movielens` (not split), `encode --modalities lexical`, `build`, `train` (defaults), `export`,
then `Export.similar_items` (the list of a user whose only item is the film, through the collaborative blocks).
ALS: implicit's AlternatingLeastSquares (64 factors, 15 iterations) on every rating, `similar_items` (cosine of
item factors). EASE: lambda 100 on every rating, the film's row of the item-item matrix B. Prints a markdown
table of the top 5 each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = (
    Path(os.environ.get("GRAPHREC_SHARED", HERE.parent.parent / "shared"))
    / "data"
    / "ml-latest-small"
)
FILMS = {
    "1": "Toy Story (1995)",
    "260": "Star Wars IV (1977)",
    "318": "The Shawshank Redemption (1994)",
    "2571": "The Matrix (1999)",
    "4993": "The Lord of the Rings: The Fellowship of the Ring (2001)",
}
TOP = 5


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.similar_items", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "similar_items.md")
    a = ap.parse_args()
    import implicit
    import scipy.sparse as sp

    from graphrec.data.dataset import Dataset
    from graphrec.data.movielens import import_movielens
    from graphrec.kg.build import run_build
    from graphrec.model.export_format import load_export
    from graphrec.stages.encode import run_encode
    from graphrec.stages.export import export
    from graphrec.stages.train import run_train

    titles = pd.read_csv(DATA / "movies.csv", dtype=str).set_index("movieId")["title"]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        import_movielens(ws, DATA, variant="latest-small")
        run_encode(ws, ["lexical"], progress=False)
        run_build(ws, progress=False)
        run_train(ws, progress=False)
        e = load_export(export(ws, Path(tmp) / "exp", ["npy"]))
        ds = Dataset.load(ws)
        x = sp.csr_matrix(
            (
                np.ones(len(ds.interactions), np.float32),
                (ds.interactions["user"], ds.interactions["item"]),
            ),
            shape=(ds.n_users, ds.n_items),
        )
        x.data[:] = 1.0
        als = implicit.cpu.als.AlternatingLeastSquares(
            factors=64, iterations=15, random_state=0
        )
        als.fit(x, show_progress=False)
        g = (x.T @ x).toarray().astype(np.float64)
        g[np.diag_indices_from(g)] += 100.0
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        index = {i: n for n, i in enumerate(ds.item_ids)}
        rows = [
            "| film | graphrec (export) | ALS (implicit) | EASE |",
            "|---|---|---|---|",
        ]
        for mid, name in FILMS.items():
            j = index[mid]
            ours = [titles[i] for i, _ in e.similar_items(mid, k=TOP)]
            ids, _ = als.similar_items(j, N=TOP + 1)
            theirs = [titles[ds.item_ids[i]] for i in ids if i != j][:TOP]
            ease = [
                titles[ds.item_ids[i]] for i in np.argsort(-b[j], kind="stable")[:TOP]
            ]
            rows.append(
                f"| {name} | {'; '.join(ours)} | {'; '.join(theirs)} | {'; '.join(ease)} |"
            )
    table = "\n".join(rows)
    print(table)
    a.out.write_text(f"`python -m benchmarks.similar_items`\n\n{table}\n")


if __name__ == "__main__":
    main()
