"""ECE and MCE as functions of per-bin calibration gaps, and their bias-aware intervals.

A bin's gap is its positive rate minus its mean score. ECE weighs the absolute gaps by the
bins' row counts, MCE takes the largest. Both only see absolute values, so noise and
sampling error bias them upward, most where a true gap is near 0 (a calibrated group).
:func:`gap_interval` builds intervals that allow for that; ``calibration.py`` supplies the
gaps of a released cube and of its bootstrap draws.
"""

from __future__ import annotations

import numpy as np

Gaps = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Per bin, shape (..., b): weight (row count), gap, and whether the bin counts (released
and not empty)."""


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def ece_of(weight: np.ndarray, gap: np.ndarray, counts: np.ndarray) -> np.ndarray:
    weight = np.where(counts, weight, 0.0)
    return ratio((weight * np.abs(gap)).sum(axis=-1), weight.sum(axis=-1))


def mce_of(weight: np.ndarray, gap: np.ndarray, counts: np.ndarray) -> np.ndarray:
    worst = np.where(counts, np.abs(gap), -np.inf).max(axis=-1)
    return np.where(np.isfinite(worst), worst, np.nan)


def _band(deviation: np.ndarray, counts: np.ndarray, level: float) -> np.ndarray:
    """Half-widths (b,) of a simultaneous band: in ``(1 + level) / 2`` of the draws every
    counted bin's deviation (draws, b) is within its half-width at once.

    A bin's standard error is the spread of its deviations over the draws with rows in it;
    its half-width is that times the quantile of the largest standardised deviation over
    the bins (max-t), so sparse, noisy bins get wide ones. A bin with rows in fewer than two
    draws has no measured spread and an infinite half-width.
    """
    n = counts.sum(axis=0)
    mean = np.where(counts, deviation, 0.0).sum(axis=0) / np.maximum(n, 1)
    spread = np.where(counts, (deviation - mean) ** 2, 0.0).sum(axis=0) / np.maximum(n, 1)
    se = np.where(n >= 2, np.sqrt(spread), np.inf)
    usable = counts & (se > 0) & np.isfinite(se)
    worst = np.where(usable, np.abs(deviation) / np.where(usable, se, 1.0), 0.0).max(axis=-1)
    critical = float(np.quantile(worst, (1.0 + level) / 2.0))
    return np.where(np.isfinite(se), se * critical, np.inf)


def gap_interval(maximum: bool, estimate: Gaps, truth: Gaps, boot: Gaps,
                 level: float) -> tuple[float, float]:
    """ECE (``maximum=False``) or MCE interval from gaps, each ``Gaps`` (..., b).

    The upper end is the basic bootstrap's. The lower end is where upward bias would make
    it miss, so it is built from a simultaneous band on the gaps instead; see
    :func:`pdebug_jupyter.metrics.calibration.calibration_interval`.
    """
    of = mce_of if maximum else ece_of
    value = float(of(*estimate))
    basic = of(*boot) - of(*truth)
    basic = basic[np.isfinite(basic)]
    if not np.isfinite(value) or basic.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    high = value - float(np.quantile(basic, tail))
    _, gap, counts = estimate
    deviation = boot[1] - truth[1]
    half = _band(deviation, boot[2] & counts, level)
    if maximum:  # every gap is at least |gap| - half, together: so is the largest
        return (float(np.max(np.where(counts, np.abs(gap) - half, 0.0))), high)
    # Gaps the band cannot tell from 0 are taken as 0, the case whose absolute values are
    # biased up the most; the other bins keep their released gaps. Empty bins keep the truth's.
    centre = np.where(counts, np.where(np.abs(gap) > half, gap, 0.0), truth[1])
    null = of(boot[0], centre + deviation, boot[2]) - of(truth[0], centre, truth[2])
    null = null[np.isfinite(null)]
    return (value - float(np.quantile(null, 1.0 - tail)), high)
