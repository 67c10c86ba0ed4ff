"""A ``performance_estimate`` release: expected metrics at a threshold, with intervals."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ..metrics.releases import PerformanceRelease
from ._spec import INTERVAL_NOTE, SUPPRESSED, inline, titled

__all__ = ["performance_chart", "performance_data"]


def performance_data(release: PerformanceRelease, threshold: float) -> pd.DataFrame:
    """:meth:`PerformanceRelease.at` as rows: ``metric``, ``value``, ``low``, ``high``."""
    return release.at(threshold).reset_index()[["metric", "value", "low", "high"]]


def performance_chart(release: PerformanceRelease, threshold: float = 0.5) -> alt.LayerChart:
    """A point per expected metric, whiskers its interval, on a common [0, 1] axis."""
    data = performance_data(release, threshold)
    unit = alt.Scale(domain=[0, 1])
    base = alt.Chart().encode(x=alt.X("metric:N", sort=list(data["metric"]), title=None,
                                      axis=alt.Axis(labelAngle=0)))
    whiskers = base.mark_rule(strokeWidth=1.5).encode(
        y=alt.Y("low:Q", title="expected value", scale=unit), y2="high:Q")
    points = base.mark_point(filled=True, size=90).encode(
        y=alt.Y("value:Q", title="expected value", scale=unit),
        tooltip=["metric:N", alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")])
    layered = alt.LayerChart(layer=[whiskers, points], data=inline(data)).properties(
        width=alt.Step(80))
    count = release.histogram.count
    hidden = int(np.isnan(count).sum())
    notes = [INTERVAL_NOTE, "estimated without labels; assumes a calibrated score (CBPE)"]
    if hidden:
        notes.append(f"{hidden} of {count.size} score bins {SUPPRESSED} "
                     f"({release.threshold}); counted as empty")
    return titled(layered, release, f"Expected performance at threshold {threshold:g}", notes)
