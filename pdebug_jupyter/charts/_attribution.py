"""An ``attribution`` release: global importance per column with interval whiskers."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from ..metrics.releases import AttributionRelease
from ._spec import INTERVAL_NOTE, inline, status, suppressed_marks, titled

__all__ = ["attribution_chart", "attribution_data"]


def attribution_data(release: AttributionRelease) -> pd.DataFrame:
    """:meth:`AttributionRelease.to_frame` (``group``, ``column``, ``importance``, ``low``,
    ``high``) with ``suppressed`` (the group's count was suppressed) and ``status``."""
    frame = release.to_frame()
    data = frame[["group", "column", "importance", "low", "high"]].copy()
    data["suppressed"] = data["importance"].isna()
    data["status"] = status(release, data["suppressed"])
    return data


def attribution_chart(release: AttributionRelease) -> alt.LayerChart:
    """A bar per column (largest first), grouped and coloured by group when there are
    several; whiskers the interval of the mean |attribution|."""
    data = attribution_data(release)
    order = list(dict.fromkeys(data.sort_values("importance", ascending=False,
                                                kind="stable")["column"]))
    groups = list(dict.fromkeys(data["group"]))
    grouped: dict[str, Any] = {"yOffset": alt.YOffset("group:N", sort=groups)} if len(groups) > 1 else {}
    base = alt.Chart().encode(y=alt.Y("column:N", sort=order, title=None), **grouped)
    released = base.transform_filter("!datum.suppressed")
    title = "mean |attribution|"
    bars = released.mark_bar().encode(
        x=alt.X("importance:Q", title=title),
        tooltip=["column:N", "group:N", alt.Tooltip("importance:Q", format=".4g"),
                 alt.Tooltip("low:Q", format=".4g"), alt.Tooltip("high:Q", format=".4g")])
    if len(groups) > 1:
        bars = bars.encode(color=alt.Color("group:N", sort=groups, title="group"))
    whiskers = released.mark_rule(color="black", strokeWidth=1.5).encode(
        x=alt.X("low:Q", title=title), x2="high:Q")
    hidden = suppressed_marks(base, data, ["column:N", "group:N"], x=alt.datum(0))
    layered = alt.LayerChart(layer=[bars, whiskers, *hidden], data=inline(data)).properties(
        height=alt.Step(22 if len(groups) > 1 else 28))
    return titled(layered, release, "Global importance: mean |attribution| per column",
                  [INTERVAL_NOTE])
