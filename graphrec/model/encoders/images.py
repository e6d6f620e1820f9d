"""Safe image loading for encoders: bad files become a reason string, never an exception that stops a run.

Decoding and preprocessing run in DataLoader worker processes while the model works on the previous batch.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from graphrec.core.io import file_sha256
from graphrec.core.settings import DEFAULT_MAX_PIXELS

# DEFAULT_MAX_PIXELS (core.settings): posters and product photos are far below it; anything above is treated as a
# decompression bomb.
# Nor is any of them a file this large: such a file is not read (hashing it alone would take seconds).
MAX_IMAGE_BYTES = 50 * 1024 * 1024

log = logging.getLogger(__name__)


def open_image(
    path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image | None, str]:
    """A fully decoded RGB image, or (None, reason) for a missing, non-image, corrupt, truncated or huge file."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between MAX_IMAGE_PIXELS and twice that: both count as bombs here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    return (
                        None,
                        f"decompression bomb: {w}x{h} pixels is over the limit of {max_pixels}",
                    )
                # forces the full decode: truncated data fails here
                rgb = im.convert("RGB")
        return rgb, ""
    except FileNotFoundError:
        return None, "file not found"
    except UnidentifiedImageError:
        return None, "not an image file"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return None, f"decompression bomb: {e}"
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
    ) as e:  # Pillow's errors for damaged files
        return None, f"corrupt or truncated image: {e}"


def hash_files(paths: Sequence[str | None], threads: int = 4) -> list[str]:
    """sha256 of each file's bytes ("" for no path, "missing:<path>" for a file that cannot be read).

    hashlib releases the GIL, so a few threads overlap disk reads and hashing.
    """

    def one(p: str | None) -> str:
        if not p:
            return ""
        try:
            return file_sha256(p)
        except OSError:
            return f"missing:{p}"

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(one, paths, chunksize=64))


class ImageFiles(torch.utils.data.Dataset):
    """(position, preprocessed tensor or None, reason) for each path; runs inside DataLoader workers."""

    def __init__(
        self,
        paths: Sequence[str],
        transform: Callable[[Image.Image], torch.Tensor],
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.paths = list(paths)
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        img, reason = open_image(self.paths[i], self.max_pixels)
        if img is None:
            return i, None, reason
        try:
            return i, self.transform(img), ""
        # e.g. a 1-pixel image the crop cannot handle
        except (
            OSError,
            ValueError,
            RuntimeError,
        ) as e:
            return i, None, f"preprocessing failed: {e}"


# positions, images, bad (position, reason)
Batch = tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]


def collate_images(batch: list[tuple[int, torch.Tensor | None, str]]) -> Batch:
    """Stack the good images; the bad ones travel as (position, reason)."""
    good = [(i, t) for i, t, _ in batch if t is not None]
    bad = [(i, r) for i, t, r in batch if t is None]
    if good:
        pos = torch.tensor([i for i, _ in good], dtype=torch.long)
        return pos, torch.stack([t for _, t in good]), bad
    return torch.zeros(0, dtype=torch.long), torch.zeros(0), bad


def image_batches(
    paths: Sequence[str],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    num_workers: int,
    pin_memory: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Batch]:
    """Batches of (positions into `paths`, image tensor, bad (position, reason) list), decoded in workers."""
    loader = torch.utils.data.DataLoader(
        ImageFiles(paths, transform, max_pixels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    yield from loader


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def image_paths(cells: np.ndarray, images_dir: str | None) -> list[str | None]:
    """The file to read for each non-empty image cell: its path with symlinks resolved, or None.

    None also where the file must not be read: anything but a regular file (a symlink to /dev/zero or a FIFO
    would block the encode forever), a file outside the images folder once symlinks are resolved (it is not
    the dataset's), one over MAX_IMAGE_BYTES, or a path that cannot be resolved (a symlink loop). Such items
    count as having no image (mask 0), with one warning giving the counts. A file that does not exist keeps its
    path, so that it is reported as "file not found" like any other unreadable image."""
    root = os.path.realpath(images_dir or os.getcwd())
    out: list[str | None] = []
    skipped: Counter[str] = Counter()
    example: dict[str, str] = {}
    for c in cells:
        path, reason = _screen(os.path.join(root, c), root) if c else (None, "")
        out.append(path)
        if reason:
            skipped[reason] += 1
            example.setdefault(reason, str(c))
    if skipped:
        log.warning(
            "images: %d item image files skipped as missing (mask 0): %s",
            sum(skipped.values()),
            "; ".join(
                f"{n} {r} (e.g. {example[r]!r})" for r, n in skipped.most_common()
            ),
        )
    return out


def _screen(path: str, root: str) -> tuple[str | None, str]:
    """(the resolved file to read, "") or (None, why it must not be read); see image_paths."""
    try:
        real = os.path.realpath(path, strict=True)
        st = os.stat(real)
    except FileNotFoundError:
        return path, ""
    except OSError as e:  # a symlink loop, a name too long, a folder we may not enter
        return None, f"cannot be resolved ({e.strerror})"
    if os.path.commonpath([root, real]) != root:
        return None, "outside the images folder"
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    if st.st_size > MAX_IMAGE_BYTES:
        return None, f"over {MAX_IMAGE_BYTES >> 20} MB"
    return real, ""
