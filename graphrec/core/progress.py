"""Progress bars: the one place that decides whether a bar shows.

A bar shows when the caller asks for it (`show`), stderr is a terminal (tqdm's `disable=None`: a log file
would otherwise fill with carriage-return updates) and `TQDM_DISABLE` is unset; `graphrec --quiet` sets
`TQDM_DISABLE`. tqdm reads that variable only for arguments a caller leaves out, and every bar here passes
`disable`, so it is checked here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def bars_disabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in (
        "",
        "0",
        "false",
        "no",
    )


def progress_bar(
    iterable: Iterable[Any] | None = None, *, show: bool = True, **kwargs: Any
) -> tqdm:
    """tqdm(iterable, **kwargs), silent unless `show`, stderr is a terminal and TQDM_DISABLE is unset."""
    return tqdm(
        iterable, disable=True if not show or bars_disabled() else None, **kwargs
    )
