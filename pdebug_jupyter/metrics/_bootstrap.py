"""Simulation helpers for intervals: the release's own noise distribution, re-drawn.

These draws only build confidence intervals from released numbers (post-processing); they
never produce a release, so an ordinary numpy generator is the right tool here.
"""

from __future__ import annotations

import numpy as np


def geometric_noise(alpha: float, size: int | tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
    """Two-sided geometric draws, P(z) proportional to alpha ** |z|: the difference of two
    independent geometric variables on {0, 1, ...} with success probability 1 - alpha."""
    if alpha <= 0:
        return np.zeros(size)
    p = 1.0 - alpha
    return (rng.geometric(p, size) - rng.geometric(p, size)).astype(float)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Central ``level`` interval of finite bootstrap samples (NaN, NaN if there are none)."""
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [tail, 1.0 - tail])
    return (float(lo), float(hi))
