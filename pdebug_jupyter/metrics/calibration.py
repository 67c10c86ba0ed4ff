"""Calibration views of a released ``calibration`` cube: reliability diagram, ECE, MCE, Brier.

Every function here is post-processing of one release and costs no budget. Score bins are
left-closed ``[a, b)``, the last one closed, and empty bins are kept. ``group=None`` pools
every group of the cube, ``other`` included, so it describes all rows in the score domain.
A suppressed cell (NaN in any measure) is left out of every view the same way: its rows are
missing from pooled bins, which can bias a pooled bin by fewer rows than the release's
suppression threshold (plus noise); ``reliability_diagram`` marks such bins ``partial``.

Intervals are a parametric bootstrap over the released cube; see :func:`calibration_interval`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import pandas as pd

from ._bins import bin_edges
from ._bootstrap import geometric_noise, percentile_interval
from ._gaps import Gaps, ece_of, gap_interval, mce_of, ratio

__all__ = ["MEASURES", "CalibrationCube", "Metric", "brier_score", "calibration_interval",
           "calibration_intervals", "expected_calibration_error", "maximum_calibration_error",
           "reliability_diagram"]

MEASURES = ("count", "positives", "score_sum", "score_pos_sum", "score_sq_sum")
"""The released measures, in the order of the stacked arrays used internally."""
_SUMS = ("score_sum", "score_pos_sum", "score_sq_sum")  # noise lives on the fixed-point grid
# Fixed, so re-rendering a release shows the same interval. Post-processing only: the
# release's own noise came from the OS.
_SEED = 20_240_611


@dataclass(frozen=True, eq=False)
class CalibrationCube:
    """The released sufficient statistics of a ``calibration`` query, in score units.

    Attributes
    ----------
    edges : numpy.ndarray
        Score bin edges, shape ``(b + 1,)``.
    groups : tuple of str
        Group labels, length ``g``; ``("all",)`` when the query had no ``by``.
    count, positives, score_sum, score_pos_sum, score_sq_sum : numpy.ndarray
        Noisy measures, shape ``(b, g)``, sums divided by ``scale``; NaN: suppressed cell.
    alphas : Mapping[str, float]
        Per measure, the noise on its integer grid: P(z) proportional to alpha ** abs(z).
    scale : float
        Fixed-point scale of the sums (grid value = score units * scale).
    """

    edges: np.ndarray
    groups: tuple[str, ...]
    count: np.ndarray
    positives: np.ndarray
    score_sum: np.ndarray
    score_pos_sum: np.ndarray
    score_sq_sum: np.ndarray
    alphas: Mapping[str, float]
    scale: float

    def __post_init__(self) -> None:
        edges = _frozen(bin_edges(self.edges))
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "groups", tuple(str(g) for g in self.groups))
        shape = (edges.size - 1, len(self.groups))
        for name in MEASURES:
            values = _frozen(getattr(self, name))
            if values.shape != shape:
                raise ValueError(f"{name} has shape {values.shape}, expected (bins, groups) = "
                                 f"{shape}")
            object.__setattr__(self, name, values)
        missing = [m for m in MEASURES if m not in self.alphas]
        if missing:
            raise ValueError(f"alphas has no noise parameter for {', '.join(missing)}")
        alphas = {m: float(self.alphas[m]) for m in MEASURES}
        if not all(0.0 <= a < 1.0 for a in alphas.values()) or not float(self.scale) > 0:
            raise ValueError("every alpha must be in [0, 1) and scale positive")
        object.__setattr__(self, "alphas", MappingProxyType(alphas))

    def stack(self) -> np.ndarray:
        """The measures stacked in :data:`MEASURES` order, shape ``(5, b, g)``."""
        return np.stack([getattr(self, m) for m in MEASURES])

    @property
    def released(self) -> np.ndarray:
        """``(b, g)`` mask of released cells: NaN in any measure means suppressed."""
        return np.asarray(~np.isnan(self.stack()).any(axis=0))


def _frozen(values: object) -> np.ndarray:
    array = np.array(values, dtype=float)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class _Consistent:
    """Released sums made consistent: what a cell (or a pooled bin) can really hold."""

    n: np.ndarray  # count >= 0
    rate: np.ndarray  # positive rate in [0, 1]
    mean: np.ndarray  # mean score, inside the bin
    mean_pos: np.ndarray  # mean score of positives, inside the bin
    mean_neg: np.ndarray  # mean score of negatives, inside the bin
    var: np.ndarray  # within-label score variance, in [0, (hi - lo)^2 / 4] (Popoviciu)


def _project(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> _Consistent:
    """Project measures ``x`` (5, ...) onto consistent values; ``lo``, ``hi`` broadcast."""
    def per(num: np.ndarray, den: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        # The true mean of a bin lies inside it, so clipping a noisy mean only removes error.
        return np.where(den > 0, np.clip(num / np.where(den > 0, den, 1.0), lo, hi), fallback)

    count, positives, total, total_pos, squares = x
    n = np.maximum(count, 0.0)
    rate = np.clip(positives / np.where(n > 0, n, 1.0), 0.0, 1.0)
    mean = per(total, n, (lo + hi) / 2)
    mean_pos = per(total_pos, rate * n, mean)
    mean_neg = per(total - total_pos, n - rate * n, mean)
    # Variance of scores about the bin mean, less the part explained by the label.
    var = (np.where(n > 0, squares / np.where(n > 0, n, 1.0), mean**2) - mean**2
           - rate * (1 - rate) * (mean_pos - mean_neg) ** 2)
    return _Consistent(n, rate, mean, mean_pos, mean_neg, np.clip(var, 0.0, (hi - lo) ** 2 / 4))


Metric = Callable[[CalibrationCube, str | None], float]
"""A calibration metric: a function of a cube and a group (None pools every group)."""

# A kernel evaluates a metric on pooled bins with any leading axes (..., b) and the (b,)
# mask of released bins, so one call covers every bootstrap draw.
_Kernel = Callable[[_Consistent, np.ndarray], np.ndarray]


def _columns(cube: CalibrationCube, group: str | None) -> np.ndarray:
    if group is None:
        return np.ones(len(cube.groups), dtype=bool)
    if group not in cube.groups:
        raise ValueError(f"unknown group {group!r} (groups: {', '.join(cube.groups)})")
    return np.array([g == group for g in cube.groups])


def _pool(stacked: np.ndarray, cube: CalibrationCube,
          group: str | None) -> tuple[_Consistent, np.ndarray]:
    """Sum the released cells of the chosen groups per bin, then make each bin consistent.

    Pooling before projecting lets the noise of the cells average out before any clipping.
    Returns the bins (..., b) and the (b,) mask of bins with a released cell.
    """
    keep = cube.released & _columns(cube, group)
    pooled = np.where(keep, stacked, 0.0).sum(axis=-1)  # NaN only in unreleased cells
    return (_project(np.moveaxis(pooled, -2, 0), cube.edges[:-1], cube.edges[1:]),
            keep.any(axis=1))


def _gaps(c: _Consistent, released: np.ndarray) -> Gaps:
    counts = released & (c.n > 0)
    return np.where(counts, c.n, 0.0), c.rate - c.mean, counts


def _ece(c: _Consistent, released: np.ndarray) -> np.ndarray:
    return ece_of(*_gaps(c, released))


def _mce(c: _Consistent, released: np.ndarray) -> np.ndarray:
    return mce_of(*_gaps(c, released))


def _brier(c: _Consistent, released: np.ndarray) -> np.ndarray:
    # Per bin: positives' mean squared distance from 1 plus negatives' from 0. With
    # consistent sums this is (sum p^2 - 2 sum_{y=1} p + n_pos) exactly.
    pos, neg = c.rate * c.n, (1 - c.rate) * c.n
    loss = pos * ((c.mean_pos - 1) ** 2 + c.var) + neg * (c.mean_neg**2 + c.var)
    n = np.where(released, c.n, 0.0)
    return ratio(np.where(released, loss, 0.0).sum(axis=-1), n.sum(axis=-1))


def _metric(kernel: _Kernel, cube: CalibrationCube, group: str | None) -> float:
    return float(kernel(*_pool(cube.stack(), cube, group)))


def expected_calibration_error(cube: CalibrationCube, group: str | None = None) -> float:
    """ECE: ``sum_b (n_b / N) |positive_rate_b - mean_score_b|`` over released non-empty bins.

    ``N`` sums ``n_b`` over the same bins, so suppressed and empty bins carry no weight.
    Rates are clipped to [0, 1] and mean scores to their bin. The absolute value makes the
    estimate biased upward when noise or sampling error in a bin is as large as its true
    gap: a calibrated model never shows an ECE of exactly 0. NaN when no bin has rows.
    """
    return _metric(_ece, cube, group)


def maximum_calibration_error(cube: CalibrationCube, group: str | None = None) -> float:
    """MCE: the largest ``|positive_rate_b - mean_score_b|`` over released non-empty bins.

    Sparse bins dominate it under noise; read it with its interval and the bin counts.
    """
    return _metric(_mce, cube, group)


def brier_score(cube: CalibrationCube, group: str | None = None) -> float:
    """Brier score from the sums: ``(sum p^2 - 2 sum_{y=1} p + n_pos) / N``.

    Each pooled bin is first made consistent: count >= 0, positives <= count, mean scores
    of positives and of negatives inside the bin, within-label variance in
    ``[0, (hi - lo)^2 / 4]``. Without noise this changes nothing, and the score is exact up
    to fixed-point rounding (at most ``1.5 / scale``). Under noise it drops most of the
    noise of the squared sum, which a narrow bin's mean nearly determines.
    """
    return _metric(_brier, cube, group)


_KERNELS: dict[Metric, _Kernel] = {
    expected_calibration_error: _ece,
    maximum_calibration_error: _mce,
    brier_score: _brier,
}


def _truth(cube: CalibrationCube) -> tuple[_Consistent, np.ndarray]:
    """The bootstrap's truth: each released cell made consistent, and the sums it implies
    (5, b, g) in :data:`MEASURES` order, NaN where suppressed."""
    t = _project(np.where(cube.released, cube.stack(), 0.0), cube.edges[:-1, None],
                 cube.edges[1:, None])
    # A rate of exactly 0 or 1 would give replicates no sampling spread at all, and a small
    # cell's rate is often that. The Jeffreys estimate (positives + 1/2) / (n + 1) never is,
    # and moves a large cell's rate by less than 1 / n.
    t = replace(t, rate=(t.rate * t.n + 0.5) / (t.n + 1.0))
    pos, neg = t.rate * t.n, (1 - t.rate) * t.n
    sums = np.stack([t.n, pos, pos * t.mean_pos + neg * t.mean_neg, pos * t.mean_pos,
                     pos * (t.mean_pos**2 + t.var) + neg * (t.mean_neg**2 + t.var)])
    return t, np.where(cube.released, sums, np.nan)


def _replicates(cube: CalibrationCube, t: _Consistent, draws: int,
                rng: np.random.Generator) -> np.ndarray:
    """Bootstrap cubes, shape ``(draws, 5, b, g)``: sampling from ``t``, then fresh noise."""
    size = (draws, 2, *t.n.shape)
    # Poisson thinning: positives and negatives are independent Poisson counts.
    labels = rng.poisson(np.stack([t.rate * t.n, (1 - t.rate) * t.n]), size).astype(float)
    # Per label, the sum of (p - mean) over its rows.
    dev_pos, dev_neg = np.moveaxis(rng.standard_normal(size) * np.sqrt(labels * t.var), 1, 0)
    pos, neg = labels[:, 0], labels[:, 1]
    # Sum of squares to first order: p^2 = m^2 + 2 m (p - m) + (p - m)^2, the last term taken
    # at its mean; its spread is of order var^2, tiny next to the label's own variance.
    squares = (pos * (t.mean_pos**2 + t.var) + 2 * t.mean_pos * dev_pos
               + neg * (t.mean_neg**2 + t.var) + 2 * t.mean_neg * dev_neg)
    sum_pos = pos * t.mean_pos + dev_pos
    out = np.stack([pos + neg, pos, sum_pos + neg * t.mean_neg + dev_neg, sum_pos, squares],
                   axis=1)
    alphas = np.array([cube.alphas[m] for m in MEASURES])[:, None, None]
    grid = np.array([cube.scale if m in _SUMS else 1.0 for m in MEASURES])[:, None, None]
    out += geometric_noise(alphas, out.shape, rng) / grid
    # Replicates keep the release's suppression pattern: the interval is conditional on it.
    return np.where(cube.released, out, np.nan)


def _replace(cube: CalibrationCube, stacked: np.ndarray) -> CalibrationCube:
    measures = dict(zip(MEASURES, stacked, strict=True))
    return CalibrationCube(edges=cube.edges, groups=cube.groups, alphas=cube.alphas,
                           scale=cube.scale, **measures)


def _around(estimate: float, deviations: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile-form interval for ``estimate`` from bootstrap deviations (draw minus value
    at the truth)."""
    low, high = percentile_interval(deviations, level)
    return (estimate + low, estimate + high)


def calibration_intervals(cube: CalibrationCube,
                          requests: Sequence[tuple[Metric, str | None]], *,
                          level: float = 0.9, draws: int = 400,
                          rng: np.random.Generator | None = None) -> list[tuple[float, float]]:
    """Intervals of several ``(metric, group)`` pairs from one set of bootstrap draws.

    Each interval equals :func:`calibration_interval` of the pair with the same ``rng``
    state; drawing once is what makes several of them cheap.
    """
    rng = rng if rng is not None else np.random.default_rng(_SEED)
    truth, sums = _truth(cube)
    replicates = _replicates(cube, truth, draws, rng)
    pooled: dict[str | None, tuple[tuple[_Consistent, np.ndarray], ...]] = {}
    out = []
    for metric, group in requests:
        kernel = _KERNELS.get(metric)
        if kernel is None:
            values = np.array([metric(_replace(cube, r), group) for r in replicates])
            centre = metric(_replace(cube, sums), group)
            out.append(_around(metric(cube, group), values - centre, level))
            continue
        if group not in pooled:
            pooled[group] = tuple(_pool(x, cube, group) for x in (cube.stack(), sums, replicates))
        estimate, at_truth, boot = pooled[group]
        if metric in _GAP_METRICS:
            low, high = gap_interval(metric is maximum_calibration_error, _gaps(*estimate),
                                      _gaps(*at_truth), _gaps(*boot), level)
        else:
            low, high = _around(float(kernel(*estimate)), kernel(*boot) - kernel(*at_truth),
                                level)
        out.append((float(np.clip(low, 0.0, 1.0)), float(np.clip(high, 0.0, 1.0))))
    return out


_GAP_METRICS = frozenset({expected_calibration_error, maximum_calibration_error})


def calibration_interval(cube: CalibrationCube, metric: Metric, group: str | None = None, *,
                         level: float = 0.9, draws: int = 400,
                         rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Interval of ``metric`` from a parametric bootstrap of sampling and noise.

    The truth is the released cube with each cell made consistent (see :func:`brier_score`)
    and its positive rate taken as (positives + 1/2) / (n + 1). Each draw resamples every
    released cell from it (positives ~ Poisson(n * rate), negatives ~ Poisson(n * (1 -
    rate)); score sums of each ~ Normal with the within-label variance implied by
    ``score_sq_sum``; squares to first order from those), then adds fresh two-sided
    geometric noise with the release's ``alphas`` on each measure's integer grid (divided by
    ``scale`` for sums). Suppressed cells stay suppressed. Deviations are the metric on a
    draw minus the metric on the truth.

    Brier score and any other callable: the central ``level`` share of the deviations is put
    on the estimate (percentile form). Other callables are called per draw; this module's
    metrics are evaluated on all draws at once and clipped to [0, 1].

    ECE and MCE are biased upward: noise and sampling error in a bin's gap (positive rate
    minus mean score) raise its absolute value on average, most where the true gap is near
    0, which is the case of a calibrated group. A bootstrap centred on the released gaps
    sees less of that bias than there is (its gaps are too far from 0), so intervals built
    on it alone miss above the truth. Here each end is built for the error that would make
    it miss:

    - upper end: ``estimate - q_low`` of the deviations (the basic bootstrap);
    - lower end: from a simultaneous band: in a ``(1 + level) / 2`` share of the draws every
      bin's gap lies within ``c * se_b`` of its released gap at once (``se_b`` the spread of
      the bin's deviations, ``c`` the quantile of their largest standardised value). For MCE
      the lower end is ``max_b (|gap_b| - c * se_b)``. For ECE it is ``estimate - q_high`` of
      the deviations of a bootstrap centred on the released gaps with every gap inside its
      band around 0 set to 0: the largest bias those bins could carry is taken off.

    A calibrated group's lower end is 0 in about ``(1 + level) / 2`` of its releases. The
    point estimate stays the plain (biased) one, so for a nearly calibrated group the whole
    interval can lie below it. ``rng=None`` uses a fixed seed, so a release always shows the
    same interval.

    Notes
    -----
    Coverage of the population value by nominal 90% intervals over 2000 simulated releases
    per epsilon (the model of the coverage test in ``tests/test_metrics_calibration.py``:
    50,000 rows, 10 bins, no suppression; epsilon for the whole query). Women are the
    planted miscalibration (ECE 0.064, MCE 0.187), men are calibrated (0 and 0); in brackets
    the basic bootstrap alone, as before, over 1000 releases:

    ==============  ==============  ==============  ==============
    metric          epsilon 0.1     epsilon 1       epsilon 10
    ==============  ==============  ==============  ==============
    ECE women       0.90 (0.84)     0.90 (0.89)     0.90 (0.90)
    ECE men         0.93 (0.49)     0.94 (0.53)     0.95 (0.54)
    ECE pooled      0.93 (0.81)     0.91 (0.87)     0.89 (0.87)
    MCE women       0.94 (0.80)     0.94 (0.88)     0.91 (0.87)
    MCE men         0.92 (0.47)     0.94 (0.67)     0.91 (0.89)
    MCE pooled      0.96 (0.66)     0.95 (0.84)     0.90 (0.88)
    Brier pooled    0.90            0.89            0.89
    ==============  ==============  ==============  ==============

    The band makes lower ends conservative where a gap is neither clearly 0 nor clearly
    not (women's ECE misses below its lower end in 0.5% of releases at epsilon 0.1), and
    the upper end misses more than its 5% there (9%): they roughly balance. MCE at epsilon
    0.1 is honest but nearly useless, its intervals about 0.45 wide for women: the top bins
    hold a few hundred rows and their noise dominates.
    """
    return calibration_intervals(cube, [(metric, group)], level=level, draws=draws, rng=rng)[0]


def reliability_diagram(cube: CalibrationCube, group: str | None = None, *, level: float = 0.9,
                        draws: int = 400, rng: np.random.Generator | None = None) -> pd.DataFrame:
    """One row per score bin, empty and suppressed bins kept.

    Columns: ``lower``, ``upper`` (bin edges), ``count`` (noisy count clipped at 0, NaN if
    suppressed), ``mean_score``, ``positive_rate`` (NaN for an empty bin), ``rate_low`` and
    ``rate_high`` (the ``level`` interval of the positive rate, percentile form of
    :func:`calibration_interval`), ``suppressed`` (no cell of the bin released) and
    ``partial`` (some of the pooled cells suppressed, so the bin misses their rows).
    """
    bins, released = _pool(cube.stack(), cube, group)
    filled = released & (bins.n > 0)
    rng = rng if rng is not None else np.random.default_rng(_SEED)
    truth, sums = _truth(cube)
    boot, _ = _pool(_replicates(cube, truth, draws, rng), cube, group)
    deviations = np.where(boot.n > 0, boot.rate, np.nan) - _pool(sums, cube, group)[0].rate
    intervals = [_around(bins.rate[k], deviations[:, k], level) if filled[k]
                 else (np.nan, np.nan) for k in range(released.size)]
    low, high = np.clip(np.array(intervals).T, 0.0, 1.0)
    return pd.DataFrame({
        "lower": cube.edges[:-1],
        "upper": cube.edges[1:],
        "count": np.where(released, bins.n, np.nan),
        "mean_score": np.where(filled, bins.mean, np.nan),
        "positive_rate": np.where(filled, bins.rate, np.nan),
        "rate_low": low,
        "rate_high": high,
        "suppressed": ~released,
        "partial": released & ~cube.released[:, _columns(cube, group)].all(axis=1),
    })
