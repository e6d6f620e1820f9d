"""Score a trained workspace's embeddings with the contract protocol (no ranker blend: the GNN alone).

    python benchmarks/score_embeddings.py WS SPLIT_DIR     # SPLIT_DIR from protocol.py split

Writes top-20 per user among each task's candidates, excluding every interaction given to the system
(train, valid, cold_valid), then runs /work/shared/contract/protocol.py score on warm and cold.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec.core.io import read_tensors
from graphrec.data.dataset import Dataset

PROTOCOL = Path(__file__).resolve().parents[2] / "shared" / "contract" / "protocol.py"


def main(ws: str, split: str, k: int = 20) -> None:
    ds = Dataset.load(ws)
    emb = read_tensors(Path(ws) / "model" / "embeddings.safetensors")
    scores = emb["user"] @ emb["item"].T
    given = ds.part("train", "valid", "cold_valid")
    scores[given["user"].to_numpy(), given["item"].to_numpy()] = -np.inf
    ids = pd.Index(ds.item_ids)
    for task in ("warm", "cold"):
        cand_ids = [
            x.strip()
            for x in (Path(split) / f"{task}.txt").read_text().splitlines()
            if x.strip()
        ]
        cand = ids.get_indexer(cand_ids)
        cand = cand[cand >= 0]
        s = scores[:, cand]
        top = np.argsort(-s, axis=1)[:, :k]
        rows = [
            (ds.user_ids[u], ds.item_ids[cand[i]], r + 1)
            for u in range(ds.n_users)
            for r, i in enumerate(top[u])
            if np.isfinite(s[u, i])
        ]
        out = Path(ws) / f"recs_{task}.csv"
        pd.DataFrame(rows, columns=["user_id", "item_id", "rank"]).to_csv(
            out, index=False
        )
        subprocess.run(
            [sys.executable, str(PROTOCOL), "score", split, task, str(out)], check=True
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
