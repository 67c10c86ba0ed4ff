"""Empirical DP audit of the release mechanism on neighbouring datasets.

The exact cubes of one query on two datasets that differ by one privacy unit go through the
service's own mechanism (:func:`~pdebug_jupyter.privacy.plan_noise` and
:func:`~pdebug_jupyter.privacy.release_cube`) many times each. Half of the samples choose a
distinguishing event (a threshold on the log-likelihood ratio or on one touched cell); the
other half count how often the event happens under each dataset, and Clopper-Pearson limits
on those rates bound epsilon from below. A bound above the claimed epsilon is a leak.

Only the cells the unit touches are sampled: every other cell has the same true value in
both datasets and independent noise, so it carries no evidence either way (:func:`touched`
checks that the rest are equal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..privacy import Noise, NoisyCube, plan_noise, release_cube
from ..query import Cube, Dimension, Query
from ._stats import epsilon_lower_bound

Mechanism = Callable[[np.ndarray, Cube, tuple[Noise, ...], int], NoisyCube]


@dataclass(frozen=True)
class AuditResult:
    kind: str
    claimed: float  # the query's epsilon
    bound: float  # epsilon exceeded with confidence 1 - alpha
    test: str  # the chosen event
    counts: tuple[int, int, int, int]  # false positives, negatives, false negatives, positives


def touched(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per cube, the flat indices of cells whose measures differ between the datasets."""
    return [np.flatnonzero((x != y).reshape(-1, x.shape[-1]).any(axis=1))
            for x, y in zip(a, b, strict=True)]


def _cells_cube(cube: Cube, k: int) -> Cube:
    # a one-axis stand-in with k cells: release_cube reads the measures and the shape only
    return Cube(cube.name, (Dimension("cell", categories=tuple(map(str, range(k - 1)))),),
                cube.measures)


def sample(query: Query, true: Sequence[np.ndarray], cells: Sequence[np.ndarray],
           max_rows_per_unit: int, min_cohort: int, n: int,
           mechanism: Mechanism = release_cube) -> np.ndarray:
    """``n`` releases of the touched cells: shape (n, coordinates), NaN where suppressed."""
    plan = plan_noise(query, max_rows_per_unit)
    out = []
    for _ in range(n):
        row = []
        for cube, values, idx, noise in zip(query.cubes, true, cells, plan, strict=True):
            if not len(idx):
                continue
            flat = values.reshape(-1, values.shape[-1])[idx]
            noisy = mechanism(flat, _cells_cube(cube, len(idx)), noise, min_cohort)
            vals = noisy.values.astype(float)
            vals[noisy.suppressed] = np.nan
            row.append(vals.ravel())
        out.append(np.concatenate(row))
    return np.asarray(out)


def statistics(weights: np.ndarray, c0: np.ndarray, c1: np.ndarray, obs: np.ndarray
               ) -> list[tuple[str, np.ndarray]]:
    """Candidate test statistics: the weighted log-likelihood ratio, and each coordinate."""
    llr = np.nansum(weights * (np.abs(obs - c0) - np.abs(obs - c1)), axis=1)
    out = [("log-likelihood ratio", llr)]
    for j in range(obs.shape[1]):
        out.append((f"coordinate {j}", np.where(np.isnan(obs[:, j]), -np.inf, obs[:, j])))
    return out


def _rates(s0: np.ndarray, s1: np.ndarray, t: float, above: bool) -> tuple[int, int]:
    """(false positives among dataset-0 samples, false negatives among dataset-1 samples)."""
    if above:
        return int((s0 > t).sum()), int((s1 <= t).sum())
    return int((s0 < t).sum()), int((s1 >= t).sum())


def choose(stats0: list[tuple[str, np.ndarray]], stats1: list[tuple[str, np.ndarray]]
           ) -> tuple[int, float, bool]:
    """The (statistic, threshold, direction) with the largest epsilon lower bound (at 95%)
    on the held-out samples: a point estimate would favour far tails, where it is noise."""
    best, pick = -1.0, (0, 0.0, True)
    for i, ((_, s0), (_, s1)) in enumerate(zip(stats0, stats1, strict=True)):
        both = np.concatenate([s0, s1])
        finite = both[np.isfinite(both)]
        if not len(finite):
            continue
        for t in np.unique(np.quantile(finite, np.linspace(0.02, 0.98, 49))):
            for above in (True, False):
                fp, fn = _rates(s0, s1, float(t), above)
                est = epsilon_lower_bound(fp, len(s0), fn, len(s1), 0.05)
                if est > best:
                    best, pick = est, (i, float(t), above)
    return pick


def measures(query: Query, true0: Sequence[np.ndarray], true1: Sequence[np.ndarray]
             ) -> list[tuple[int, int]]:
    """The (cube, measure) pairs whose value differs between the datasets in some cell."""
    return [(i, j) for i, (x, y) in enumerate(zip(true0, true1, strict=True))
            for j in range(x.shape[-1]) if (x[..., j] != y[..., j]).any()]


def audit(query: Query, true0: Sequence[np.ndarray], true1: Sequence[np.ndarray],
          max_rows_per_unit: int, min_cohort: int, *, samples: int = 2000,
          alpha: float = 1e-3, mechanism: Mechanism = release_cube,
          measure: tuple[int, int] | None = None) -> AuditResult:
    """Lower-bound the epsilon of ``query``'s release on two neighbouring datasets.

    With ``measure`` (cube, measure) only that measure's cells are observed and the claim is
    its own share of the epsilon: a query whose epsilon is split over five measures spends
    a fifth on each, so the whole-query audit is weak, but each share can be checked
    against what it claims (a sum noised for the wrong sensitivity shows up here).
    """
    cells = touched(true0, true1)
    if not any(len(c) for c in cells):
        raise ValueError("the datasets give this query the same cubes: nothing to audit")

    def coords(true: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([t.reshape(-1, t.shape[-1])[c].ravel()
                               for t, c in zip(true, cells, strict=True) if len(c)])

    c0, c1 = coords(true0), coords(true1)
    plan = plan_noise(query, max_rows_per_unit)
    weights = np.concatenate([np.tile([n.epsilon / n.sensitivity for n in noise], len(c))
                              for noise, c in zip(plan, cells, strict=True) if len(c)])
    draw = [sample(query, t, cells, max_rows_per_unit, min_cohort, samples, mechanism)
            for t in (true0, true1)]
    claimed = query.epsilon
    if measure is not None:  # keep the columns of one measure: (cube, measure) per column
        which = np.concatenate([np.tile(np.array([[i, j] for j in range(len(noise))]),
                                        (len(c), 1))
                                for i, (noise, c) in enumerate(zip(plan, cells, strict=True))
                                if len(c)])
        keep = (which == measure).all(axis=1)
        if not keep.any():
            raise ValueError(f"measure {measure} is not among the touched cells")
        c0, c1, weights = c0[keep], c1[keep], weights[keep]
        draw = [d[:, keep] for d in draw]
        claimed = plan[measure[0]][measure[1]].epsilon
    half = samples // 2
    held = [statistics(weights, c0, c1, d[:half]) for d in draw]
    i, t, above = choose(held[0], held[1])
    name = held[0][i][0]
    fresh = [statistics(weights, c0, c1, d[half:])[i][1] for d in draw]
    fp, fn = _rates(fresh[0], fresh[1], t, above)
    n0, n1 = len(fresh[0]), len(fresh[1])
    bound = epsilon_lower_bound(fp, n0, fn, n1, alpha)
    return AuditResult(query.kind, claimed, bound,
                       f"{name} {'>' if above else '<'} {t:g}", (fp, n0, fn, n1))
