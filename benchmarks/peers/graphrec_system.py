"""graphrec itself as a benchmarked system, and its ablations, run through its own library stages.

The benchmark split is already a graphrec workspace (benchmarks.split), so graphrec does its own selection
(train on train, early-stop and blend-fit on valid/cold_valid) and refit, exactly as `graphrec train` would
for a user; the runner only ranks with the result. One trained pipeline serves every task of a seed.

Text: the same all-MiniLM-L6-v2 vectors the content peers use (handed over as a precomputed modality) plus
graphrec's lexical TF-IDF. Images use CLIP only when GRAPHREC_CLIP_CHECKPOINT names local open_clip weights
(none can be downloaded here); without them the "no images" ablation equals the full system.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.peers.base import (
    COLD_ITEM,
    COLD_USER,
    MIXED,
    WARM,
    FitInput,
    Scorer,
    System,
)
from graphrec.core.io import write_json


@dataclass(frozen=True)
class Ablation:
    images: bool = True
    text: bool = True
    kg_attributes: bool = True
    blend: bool = True


VARIANTS = {
    "graphrec": Ablation(),
    "graphrec-no-images": Ablation(images=False),
    "graphrec-no-text": Ablation(text=False),
    "graphrec-no-kg": Ablation(kg_attributes=False),
    "graphrec-no-blend": Ablation(blend=False),
}


class Graphrec(System):
    family, tasks = "graphrec", (WARM, COLD_ITEM, COLD_USER, MIXED)

    def __init__(self, name: str, ablation: Ablation):
        self.name, self.ablation = name, ablation
        self._ranker = None
        self.pipeline_seconds = 0.0
        self.epoch_seconds: list[float] = []

    def _pipeline(self, data: FitInput) -> Any:
        from graphrec.data.dataset import Dataset
        from graphrec.kg.build import run_build
        from graphrec.stages.encode import run_encode
        from graphrec.stages.rank import load_ranker
        from graphrec.stages.train import run_train

        ws = Path(data.workspace).parent / f"{data.workspace.name}-{self.name}"
        shutil.rmtree(ws, ignore_errors=True)
        shutil.copytree(Path(data.workspace) / "dataset", ws / "dataset")
        a = self.ablation
        ds = Dataset.load(ws)
        modalities = []
        clip = os.environ.get("GRAPHREC_CLIP_CHECKPOINT")
        if a.images and ds.schema.image_column and clip:
            modalities.append("clip_image")
        precomputed = []
        # a KG-only catalogue: its triples are all the content graphrec gets
        if data.triples is not None:
            (
                ds.schema.attribute_columns,
                ds.schema.text_columns,
                ds.schema.image_column,
            ) = [], [], None
            ds.save(ws)
        # the peers' MiniLM vectors, so graphrec does not re-encode
        if a.text and ds.schema.text_columns:
            np.save(ws / "minilm.npy", data.text)
            write_json(ws / "minilm.ids.json", [str(i) for i in ds.item_ids])
            precomputed.append(f"minilm={ws / 'minilm.npy'},{ws / 'minilm.ids.json'}")
            modalities.append("lexical")
        # the KG builder turns attribute columns into relations: hide them
        if not a.kg_attributes:
            ds.schema.attribute_columns = []
            ds.save(ws)
        if modalities or precomputed:
            run_encode(
                ws,
                modalities,
                precomputed=precomputed,
                clip_checkpoint=clip,
                seed=data.seed,
                progress=False,
            )
        # triples: the KG-only catalogue's content
        run_build(ws, progress=False, triples=data.triples)
        trained = run_train(ws, seed=data.seed, progress=False)
        # training only, validation excluded
        self.epoch_seconds = [h["seconds"] for h in trained.history]
        ranker = load_ranker(ws)  # run_train fitted it with the model
        if not a.blend:  # the GNN score alone
            ranker = replace(
                ranker,
                weights_warm={"gnn": 1.0},
                weights_cold={"gnn": 1.0},
                cold_offset=0.0,
            )
        return ranker

    def fit(
        self, data: FitInput, params: dict[str, Any], checkpoints: bool = False
    ) -> Iterator[tuple[dict, Scorer]]:
        import torch

        if self._ranker is None:
            start = time.perf_counter()
            self._ranker = self._pipeline(data)
            # encode+build+train+blend, shared by tasks
            self.pipeline_seconds = time.perf_counter() - start
        r, history = self._ranker, data.X
        item_vec = torch.from_numpy(r.item_vectors())

        def score(
            users: np.ndarray,
        ) -> np.ndarray:  # the scoring space graphrec ranks with and exports
            return (
                torch.from_numpy(r.user_vectors(users, history)) @ item_vec.T
            ).numpy()

        yield {"ablation": self.ablation.__dict__}, score
