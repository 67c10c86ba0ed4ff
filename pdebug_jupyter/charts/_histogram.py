"""A ``histogram`` release: noisy counts as bars with the 95% interval of the DP noise."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from ..client.release import Release
from ._spec import inline, status, suppressed_marks, titled

__all__ = ["histogram_chart", "histogram_data"]


def histogram_data(release: Release) -> pd.DataFrame:
    """One row per released cell: ``cell`` (first dimension), ``group`` (the others joined
    with `` / ``, or absent), ``count``, ``low`` and ``high`` (count -/+ the noise's 95%
    half-width), ``suppressed`` and ``status``."""
    spec = release.part()
    frame = release.frame()
    measure = spec["measures"][0]
    dims = [d["column"] for d in spec["dims"]]
    data = pd.DataFrame({"cell": frame[dims[0]].astype(str)})
    if len(dims) > 1:
        data["group"] = frame[dims[1:]].astype(str).agg(" / ".join, axis=1)
    half = frame[f"{measure}_ci95"]
    data["count"] = frame[measure]
    data["low"] = frame[measure] - half
    data["high"] = frame[measure] + half
    data["suppressed"] = frame["suppressed"]
    data["status"] = status(release, frame["suppressed"])
    return data


def histogram_chart(release: Release) -> alt.LayerChart:
    """Bars per cell of the first dimension, coloured and grouped by the others."""
    spec = release.part()
    dims = spec["dims"]
    data = histogram_data(release)
    x = alt.X("cell:N", sort=list(dims[0]["labels"]), title=dims[0]["column"])
    y_title = f"noisy {spec['measures'][0]}"
    grouped: dict[str, Any] = {}
    tooltip = [alt.Tooltip("cell:N", title=dims[0]["column"])]
    order = list(dict.fromkeys(data.get("group", [])))  # release order: the declared domain
    group_title = " / ".join(d["column"] for d in dims[1:])
    if order:
        grouped["xOffset"] = alt.XOffset("group:N", sort=order)
        tooltip.append(alt.Tooltip("group:N", title=group_title))
    base = alt.Chart().encode(x=x, **grouped)
    released = base.transform_filter("!datum.suppressed")
    bars = released.mark_bar().encode(
        y=alt.Y("count:Q", title=y_title),
        tooltip=[*tooltip, alt.Tooltip("count:Q", title=y_title),
                 alt.Tooltip("low:Q", title="95% noise low"),
                 alt.Tooltip("high:Q", title="95% noise high")])
    if order:
        bars = bars.encode(color=alt.Color("group:N", sort=order, title=group_title))
    whiskers = released.mark_rule(color="black", strokeWidth=1.5).encode(
        y=alt.Y("low:Q", title=y_title), y2="high:Q")
    hidden = suppressed_marks(base, data, tooltip, y=alt.datum(0))
    layered = alt.LayerChart(layer=[bars, whiskers, *hidden], data=inline(data))
    if order:  # with an offset the step is one bar's: keep many bars within ~900 px
        bars_total = len(dims[0]["labels"]) * len(order)
        layered = layered.properties(width=alt.Step(max(3, min(20, 900 // bars_total))))
    names = [d["column"] for d in dims]
    joined = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    title = f"{release.measures[0].capitalize()} by {joined}"
    return titled(layered, release, title,
                  ["whiskers: 95% interval of the DP noise (sampling not included)"])
