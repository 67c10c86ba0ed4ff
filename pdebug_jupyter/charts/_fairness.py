"""A ``confusion`` release: per-group rates at a threshold, and ROC curves.

Both are post-processing of the one release: any threshold on a bin edge costs nothing.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from ..metrics import fairness
from ..metrics.releases import LEVEL, ConfusionRelease
from ._spec import INTERVAL_NOTE, SUPPRESSED, diagonal, inline, titled

__all__ = ["RATE_SETS", "rates_chart", "rates_data", "roc_chart", "roc_data", "sweep_chart"]

_RATE_TITLES = {"selection_rate": "selection rate", "tpr": "TPR", "fpr": "FPR",
                "precision": "precision"}
_COMPLETE = "all cells released"
RATE_SETS = {"all rates": ",".join(fairness.RATES),
             "demographic parity": "selection_rate",
             "equalized odds": "tpr,fpr",
             "predictive parity": "precision"}
"""The metric switch: which rates the sweep chart shows (a Vega-Lite param, set in the browser)."""


def _cells_note(release: ConfusionRelease, hidden: int) -> str:
    if not hidden:
        return _COMPLETE
    return f"cells {SUPPRESSED} ({release.threshold}) count as 0"


def rates_data(release: ConfusionRelease, threshold: float | None = None) -> pd.DataFrame:
    """One row per (group, rate) at ``threshold`` (every bin edge when None, with a
    ``threshold`` column): ``value`` as :meth:`ConfusionRelease.at` gives it, ``low`` and
    ``high`` its interval, the group's noisy ``count`` and how many of its cells were
    ``suppressed``."""
    rates, _ = release.sweep
    if threshold is not None:
        edge = release.thresholds[fairness.edge_index(release.cube.edges, threshold)]
        rates = rates[rates["threshold"] == edge].drop(columns="threshold")
    return rates.assign(cells=[_cells_note(release, int(h)) for h in rates["suppressed"]])


def _rate_layers(data: pd.DataFrame, *, where: str | None = None,
                 tooltip: list[Any] | None = None) -> alt.LayerChart:
    """Each group's rates as points with interval whiskers (``rates_data`` rows), optionally
    filtered in the browser by a Vega expression ``where``."""
    groups = list(dict.fromkeys(data["group"]))
    label = " : ".join(f"datum.label == '{k}' ? '{v}'" for k, v in _RATE_TITLES.items())
    x = alt.X("rate:N", sort=list(fairness.RATES), title=None,
              axis=alt.Axis(labelExpr=f"{label} : datum.label", labelAngle=0))
    base = alt.Chart() if where is None else alt.Chart().transform_filter(where)
    base = base.encode(x=x, xOffset=alt.XOffset("group:N", sort=groups),
                       color=alt.Color("group:N", sort=groups, title="group"))
    y_scale = alt.Scale(domain=[0, 1])
    whiskers = base.mark_rule(strokeWidth=1.5).encode(
        y=alt.Y("low:Q", title="rate", scale=y_scale), y2="high:Q")
    points = base.mark_point(size=80, filled=True).encode(
        y=alt.Y("value:Q", title="rate", scale=y_scale),
        shape=alt.Shape("cells:N", title=None, sort="descending",
                        legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=0)),
        tooltip=["group:N", "rate:N", *(tooltip or []), alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f"),
                 alt.Tooltip("count:Q", title="noisy count", format=".0f"),
                 alt.Tooltip("suppressed:Q", title="suppressed cells"), alt.Tooltip("cells:N")])
    return alt.LayerChart(layer=[whiskers, points], data=inline(data))


def rates_chart(release: ConfusionRelease, threshold: float = 0.5) -> alt.LayerChart:
    """Selection rate, TPR, FPR and precision side by side for each group at ``threshold``,
    whiskers their intervals; groups missing suppressed cells get a hollow point."""
    data = rates_data(release, threshold)
    layered = _rate_layers(data)
    gap = release.demographic_parity_difference(threshold)
    low, high = release.interval("demographic_parity_difference", threshold)
    title = (f"Rates at threshold {threshold:g} · demographic parity difference {gap:.3f}, "
             f"{LEVEL:.0%} interval {low:.3f}–{high:.3f}")
    return titled(layered, release, title, [INTERVAL_NOTE])


def sweep_chart(release: ConfusionRelease, threshold: float = 0.5) -> alt.LayerChart:
    """The rates chart at every bin edge at once, filtered in the browser by two Vega-Lite
    params: ``threshold`` (an edge) and ``rates`` (comma-separated rate names, see
    :data:`RATE_SETS`). Moving a slider bound to them redraws without asking anything."""
    data = rates_data(release)
    start = release.thresholds[fairness.edge_index(release.cube.edges, threshold)]
    at = alt.param(name="threshold", value=start)
    shown = alt.param(name="rates", value=RATE_SETS["all rates"])
    layered = _rate_layers(
        data, where="datum.threshold == threshold && indexof(split(rates, ','), datum.rate) >= 0",
        tooltip=[alt.Tooltip("threshold:Q", format="g")]).add_params(at, shown)
    return titled(layered, release, "Rates per group at the chosen threshold", [INTERVAL_NOTE])


def roc_data(release: ConfusionRelease) -> pd.DataFrame:
    """ROC points (``threshold``, ``fpr``, ``tpr``) of each declared group and of all rows."""
    groups = [str(g) for g in release.at(release.thresholds[0]).index]
    return pd.concat([release.roc_curve(g).assign(group=g) for g in groups],
                     ignore_index=True)


def roc_chart(release: ConfusionRelease) -> alt.LayerChart:
    """One ROC curve per group, a point at each bin edge, and the chance diagonal."""
    data = roc_data(release)
    groups = list(dict.fromkeys(data["group"]))
    unit = alt.Scale(domain=[0, 1])
    curves = alt.Chart().mark_line(point=True).encode(
        x=alt.X("fpr:Q", title="false positive rate", scale=unit),
        y=alt.Y("tpr:Q", title="true positive rate", scale=unit),
        color=alt.Color("group:N", sort=groups, title="group"),
        order=alt.Order("threshold:Q", sort="descending"),
        tooltip=["group:N", alt.Tooltip("threshold:Q", format="g"),
                 alt.Tooltip("fpr:Q", format=".3f"), alt.Tooltip("tpr:Q", format=".3f")])
    reference = diagonal(0.0, 1.0, "false positive rate", "true positive rate")
    layered = alt.LayerChart(layer=[reference, curves], data=inline(data))
    hidden = int(np.isnan(release.cube.counts).sum())
    notes = [f"{hidden} {_cells_note(release, hidden)}"] if hidden else []
    return titled(layered, release, "ROC curve by group", notes)
