"""Global feature importance from released sums of absolute per-row attributions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._bootstrap import geometric_noise, percentile_interval


@dataclass(frozen=True)
class AttributionCube:
    """Released per-group totals: the row count and, per column, the sum of |attribution|.

    ``sums`` are in attribution units (divided by each column's fixed-point ``scales``);
    ``alphas`` give each measure's noise on its integer grid; ``bounds`` are the largest
    magnitudes the policy allows, which also bound the sampling variance.
    """

    columns: tuple[str, ...]
    groups: tuple[str, ...]
    count: np.ndarray  # (g,)
    sums: Mapping[str, np.ndarray]  # column -> (g,)
    scales: Mapping[str, float]
    bounds: Mapping[str, float]
    alphas: Mapping[str, float]  # "count" and each column


def importance(cube: AttributionCube, *, level: float = 0.9, draws: int = 400,
               rng: np.random.Generator | None = None) -> pd.DataFrame:
    """Mean absolute attribution per column and group, with intervals, largest first.

    The interval is a parametric bootstrap: the released count and sum are re-drawn with
    sampling error and fresh DP noise of the release's distribution. The within-group
    variance of |attribution| is unknown (it was not released); it is bounded by
    (B - m) * m for values in [0, B] with mean m (Bhatia-Davis), so the sampling part of the
    interval is conservative.
    """
    rng = rng or np.random.default_rng()
    rows = []
    for g, group in enumerate(cube.groups):
        n = float(cube.count[g])
        for col in cube.columns:
            total = float(cube.sums[col][g])
            if not (np.isfinite(n) and np.isfinite(total)) or n <= 0:
                rows.append({"group": group, "column": col, "importance": np.nan,
                             "low": np.nan, "high": np.nan})
                continue
            mean = min(max(total / n, 0.0), cube.bounds[col])
            var = max((cube.bounds[col] - mean) * mean, 0.0)
            n_star = np.maximum(rng.poisson(n, draws), 1).astype(float)
            s_star = rng.normal(n_star * mean, np.sqrt(n_star * var))
            n_star += geometric_noise(cube.alphas["count"], draws, rng)
            s_star += geometric_noise(cube.alphas[col], draws, rng) / cube.scales[col]
            with np.errstate(divide="ignore", invalid="ignore"):
                boot = np.where(n_star > 0, s_star / n_star, np.nan)
            lo, hi = percentile_interval(boot, level)
            rows.append({"group": group, "column": col, "importance": total / n,
                         "low": lo, "high": hi})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["group", "importance"], ascending=[True, False],
                             ignore_index=True)
