"""CLIP image-encoding throughput: graphrec's encoder against bare open_clip loops on the same model and batch.

    python benchmarks/encode_throughput.py [--images DIR] [--n 1024] [--model ViT-B-32] [--pretrained none]
                                           [--batch-size 64] [--workers N] [--device auto] [--repeats 3]

Three ways over the same N image files, interleaved `--repeats` times (best of each kept, so a noisy
machine costs all three alike):
  bare_forward  model.encode_image on tensors already decoded and preprocessed in memory: the compute
                ceiling, no file I/O or decoding at all
  bare_loop     what a user writes: a DataLoader (same workers) doing Image.open(...).convert('RGB') +
                open_clip's preprocess, then model.encode_image under inference_mode (+ autocast on GPU)
  graphrec      ClipEncoder.encode_images: safe loading, bad-file handling, normalisation, copy to numpy
The goal is graphrec >= 90 % of bare_loop. `measure()` is the function to call on a GPU machine.
Images default to the MovieLens posters beside the checkout; without them, synthetic JPEGs are written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphrec.model.encoders.clip import load_clip  # noqa: E402
from graphrec.model.encoders.images import default_workers  # noqa: E402
from graphrec.model.encoders.runtime import autocast  # noqa: E402

POSTERS = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "ml-latest-small-posters"
    / "posters"
)


class _Plain(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def image_files(directory: Path | None, n: int) -> list[str]:
    """n image paths from `directory` (cycled if it has fewer), or synthetic 200x300 JPEGs."""
    if directory is not None and directory.is_dir():
        files = sorted(
            str(p)
            for p in directory.iterdir()
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if files:
            return [files[i % len(files)] for i in range(n)]
    from PIL import Image

    out = Path(tempfile.mkdtemp(prefix="encode-bench-"))
    rng = np.random.default_rng(0)
    for i in range(min(n, 256)):
        Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(
            out / f"{i}.jpg", quality=85
        )
    files = sorted(str(p) for p in out.iterdir())
    return [files[i % len(files)] for i in range(n)]


def measure(
    paths: list[str],
    model: str = "ViT-B-32",
    pretrained: str | None = "none",
    checkpoint: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    repeats: int = 3,
) -> dict:
    enc = load_clip(model, pretrained, checkpoint, device)
    workers = default_workers() if workers is None else workers
    dev, prec = enc.device, enc.precision
    from PIL import Image

    tensors = torch.stack([enc.preprocess(Image.open(p).convert("RGB")) for p in paths])

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def bare_forward():
        with torch.inference_mode(), autocast(dev, prec):
            for s in range(0, len(tensors), batch_size):
                enc.model.encode_image(
                    tensors[s : s + batch_size].to(dev, non_blocking=True)
                )
        sync()

    def bare_loop():
        loader = torch.utils.data.DataLoader(
            _Plain(paths, enc.preprocess),
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=dev.type == "cuda",
        )
        feats = []
        with torch.inference_mode(), autocast(dev, prec):
            for x in loader:
                feats.append(enc.model.encode_image(x.to(dev, non_blocking=True)))
        sync()

    def graphrec():
        enc.encode_images(paths, batch_size, workers, progress=False)

    runs = {"bare_forward": bare_forward, "bare_loop": bare_loop, "graphrec": graphrec}
    bare_forward()  # warm-up: kernels, allocator, first-touch
    best = {k: 0.0 for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = max(best[name], len(paths) / (time.perf_counter() - t0))
    return {
        "model": model,
        "pretrained": pretrained,
        "device": str(dev),
        "precision": prec,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "workers": workers,
        "batch_size": batch_size,
        "images": len(paths),
        "repeats": repeats,
        "images_per_s": {k: round(v, 1) for k, v in best.items()},
        "graphrec_vs_bare_loop": round(best["graphrec"] / best["bare_loop"], 3),
        "graphrec_vs_bare_forward": round(best["graphrec"] / best["bare_forward"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=POSTERS)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    pretrained = None if a.checkpoint else a.pretrained
    res = measure(
        image_files(a.images, a.n),
        a.model,
        pretrained,
        a.checkpoint,
        a.batch_size,
        a.workers,
        a.device,
        a.repeats,
    )
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
