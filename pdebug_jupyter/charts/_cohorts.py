"""A ``cohort_errors`` release: the error rate over two features as a heatmap."""

from __future__ import annotations

import itertools
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from ..metrics.releases import LEVEL, CohortRelease
from ._spec import inline, status, suppressed_marks, titled

__all__ = ["cohort_chart", "cohort_data"]


def _pair(release: CohortRelease, rows: str | None,
          cols: str | None) -> tuple[str, str | None]:
    features = release.cube.features
    rows = rows if rows is not None else features[0]
    if cols is None and len(features) > 1:
        cols = next(f for f in features if f != rows)
    for f in (rows, cols):
        if f is not None and f not in features:
            raise ValueError(f"unknown feature {f!r} (features: {', '.join(features)})")
    if rows == cols:
        raise ValueError("rows and cols must be two different features")
    return rows, cols


def cohort_data(release: CohortRelease, rows: str, cols: str | None) -> pd.DataFrame:
    """One row per (rows, cols) cell, every cell of the declared domain.

    When the release has exactly these features each cell is a released cell: its
    ``count``, ``errors``, ``error_rate``, interval and ``significant`` flag come from the
    error table. With more features the others are pooled (:meth:`CohortRelease.heatmap`)
    and a cell is suppressed only when every pooled cell was.
    """
    cube = release.cube
    chosen = [f for f in (rows, cols) if f is not None]
    axes = [cube.features.index(f) for f in chosen]
    labels = [cube.labels[a] for a in axes]
    others = tuple(i for i in range(len(cube.features)) if i not in axes)
    hidden = np.isnan(cube.count) | np.isnan(cube.errors)
    if others:
        hidden = hidden.all(axis=others)
    if axes != sorted(axes):
        hidden = hidden.T
    cells = pd.DataFrame(list(itertools.product(*labels)), columns=["row", "col"][:len(chosen)])
    cells["suppressed"] = hidden.ravel()
    if others:
        assert cols is not None
        rate = release.heatmap(rows, cols).stack(future_stack=True)
        cells["error_rate"] = rate.to_numpy()
    else:
        table = release.table.rename(columns={rows: "row", **({cols: "col"} if cols else {})})
        keep = ["error_rate", "count", "errors", "low", "high", "q_value", "significant"]
        cells = cells.merge(table[[*cells.columns[:len(chosen)], *keep]], how="left")
        cells["significant"] = cells["significant"].fillna(False).astype(bool)
    cells["status"] = status(release, cells["suppressed"])
    return cells


def cohort_chart(release: CohortRelease, rows: str | None = None,
                 cols: str | None = None) -> alt.LayerChart:
    """Error rate per cell, darker is worse; suppressed cells grey, dashed and crossed;
    cells significantly worse than the rest (false-discovery controlled) outlined."""
    rows, cols = _pair(release, rows, cols)
    data = cohort_data(release, rows, cols)
    cube = release.cube
    position: dict[str, Any] = {"y": alt.Y("row:N", sort=list(cube.labels[cube.features.index(rows)]),
                           title=rows)}
    if cols is not None:
        position["x"] = alt.X("col:N", sort=list(cube.labels[cube.features.index(cols)]),
                              title=cols, axis=alt.Axis(labelAngle=0))
    where = [alt.Tooltip("row:N", title=rows),
             *([alt.Tooltip("col:N", title=cols)] if cols else [])]
    tooltip: list[Any] = [*where, alt.Tooltip("error_rate:Q", format=".3f"),
               alt.Tooltip("status:N", title="cell")]
    if "low" in data:
        tooltip += [alt.Tooltip("count:Q", title="noisy count", format=".0f"),
                    alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f"),
                    alt.Tooltip("q_value:Q", format=".3g"), "significant:N"]
    base = alt.Chart().encode(**position)
    released = base.transform_filter("!datum.suppressed")
    cells = released.mark_rect(stroke="black").encode(
        color=alt.Color("error_rate:Q", title="error rate",
                        scale=alt.Scale(scheme="orangered", domainMin=0)),
        strokeWidth=(alt.condition("datum.significant", alt.value(2.5), alt.value(0))
                     if "significant" in data else alt.value(0)),
        tooltip=tooltip)
    text = released.mark_text(fontSize=11).encode(text=alt.Text("error_rate:Q", format=".1%"))
    hidden = [base.transform_filter("datum.suppressed").mark_rect(
        color="#d9d9d9", opacity=0.6, stroke="#8c8c8c", strokeDash=[3, 3]).encode(
        tooltip=[*where, alt.Tooltip("status:N", title="cell")])
    ] if data["suppressed"].any() else []
    crosses = suppressed_marks(base, data, where)
    layered = alt.LayerChart(layer=[cells, text, *hidden, *crosses], data=inline(data)).properties(
        width=alt.Step(90) if cols else 120, height=alt.Step(34))
    pooled = [f for f in cube.features if f not in (rows, cols)]
    notes = [f"pooled over {', '.join(pooled)}" if pooled else
             f"outlined: significantly weak at false discovery rate 0.1; {LEVEL:.0%} "
             "intervals in the tooltip"]
    title = f"Error rate by {rows}" + (f" and {cols}" if cols else "")
    return titled(layered, release, title, notes)
