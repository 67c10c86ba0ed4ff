"""A ``drift`` release: per column, the statistic that decides drift against its threshold."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ..metrics import drift
from ..metrics.releases import DriftRelease
from ._spec import INTERVAL_NOTE, inline, titled

__all__ = ["drift_chart", "drift_data"]

_NAMES = {"wasserstein_norm": "normed Wasserstein", "js": "Jensen-Shannon (base 2)",
          "psi": "PSI", "hellinger": "Hellinger", "ks_pvalue": "KS p-value",
          "chi2_pvalue": "chi-square p-value"}
_DRIFTED, _STABLE = "drifted", "not drifted"


def _rule(method: str, threshold: float) -> str:
    name = _NAMES.get(method, method)
    if method in drift.PVALUE_METHODS:
        return f"{name}: drifted when the interval's upper end < {threshold:.3g}"
    return f"{name}: drifted when the interval's lower end ≥ {threshold:.3g}"


def drift_data(release: DriftRelease) -> pd.DataFrame:
    """One row per column of :meth:`DriftRelease.to_frame`: ``column``, ``method``,
    ``statistic``, ``low``, ``high``, ``threshold``, ``drifted``, the ``rule`` in words and
    the row's ``label``."""
    frame = release.to_frame()
    data = frame[["column", "method", "statistic", "low", "high", "threshold",
                  "drifted"]].copy()
    data["drifted"] = data["drifted"].astype(bool)
    data["rule"] = [_rule(m, t) for m, t in zip(frame["method"], frame["threshold"],
                                                 strict=True)]
    data["label"] = [f"{c} · {_NAMES.get(m, m)}" for c, m in zip(frame["column"],
                                                                  frame["method"], strict=True)]
    data["verdict"] = [_DRIFTED if d else _STABLE for d in data["drifted"]]
    return data


def drift_chart(release: DriftRelease) -> alt.FacetChart:
    """A row per column, each on its own scale (the statistics differ): the statistic as a
    point, its interval as a whisker and the threshold as a dashed rule; drifted columns in
    red."""
    data = drift_data(release)
    verdict = alt.Color("verdict:N", title=None, legend=alt.Legend(orient="bottom"),
                        scale=alt.Scale(domain=[_DRIFTED, _STABLE],
                                        range=["#d62728", "#7f7f7f"]))
    whisker = alt.Chart().mark_rule(strokeWidth=2).encode(
        x=alt.X("low:Q", title=None), x2="high:Q", color=verdict)
    point = alt.Chart().mark_point(filled=True, size=90).encode(
        x=alt.X("statistic:Q", title=None), color=verdict,
        tooltip=["column:N", "method:N", alt.Tooltip("statistic:Q", format=".4g"),
                 alt.Tooltip("low:Q", format=".4g"), alt.Tooltip("high:Q", format=".4g"),
                 alt.Tooltip("threshold:Q", format=".4g"), "rule:N", "verdict:N"])
    limit = alt.Chart().mark_rule(color="black", strokeDash=[4, 3]).encode(
        x=alt.X("threshold:Q", title=None), tooltip=["rule:N"])
    layered = alt.LayerChart(layer=[whisker, limit, point], data=inline(data)).properties(
        width=360, height=28)
    faceted: alt.FacetChart = layered.facet(row=alt.Row(
        "label:N", sort=list(data["label"]), title=None,
        header=alt.Header(labelAngle=0, labelAlign="left", labelOrient="top"))
    ).resolve_scale(x="independent")
    share = release.drifted_share
    title = f"Drift per column · drifted share {share:.0%} ({int(data['drifted'].sum())} " \
            f"of {len(data)})"
    return titled(faceted, release, title,
                  [INTERVAL_NOTE, "dashed: the threshold of each column's deciding statistic"])
