"""Error cohorts: where the model fails most, from one noisy (count, errors) cube.

The ``cohort_errors`` release holds, per combination of 1-3 declared features (each with
its public cells, ``other`` last), the noisy number of rows and of misclassified rows.
Suppressed cells (NaN) are not released: they get no row in :func:`error_table` and count
as empty when :func:`heatmap` pools cells. Noisy counts are clipped at 0 and errors into
``[0, count]`` before any rate is formed.

Which cells are significantly weak
----------------------------------
Each released cell with ``count >= max(min_count, 1)`` is tested one-sided against the rest
of the released rows (a cell above the rest is above the overall rate too). On the arcsine
scale, where a binomial rate is nearly normal with variance ``1 / (4 n)`` whatever the rate
(the variance-stabilising transform; plain rates are skewed in cells of ~100 rows), the gap
``asin(sqrt(rate)) - asin(sqrt(rate_rest))`` is, under the null,

* sampling: normal, variance ``(1 / n + 1 / n_rest) / 4``;
* DP noise: by the delta method at the pooled rate ``R``, variance
  ``(v_errors + R**2 v_count) (1 / n**2 + cells_rest / n_rest**2) / (4 R (1 - R))`` with
  ``v = 2 a / (1 - a) ** 2`` for each measure's ``a``; taken as Laplace with that variance,
  since geometric noise has exponential, not normal, tails.

``p_value`` is the upper tail of that normal-Laplace sum at the observed gap. Simulated
under the null (every cell at one rate; tests/test_metrics_cohorts.py), the p-values hold
their level: at epsilon 0.5 per measure P(p < 0.05) = 0.047 and a Benjamini-Hochberg
discovery in 8% of trials at ``alpha_fdr = 0.1``; with heavier noise they turn conservative.
The Benjamini-Hochberg procedure over the tested cells then controls the false discovery
rate: ``q_value`` is the BH-adjusted p-value, ``significant`` is ``q_value <= alpha_fdr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from ._bootstrap import geometric_noise

__all__ = ["CohortCube", "error_table", "heatmap"]


@dataclass(frozen=True)
class CohortCube:
    """A ``cohort_errors`` release.

    Attributes
    ----------
    features : tuple of str
        Feature column names, one per axis.
    labels : tuple of tuple of str
        Each feature's cell labels, ``"other"`` last.
    count, errors : numpy.ndarray
        Shape ``tuple(len(l) for l in labels)``: noisy row counts and noisy counts of
        misclassified rows; NaN marks a suppressed cell.
    alphas : mapping
        ``"count"`` and ``"errors"``: two-sided geometric noise parameters.
    """

    features: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    count: np.ndarray
    errors: np.ndarray
    alphas: Mapping[str, float]

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels) or not self.features:
            raise ValueError("give one tuple of labels per feature")
        if len(set(self.features)) != len(self.features):
            raise ValueError("a feature appears twice")
        shape = tuple(len(lab) for lab in self.labels)
        for name in ("count", "errors"):
            value = np.asarray(getattr(self, name), dtype=float)
            if value.shape != shape:
                raise ValueError(f"{name} has shape {value.shape}, expected {shape} from the "
                                 "features' labels")
            object.__setattr__(self, name, value)
        if any(not 0 <= self.alphas.get(m, -1.0) < 1 for m in ("count", "errors")):
            raise ValueError("alphas must give 'count' and 'errors', each in [0, 1)")


def _noise_var(alpha: float) -> float:
    return 2 * alpha / (1 - alpha) ** 2


def _clean(c: CohortCube) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Released mask, counts clipped at 0 and errors clipped into [0, count]."""
    released = ~(np.isnan(c.count) | np.isnan(c.errors))
    n = np.where(released, np.clip(np.nan_to_num(c.count), 0.0, None), 0.0)
    e = np.where(released, np.clip(np.nan_to_num(c.errors), 0.0, n), 0.0)
    return released, n, e


def _normal_laplace_sf(x: np.ndarray, sd: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(N(0, sd**2) + Laplace(0, b) > x), Reed's normal-Laplace law, in log space; the
    plain normal once the Laplace part is negligible (b < sd / 30)."""
    r = np.minimum(sd / np.maximum(b, 1e-300), 30.0)
    b = sd / r
    up = r**2 / 2 - x / b + special.log_ndtr(x / sd - r)
    down = r**2 / 2 + x / b + special.log_ndtr(-x / sd - r)
    laplace = np.where(r < 30.0, 0.5 * (np.exp(up) - np.exp(down)), 0.0)
    return np.asarray(np.clip(special.ndtr(-x / sd) + laplace, 0.0, 1.0))


def _p_values(c: CohortCube, released: np.ndarray, n: np.ndarray, e: np.ndarray,
              tested: np.ndarray) -> np.ndarray:
    """One-sided p-value that each tested cell's error rate exceeds the rest's (see module)."""
    rest_n, rest_e = n.sum() - n, e.sum() - e
    pooled = float(np.clip(e.sum() / max(n.sum(), 1.0), 1e-6, 1 - 1e-6))
    rest_cells = max(int(released.sum()) - 1, 0)  # each adds its own noise to the rest
    cell_n, other_n = np.where(tested, n, 1.0), np.where(rest_n > 0, rest_n, 1.0)
    noise = _noise_var(c.alphas["errors"]) + pooled**2 * _noise_var(c.alphas["count"])
    sd = np.sqrt((1 / cell_n + 1 / other_n) / 4)
    laplace_var = (noise * (1 / cell_n**2 + rest_cells / other_n**2)
                   / (4 * pooled * (1 - pooled)))
    gap = np.arcsin(np.sqrt(e / cell_n)) - np.arcsin(np.sqrt(np.clip(rest_e / other_n, 0, 1)))
    p = _normal_laplace_sf(gap, sd, np.sqrt(laplace_var / 2))
    return np.where(tested & (rest_n > 0), p, np.nan)


def _rate_draws(c: CohortCube, n: np.ndarray, e: np.ndarray, draws: int,
                rng: np.random.Generator, sampling: bool) -> np.ndarray:
    """(draws, *shape) replicate error rates: a new sample, then a new release of it."""
    shape = (draws, *n.shape)
    if sampling:
        rate = np.divide(e, n, out=np.zeros_like(e), where=n > 0)
        rows = rng.poisson(n, shape)
        n_s, e_s = rows.astype(float), rng.binomial(rows, rate).astype(float)
    else:
        n_s, e_s = np.broadcast_to(n, shape), np.broadcast_to(e, shape)
    n_r = np.clip(n_s + geometric_noise(c.alphas["count"], shape, rng), 0.0, None)
    e_r = np.clip(e_s + geometric_noise(c.alphas["errors"], shape, rng), 0.0, n_r)
    return np.asarray(np.divide(e_r, n_r, out=np.full(shape, np.nan), where=n_r > 0))


def _intervals(rates: np.ndarray, level: float) -> np.ndarray:
    """(2, cells) central ``level`` percentiles over the finite replicates of each cell, as
    ``_bootstrap.percentile_interval`` gives one cell at a time (NaN when none is finite)."""
    tail = (1.0 - level) / 2.0
    out = np.full((2, rates.shape[1]), np.nan)
    finite = np.isfinite(rates)
    full, some = finite.all(axis=0), finite.any(axis=0) & ~finite.all(axis=0)
    out[:, full] = np.quantile(rates[:, full], [tail, 1.0 - tail], axis=0)
    if some.any():  # nanquantile goes column by column: only where a replicate had no rows
        out[:, some] = np.nanquantile(rates[:, some], [tail, 1.0 - tail], axis=0)
    return out


def error_table(c: CohortCube, *, level: float = 0.9, alpha_fdr: float = 0.1,
                min_count: float = 0, draws: int = 400, rng: np.random.Generator | None = None,
                sampling: bool = True) -> pd.DataFrame:
    """Error rate of every released cell with its interval and a false-discovery-controlled
    test that it is worse than the rest.

    Parameters
    ----------
    c : CohortCube
    level : float
        Interval level.
    alpha_fdr : float
        Benjamini-Hochberg false discovery rate over the tested cells.
    min_count : float
        Cells with fewer (noisy) rows are listed but not tested.
    draws, rng : int, numpy.random.Generator
        Bootstrap replicates and generator.
    sampling : bool
        True (default): intervals for the population's error rate in the cell (Poisson
        rows, binomial errors around the released rate, then new DP noise with the
        release's alphas, clipped like the release; percentiles over the replicates).
        False: only the DP noise, for the rate on these very rows.

    Returns
    -------
    pandas.DataFrame
        One row per released cell: one column per feature (its cell label), ``count``,
        ``errors`` (clipped as in the module docstring), ``error_rate``, ``low``, ``high``,
        ``p_value``, ``q_value`` and ``significant`` (NaN, NaN, False for untested cells).
        Sorted weakest first: significant cells first, then by ``low`` (the error rate the
        cell surely exceeds) descending, then by ``error_rate``.
    """
    rng = np.random.default_rng() if rng is None else rng
    released, n, e = _clean(c)
    tested = released & (n >= max(min_count, 1))
    p = _p_values(c, released, n, e, tested)
    q = np.full(p.shape, np.nan)
    has_p = ~np.isnan(p)
    if has_p.any():
        q[has_p] = stats.false_discovery_control(p[has_p], method="bh")
    where = np.nonzero(released)
    rates = _rate_draws(c, n, e, draws, rng, sampling).reshape(draws, -1)
    low, high = _intervals(rates[:, released.ravel()], level)  # C order, as np.nonzero
    table = pd.DataFrame({
        **{f: np.asarray(c.labels[k], dtype=object)[where[k]] for k, f in enumerate(c.features)},
        "count": n[where], "errors": e[where],
        "error_rate": np.divide(e[where], n[where], out=np.full(low.shape, np.nan),
                                where=n[where] > 0),
        "low": low, "high": high, "p_value": p[where], "q_value": q[where],
        "significant": q[where] <= alpha_fdr})
    table = table.sort_values(["significant", "low", "error_rate"], ascending=False,
                              kind="stable", na_position="last")
    return table.reset_index(drop=True)


def heatmap(c: CohortCube, rows: str, cols: str) -> pd.DataFrame:
    """Error rate over two features, the other features pooled.

    Pooling sums the released cells (suppressed ones count as empty); a pooled cell with
    no rows left is NaN.

    Returns
    -------
    pandas.DataFrame
        Index: the labels of ``rows``; columns: the labels of ``cols``.
    """
    if rows == cols or rows not in c.features or cols not in c.features:
        raise ValueError(f"rows and cols must be two different features of {c.features}")
    _, n, e = _clean(c)
    r, k = c.features.index(rows), c.features.index(cols)
    others = tuple(i for i in range(len(c.features)) if i not in (r, k))
    n2, e2 = n.sum(axis=others), e.sum(axis=others)
    if r > k:  # summing keeps axis order; put the row feature first
        n2, e2 = n2.T, e2.T
    rate = np.divide(e2, n2, out=np.full(n2.shape, np.nan), where=n2 > 0)
    return pd.DataFrame(rate, index=pd.Index(c.labels[r], name=rows),
                        columns=pd.Index(c.labels[k], name=cols))
