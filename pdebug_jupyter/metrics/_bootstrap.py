"""Simulation helpers for intervals: the release's own noise distribution, re-drawn.

These draws only build confidence intervals from released numbers (post-processing); they
never produce a release, so an ordinary numpy generator is the right tool here.
"""

from __future__ import annotations

import numpy as np


def geometric_noise(alpha: float | np.ndarray, size: int | tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
    """Two-sided geometric draws, P(z) proportional to alpha ** |z|: the difference of two
    independent geometric variables on {0, 1, ...} with success probability 1 - alpha.

    An array ``alpha`` broadcasts against ``size``, so one call draws for several measures.
    """
    if np.ndim(alpha) == 0:
        if float(alpha) <= 0:  # type: ignore[arg-type]
            return np.zeros(size)
        p = 1.0 - float(alpha)  # type: ignore[arg-type]
        return (rng.geometric(p, size) - rng.geometric(p, size)).astype(float)
    # numpy draws geometric variables one by one when p is an array. Inverting the
    # distribution is exact and vectorises: with E ~ Exponential(1) (that is, -ln of a
    # uniform), P(floor(E / -ln alpha) >= k) = alpha ** k. alpha 0 gives 0.
    rate = -np.log(np.clip(np.asarray(alpha, dtype=float), 1e-300, None))

    def one() -> np.ndarray:
        return np.asarray(np.floor(rng.standard_exponential(size) / rate))

    return np.asarray(one() - one())


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Central ``level`` interval of finite bootstrap samples (NaN, NaN if there are none)."""
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [tail, 1.0 - tail])
    return (float(lo), float(hi))
