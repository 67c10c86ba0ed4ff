"""What every chart shares: inline data, the provenance title, and marks for suppressed cells.

Data is always embedded as ``InlineData`` built here from released cells or metrics, never a
DataFrame: that bypasses Altair's global data transformer, which a user may have switched to
write files and reference them by URL. The charts must render offline in a widget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import altair as alt
import numpy as np
import pandas as pd

from ..client.release import Release
from ..metrics.releases import LEVEL

__all__ = ["INTERVAL_NOTE", "SUPPRESSED", "diagonal", "inline", "records", "status",
           "suppressed_marks", "titled"]

SUPPRESSED = "suppressed: noisy count below the minimum cohort size"
INTERVAL_NOTE = f"whiskers: {LEVEL:.0%} intervals for DP noise and sampling"
SUPPRESSED_SHAPE = "cross"
SUPPRESSED_COLOR = "#8c8c8c"

TopLevel = TypeVar("TopLevel", alt.LayerChart, alt.FacetChart)


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars unwrapped, NaN, NA and infinities as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as plain JSON records (exact floats, no rounding)."""
    return [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def inline(frame: pd.DataFrame) -> alt.InlineData:
    return alt.InlineData(values=records(frame))


def status(release: Release, suppressed: pd.Series | np.ndarray) -> list[str]:
    """Per cell: ``released``, or why it was not (the tooltip and legend text)."""
    reason = f"{SUPPRESSED} ({release.threshold})"
    return [reason if s else "released" for s in np.asarray(suppressed, dtype=bool)]


def suppressed_marks(base: alt.Chart, data: pd.DataFrame, tooltip: Sequence[Any] = (),
                     **position: Any) -> list[alt.Chart]:
    """Suppressed cells as grey crosses at ``position``, the reason in tooltip and legend.

    ``base`` holds the encodings shared with the released marks (e.g. the offset channel
    of grouped charts); ``data`` needs boolean ``suppressed`` and text ``status`` fields;
    ``tooltip`` names the cell. Empty when nothing is suppressed (an empty legend would
    break the layout).
    """
    if not data["suppressed"].any():
        return []
    return [base.transform_filter("datum.suppressed").mark_point(
        filled=True, size=70, opacity=0.8, color=SUPPRESSED_COLOR,
    ).encode(
        shape=alt.Shape("status:N", title=None,
                        scale=alt.Scale(range=[SUPPRESSED_SHAPE]),
                        legend=alt.Legend(orient="bottom", labelLimit=0,
                                          symbolFillColor=SUPPRESSED_COLOR)),
        tooltip=[*tooltip, alt.Tooltip("status:N", title="cell")],
        **position,
    )]


def diagonal(low: float, high: float, x: str, y: str) -> alt.Chart:
    """The line ``y = x`` from ``low`` to ``high`` (a reference, not data)."""
    ends = pd.DataFrame({"reference": [float(low), float(high)]})
    line = alt.Chart(inline(ends)).mark_line(color=SUPPRESSED_COLOR, strokeDash=[4, 4])
    chart: alt.Chart = line.encode(x=alt.X("reference:Q", title=x),
                                   y=alt.Y("reference:Q", title=y))
    return chart


def titled(chart: TopLevel, release: Release, title: str,
           notes: Sequence[str] = ()) -> TopLevel:
    """Title the chart and say where it comes from: epsilon spent, release id, synthetic.

    The same facts go into ``usermeta`` so a widget can read them without parsing text.
    """
    synthetic = bool(release.provenance.get("synthetic", False))
    origin = f"ε = {release.epsilon:g} spent · release {release.release_id}"
    if synthetic:
        origin += " · synthetic data"
    meta = {"release_id": release.release_id, "kind": release.kind,
            "dataset": release.dataset, "epsilon": release.epsilon, "synthetic": synthetic}
    return chart.properties(
        title=alt.Title(title, subtitle=[origin, *notes], anchor="start"),
        usermeta={"pdebug": meta})
