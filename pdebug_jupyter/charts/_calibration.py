"""A ``calibration`` release: the reliability diagram of every group, ECE in the title."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from ..metrics.releases import LEVEL, THRESHOLDS, CalibrationRelease
from ._spec import INTERVAL_NOTE, diagonal, inline, status, suppressed_marks, titled

__all__ = ["calibration_chart", "calibration_data"]

_FIELDS = ("group", "lower", "upper", "count", "mean_score", "positive_rate", "rate_low",
           "rate_high", "suppressed", "partial")


def calibration_data(release: CalibrationRelease) -> pd.DataFrame:
    """The stacked reliability diagrams (:meth:`CalibrationRelease.to_frame`), with the
    bin's midpoint (where a suppressed bin is marked) and ``status``."""
    frame = release.to_frame()
    data = frame[list(_FIELDS)].copy()
    data["mid"] = (frame["lower"] + frame["upper"]) / 2
    data["status"] = status(release, frame["suppressed"])
    return data


def calibration_chart(release: CalibrationRelease) -> alt.LayerChart:
    """Observed positive rate against mean score per bin and group, point size by the bin's
    noisy count, whiskers the positive rate's interval, and the diagonal of perfect
    calibration."""
    data = calibration_data(release)
    edges = release.cube.edges
    groups = list(release.cube.groups)
    score = alt.Scale(domain=[float(edges[0]), float(edges[-1])])
    x = alt.X("mean_score:Q", title="mean score", scale=score)
    y_scale = alt.Scale(domain=[0, 1])
    color = alt.Color("group:N", sort=groups, title="group")
    released = alt.Chart().transform_filter("!datum.suppressed")
    where: list[Any] = ["group:N", alt.Tooltip("lower:Q", title="bin from"),
                        alt.Tooltip("upper:Q", title="to")]
    tooltip = [
        *where, alt.Tooltip("count:Q", title="noisy count", format=".0f"),
        alt.Tooltip("mean_score:Q", format=".3f"), alt.Tooltip("positive_rate:Q", format=".3f"),
        alt.Tooltip("rate_low:Q", format=".3f"), alt.Tooltip("rate_high:Q", format=".3f")]
    lines = released.mark_line(opacity=0.5).encode(
        x=x, y=alt.Y("positive_rate:Q", scale=y_scale), color=color,
        order=alt.Order("mean_score:Q"))
    whiskers = released.mark_rule(strokeWidth=1.5).encode(
        x=x, y=alt.Y("rate_low:Q", title="observed positive rate", scale=y_scale),
        y2="rate_high:Q", color=color)
    points = released.mark_circle(opacity=0.9).encode(
        x=x, y=alt.Y("positive_rate:Q", title="observed positive rate", scale=y_scale),
        color=color, size=alt.Size("count:Q", title="noisy count"), tooltip=tooltip)
    hidden = suppressed_marks(alt.Chart(), data, where, x=alt.X("mid:Q", scale=score),
                              y=alt.datum(0))
    reference = diagonal(edges[0], edges[-1], "mean score", "observed positive rate")
    layered = alt.LayerChart(layer=[reference, lines, whiskers, points, *hidden],
                             data=inline(data))
    low, high = release.ece_ci
    flag = " (significant)" if low > THRESHOLDS["ece"] else ""
    title = (f"Reliability diagram · ECE {release.ece:.3f}, {LEVEL:.0%} interval "
             f"{low:.3f}–{high:.3f}{flag}")
    return titled(layered, release, title, [f"{INTERVAL_NOTE} (of the positive rate)"])
