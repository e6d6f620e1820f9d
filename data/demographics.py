"""Coarse demographics: the one definition of age bands (MovieLens-1M's), used by every loader and builder.

Exact ages are personal data; graphrec keeps only the band. MovieLens 100K has exact ages (banded on load),
and a user's own `age` column becomes `age_band` in the graph. (The synthetic generator keeps its own
illustrative labels: changing them would reshuffle every synthetic dataset the tests are calibrated on.)
"""

from __future__ import annotations

import numpy as np

AGE_EDGES = (18, 25, 35, 45, 50, 56)  # lower bounds of every band but the first
AGE_BANDS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


def age_bands(age: np.ndarray) -> np.ndarray:
    """Band label (object array) of each age in years; 17.9 -> "<18", 18 -> "18-24", 56 and over -> "56+"."""
    return np.asarray(AGE_BANDS, dtype=object)[
        np.digitize(np.asarray(age, float), AGE_EDGES)
    ]
