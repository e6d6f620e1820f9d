"""Benchmarks of graphrec against the recommenders users would pick instead (not part of the test suite).

    python -m benchmarks.run --dataset ml-latest-small --tasks warm,cold-item --seeds 1,2,3
    python -m benchmarks.scale --sizes 1000000,5000000

Peers need `pip install -r benchmarks/requirements.txt` (LightFM needs the build recipe written there).
"""
