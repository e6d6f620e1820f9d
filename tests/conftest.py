"""Shared fixtures: a hand-made tiny dataset, and the real MovieLens folders (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("GRAPHREC_SHARED_DATA", REPO.parent / "shared" / "data")
)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped with the reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(
            f"{p} not present (MovieLens data lives in ../shared/data beside the checkout)"
        )
    return p


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Tests marked `gpu` need CUDA: without one they are skipped, with the reason (the GPU machine runs them)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (none visible): run on a GPU machine, benchmarks/gpu_session.sh"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def write_csv(path: Path, rows: list[dict] | pd.DataFrame) -> Path:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def one_thread():
    """Tiny graphs: one torch thread is fastest and immune to a busy machine's thread contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_files(tmp_path: Path) -> dict[str, Path]:
    """Six items (two with images), four users, a dozen interactions, as CSV files."""
    from PIL import Image

    img = tmp_path / "images"
    img.mkdir()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(img / "a.png")
    Image.new("RGB", (16, 16), (30, 30, 200)).save(img / "b.png")
    items = write_csv(
        tmp_path / "items.csv",
        [
            {
                "item_id": "i1",
                "title": "Red Circle",
                "genres": "Drama|Comedy",
                "year": "1995",
                "image": "a.png",
            },
            {
                "item_id": "i2",
                "title": "Blue Square",
                "genres": "Drama",
                "year": "1997",
                "image": "b.png",
            },
            {
                "item_id": "i3",
                "title": "Green Line",
                "genres": "Action",
                "year": "2001",
                "image": "",
            },
            {
                "item_id": "i4",
                "title": "Yellow Dot",
                "genres": "Action|Comedy",
                "year": "2001",
                "image": "",
            },
            {
                "item_id": "i5",
                "title": "Purple Star",
                "genres": "Comedy",
                "year": "1995",
                "image": "",
            },
            {
                "item_id": "i6",
                "title": "Grey Cloud",
                "genres": "",
                "year": "",
                "image": "",
            },
        ],
    )
    users = write_csv(
        tmp_path / "users.csv",
        [
            {"user_id": "u1", "age_band": "18-24", "gender": "F", "zip": "12345"},
            {"user_id": "u2", "age_band": "25-34", "gender": "M", "zip": "54321"},
            {"user_id": "u3", "age_band": "25-34", "gender": "F", "zip": "11111"},
            {"user_id": "u4", "age_band": "35-44", "gender": "M", "zip": "22222"},
        ],
    )
    pairs = [
        ("u1", "i1"),
        ("u1", "i2"),
        ("u1", "i5"),
        ("u2", "i2"),
        ("u2", "i3"),
        ("u2", "i4"),
        ("u3", "i1"),
        ("u3", "i4"),
        ("u3", "i5"),
        ("u4", "i3"),
        ("u4", "i6"),
        ("u4", "i2"),
    ]
    inter = write_csv(
        tmp_path / "interactions.csv",
        [
            {"user_id": u, "item_id": i, "timestamp": 100 + k, "rating": 4}
            for k, (u, i) in enumerate(pairs)
        ],
    )
    return {
        "items": items,
        "users": users,
        "interactions": inter,
        "images": img,
        "dir": tmp_path,
    }
