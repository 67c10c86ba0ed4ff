"""The four explorers: what each picks, what it asks the service, what it draws.

Each is a thin map from pickers to one query kind and from the release to trait values;
the base class does the asking, the errors and the budget. Tables carry rounded metric
values (they are read by people), charts carry the release's own numbers.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import traitlets as t

from ..client import Release
from ..metrics.releases import (
    CalibrationRelease,
    CohortRelease,
    ConfusionRelease,
    DriftRelease,
)
from ._base import Control, Explorer, column, columns_of, select

GROUP_KINDS = ("protected", "categorical")
FEATURE_KINDS = ("protected", "categorical", "numeric")
DRIFT_KINDS = ("numeric", "score", "categorical", "protected", "label")
BINS = [5, 10, 20]


def table(frame: pd.DataFrame, digits: int = 4) -> dict[str, Any]:
    """A small result table for the widget: column names and rows of JSON values."""
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    rows = []
    for record in frame.itertuples(index=False):
        row = []
        for value in record:
            if isinstance(value, float):
                value = None if pd.isna(value) else round(value, digits)
            elif hasattr(value, "item"):
                value = value.item()
            row.append(value)
        rows.append(row)
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


def spec(chart: Any) -> dict[str, Any]:
    out: dict[str, Any] = chart.to_dict()
    return out


def _name(dim: Any) -> str:
    return dim if isinstance(dim, str) else str(dim["column"])


def _bins(dim: Any) -> int | None:
    return None if isinstance(dim, str) else len(dim["bins"]) - 1


def _score_query(params: dict[str, Any]) -> dict[str, Any]:
    """Calibration and confusion take the same picks: score, label, by and bins."""
    return {k: params.get(k) for k in ("score", "label", "by", "bins")}


def _first(options: list[str]) -> str | None:
    return options[0] if options else None


class CalibrationExplorer(Explorer):
    """Reliability diagram per group with intervals; ECE, MCE and Brier per group."""

    view = "calibration"
    kind = "calibration"

    def _controls(self, schema: dict[str, Any]) -> list[Control]:
        scores, labels = columns_of(schema, "score"), columns_of(schema, "label")
        groups = columns_of(schema, *GROUP_KINDS)
        return [select("score", "score", scores, _first(scores)),
                select("label", "label", labels, _first(labels)),
                select("by", "by group", [None, *groups], _first(groups)),
                select("bins", "bins", BINS, 10)]

    def _query(self, params: dict[str, Any]) -> dict[str, Any]:
        return _score_query(params)

    @classmethod
    def _params_of(cls, release: Release) -> dict[str, Any]:
        dims = release.params["dims"]
        return {"score": _name(dims[0]), "label": release.params["label"],
                "by": _name(dims[1]) if len(dims) > 1 else None, "bins": _bins(dims[0])}

    def _views(self, release: Release) -> dict[str, Any]:
        assert isinstance(release, CalibrationRelease)
        return {"spec": spec(release.chart()), "table": table(release.by_group())}


class FairnessExplorer(Explorer):
    """Rates per group at a threshold with intervals, and the fairness gaps.

    The threshold slider and the metric switch are post-processing of one ``confusion``
    release, done in the browser: no request, no budget. ``threshold`` and ``rates`` sync
    back, so ``explorer.result.at(explorer.threshold)`` is the frame being looked at.
    """

    view = "fairness"
    kind = "confusion"

    thresholds = t.List(t.Float()).tag(sync=True)
    threshold = t.Float(0.5).tag(sync=True)
    rate_sets = t.Dict().tag(sync=True)
    rates = t.Unicode().tag(sync=True)
    gaps = t.List(t.Dict()).tag(sync=True)

    def _controls(self, schema: dict[str, Any]) -> list[Control]:
        scores, labels = columns_of(schema, "score"), columns_of(schema, "label")
        groups = columns_of(schema, *GROUP_KINDS)
        protected = columns_of(schema, "protected")
        return [select("score", "score", scores, _first(scores)),
                select("label", "label", labels, _first(labels)),
                select("by", "by group", groups, _first(protected) or _first(groups)),
                select("bins", "bins", BINS, 10)]

    def _query(self, params: dict[str, Any]) -> dict[str, Any]:
        return _score_query(params)

    @classmethod
    def _params_of(cls, release: Release) -> dict[str, Any]:
        dims = release.params["dims"]
        return {"score": _name(dims[0]), "label": _name(dims[1]),
                "by": _name(dims[2]) if len(dims) > 2 else None, "bins": _bins(dims[0])}

    def _views(self, release: Release) -> dict[str, Any]:
        from ..charts._fairness import RATE_SETS, sweep_chart

        assert isinstance(release, ConfusionRelease)
        chart = sweep_chart(release, self.threshold)
        start = chart.to_dict()["params"][0]["value"]
        _, gaps = release.sweep
        return {"spec": spec(chart), "thresholds": list(release.thresholds),
                "threshold": float(start), "rate_sets": dict(RATE_SETS),
                "rates": self.rates or RATE_SETS["all rates"],
                "gaps": [{k: (None if isinstance(v, float) and pd.isna(v) else v)
                          for k, v in row.items()} for row in gaps.to_dict("records")],
                "table": {}}


class DriftExplorer(Explorer):
    """Per-column drift between two windows: PSI, JS, Hellinger, Wasserstein, KS."""

    view = "drift"
    kind = "drift"

    def _controls(self, schema: dict[str, Any]) -> list[Control]:
        cols = columns_of(schema, *DRIFT_KINDS)
        splits = columns_of(schema, "split")
        windows = column(schema, splits[0])["categories"] if splits else []
        self._window = splits[0] if splits else None  # windows are its categories
        controls = [select("columns", "columns", cols, cols, multiple=True)]
        if splits:
            controls += [select("reference", f"reference {splits[0]}", windows, _first(windows)),
                         select("current", f"current {splits[0]}", windows,
                                windows[1] if len(windows) > 1 else None)]
        return [*controls, select("bins", "bins", [None, *BINS], None)]

    def _query(self, params: dict[str, Any]) -> dict[str, Any]:
        window = self._window
        return {"columns": params.get("columns") or None,
                "reference": {window: params.get("reference")} if window else None,
                "current": {window: params.get("current")} if window else None,
                "bins": params.get("bins")}

    @classmethod
    def _params_of(cls, release: Release) -> dict[str, Any]:
        p = release.params
        first = next(iter(p["reference"].values()), [None])
        second = next(iter(p["current"].values()), [None])
        return {"columns": [_name(c) for c in p["columns"]], "reference": first[0],
                "current": second[0]}

    def _views(self, release: Release) -> dict[str, Any]:
        columns = ["column", "method", "statistic", "low", "high", "threshold", "drifted", "psi",
                   "js", "hellinger", "wasserstein", "ks"]
        assert isinstance(release, DriftRelease)
        frame = release.table
        return {"spec": spec(release.chart()), "table": table(frame[columns])}


class CohortExplorer(Explorer):
    """Error rates over combinations of features; the weakest cohorts with FDR control."""

    view = "cohorts"
    kind = "cohort_errors"

    def _controls(self, schema: dict[str, Any]) -> list[Control]:
        features = columns_of(schema, *FEATURE_KINDS)
        return [select("features", "features (1-3)", features, features[:2], multiple=True),
                select("threshold", "decision threshold", [0.3, 0.4, 0.5, 0.6, 0.7], 0.5)]

    def _query(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"features": list(params.get("features") or []),
                "threshold": params.get("threshold")}

    @classmethod
    def _params_of(cls, release: Release) -> dict[str, Any]:
        return {"features": [_name(d) for d in release.params["dims"]],
                "threshold": release.params.get("threshold")}

    def _views(self, release: Release) -> dict[str, Any]:
        assert isinstance(release, CohortRelease)
        return {"spec": spec(release.chart()), "table": table(release.weakest(5))}
