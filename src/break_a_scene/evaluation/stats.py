"""Means with bootstrap 95% intervals over independent units (scenes, or scene x seed)."""

from __future__ import annotations

import numpy as np


def mean_ci(values: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap 95% interval; NaNs are dropped (all NaN -> NaN, NaN, NaN)."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, len(array), (resamples, len(array)))].mean(axis=1)
    return float(array.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_difference(a: dict, b: dict, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean of b[u] - a[u] over the units both have (NaNs dropped) and its percentile-bootstrap 95% interval,
    resampling units. Pairing removes what the units share (a hard scene, a lucky seed), which two separate
    intervals count twice. Returns (mean, low, high, units)."""
    diffs = [b[u] - a[u] for u in a if u in b and a[u] == a[u] and b[u] == b[u]]
    return (*mean_ci(diffs, resamples, seed), len(diffs))
