"""Memory estimates made before a big allocation: a setting that cannot fit stops with one line naming it,
instead of an allocator's traceback (or the machine swapping) minutes later."""

from __future__ import annotations

import os

from graphrec.core.errors import InputError


def available_bytes() -> int:
    """Memory the system can still give (Linux MemAvailable; total physical memory where that is unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(needed: float, what: str, flag: str | None = None) -> None:
    """Raise one InputError when `needed` bytes (an estimate of `what`) exceed the available memory."""
    have = available_bytes()
    if needed > have:
        hint = f": lower {flag}" if flag else ""
        raise InputError(
            f"{what} needs about {_gib(needed)} of memory, {_gib(have)} is available{hint}"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"
