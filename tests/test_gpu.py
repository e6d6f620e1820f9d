"""The CUDA path: training on a GPU gives the model CPU training gives (same seed, same settings), and the served
lists agree. Skipped without CUDA (conftest); benchmarks/gpu_session.sh times the same path at scale."""

from __future__ import annotations

import numpy as np
import pytest
from train_fixtures import genre_workspace

from graphrec.core.io import read_tensors
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.model import artifacts
from graphrec.stages.rank import RankSettings, serving_ranker
from graphrec.stages.train import run_train

pytestmark = pytest.mark.gpu


def test_cuda_training_matches_cpu_training(tmp_path):
    settings = {
        "epochs": 3,
        "dim": 8,
        "layers": 2,
        "batch_size": 64,
        "lr": 0.02,
        "patience": 10,
        "progress": False,
        "refit": False,
    }
    runs = {}
    for device in ("cpu", "cuda"):
        ws = genre_workspace(tmp_path / device)
        r = run_train(ws, device=device, ranker=RankSettings(keep_gnn=True), **settings)
        emb = read_tensors(artifacts.embeddings_path(ws))
        ds = Dataset.load(ws)
        lists, _ = serving_ranker(ws, ds).topk(
            np.arange(ds.n_users), 10, ds.matrix(GIVEN)
        )
        runs[device] = (r, emb, lists)
    (cpu, cpu_emb, cpu_lists), (gpu, gpu_emb, gpu_lists) = runs["cpu"], runs["cuda"]
    assert cpu.selected_epoch == gpu.selected_epoch
    for key in ("user", "item"):  # float32 sums in another order: close, not bitwise
        np.testing.assert_allclose(gpu_emb[key], cpu_emb[key], rtol=1e-3, atol=1e-3)
    assert (
        np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(cpu_lists, gpu_lists)])
        > 0.9
    )
