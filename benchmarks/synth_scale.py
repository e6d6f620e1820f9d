"""Time and peak memory of `data.synth.generate` (no images) and `data.splits.split_dataset` at a given scale.

python benchmarks/synth_scale.py --users 200000 --items 50000 --interactions 2000000
"""

from __future__ import annotations

import argparse
import resource
import time

from graphrec.data.splits import check_no_leak, split_dataset
from graphrec.data.synth import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--interactions", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t = time.perf_counter()
    ds = generate(a.users, a.items, a.interactions, seed=a.seed, progress=False)
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{len(ds.interactions):,} interactions ({a.users:,} users, {a.items:,} items): "
        f"{dt:.1f} s, {len(ds.interactions) / dt / 1e6:.2f} M/s, peak RSS {rss:,.0f} MiB"
    )
    for method in ("random", "temporal"):
        t = time.perf_counter()
        out = split_dataset(
            ds, method=method, cold_items=0.2, cold_users=0.05, cold_user_context=3
        )
        dt = time.perf_counter() - t
        t = time.perf_counter()
        check_no_leak(out)
        dc = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"split {method}: {dt:.1f} s, check_no_leak {dc:.1f} s, peak RSS {rss:,.0f} MiB"
        )


if __name__ == "__main__":
    main()
