"""Canonical tables, installed as graphrec.data.

Schema and validation, CSV/Parquet readers, MovieLens loaders, synthetic data, splits.
"""

from graphrec.data.dataset import HELD_OUT, SPLITS, Dataset, Schema

__all__ = ["Dataset", "Schema", "SPLITS", "HELD_OUT"]
