"""Typed releases: each analysis kind with its metrics as attributes, computed for free.

Every view here is post-processing of one release: moving a threshold, switching metric or
asking for another group sends nothing to the service. Intervals come from a parametric
bootstrap and are computed once per release object, so repeated reads agree.
"""

from __future__ import annotations

import itertools
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from ..client.release import Release
from . import calibration as cal
from . import cohorts, drift, fairness, performance
from .attribution import AttributionCube, importance

LEVEL = 0.9
BOOTSTRAP_SEED = 20_241_204
#: A metric is ``significant`` when its interval's lower end is above these.
THRESHOLDS = {"ece": 0.02, "mce": 0.1, "brier": 1.0, "demographic_parity_difference": 0.02,
              "equalized_odds_difference": 0.05}


def _rng() -> np.random.Generator:
    """Bootstrap draws for intervals (post-processing, never a release): a fixed seed so the
    same release shows the same interval every time it is read or re-rendered."""
    return np.random.default_rng(BOOTSTRAP_SEED)


def _alphas(release: Release, part: str | None = None) -> dict[str, float]:
    return {n["measure"]: float(n["alpha"]) for n in release.part(part)["noise"]}


def _edges(dim: dict[str, Any]) -> np.ndarray:
    return np.asarray(dim["bins"], dtype=float)


def _flatten_groups(array: np.ndarray, dims: list[dict[str, Any]], lead: int
                    ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Collapse the group axes after the first ``lead`` axes into one; labels are joined."""
    groups = dims[lead:]
    if not groups:
        return array[..., np.newaxis], ("all",)
    labels = tuple(" / ".join(p) for p in itertools.product(*(d["labels"] for d in groups)))
    return array.reshape(array.shape[:lead] + (len(labels),)), labels


@Release.register("calibration")
class CalibrationRelease(Release):
    """Reliability diagram, ECE, MCE and Brier score, pooled and per group."""

    @cached_property
    def cube(self) -> cal.CalibrationCube:
        part = self.part()
        arrays = {m: a[:-1] for m, a in self.arrays().items()}  # drop the "other" score bin
        scale = float(self.params["scale"])
        flat = {m: _flatten_groups(a, part["dims"], 1) for m, a in arrays.items()}
        groups = flat["count"][1]
        return cal.CalibrationCube(
            edges=_edges(part["dims"][0]), groups=groups, count=flat["count"][0],
            positives=flat["positives"][0], score_sum=flat["score_sum"][0] / scale,
            score_pos_sum=flat["score_pos_sum"][0] / scale,
            score_sq_sum=flat["score_sq_sum"][0] / scale, alphas=_alphas(self), scale=scale)

    @cached_property
    def _intervals(self) -> dict[tuple[str, str | None], tuple[float, float]]:
        return {}

    def _ci(self, name: str, group: str | None) -> tuple[float, float]:
        return self._cis([(name, group)])[0]

    def _cis(self, keys: list[tuple[str, str | None]]) -> list[tuple[float, float]]:
        # Every interval uses the same fixed-seed draws, so drawing once for all the missing
        # ones gives what drawing for each would.
        missing = [k for k in keys if k not in self._intervals]
        if missing:
            found = cal.calibration_intervals(
                self.cube, [(_METRICS[name], group) for name, group in missing], level=LEVEL)
            self._intervals.update(zip(missing, found, strict=True))
        return [self._intervals[k] for k in keys]

    ece = property(lambda self: cal.expected_calibration_error(self.cube))
    mce = property(lambda self: cal.maximum_calibration_error(self.cube))
    brier = property(lambda self: cal.brier_score(self.cube))
    ece_ci = property(lambda self: self._ci("ece", None))
    mce_ci = property(lambda self: self._ci("mce", None))
    brier_ci = property(lambda self: self._ci("brier", None))

    def reliability(self, group: str | None = None) -> pd.DataFrame:
        return cal.reliability_diagram(self.cube, group, level=LEVEL)

    def by_group(self) -> pd.DataFrame:
        """ECE, MCE and Brier score with intervals for each group."""
        rows = []
        self._cis([(name, g) for g in self.cube.groups for name in _METRICS])
        for g in self.cube.groups:
            column = self.cube.count[:, self.cube.groups.index(g)]
            row: dict[str, Any] = {"group": g, "count": float(np.nansum(column))}
            for name, fn in _METRICS.items():
                row[name] = fn(self.cube, g)
                row[f"{name}_low"], row[f"{name}_high"] = self._ci(name, g)
            row["significant"] = row["ece_low"] > THRESHOLDS["ece"]
            rows.append(row)
        return pd.DataFrame(rows).set_index("group")

    def to_frame(self) -> pd.DataFrame:
        """The reliability diagram of every group, stacked."""
        return pd.concat([self.reliability(g).assign(group=g) for g in self.cube.groups],
                         ignore_index=True)


_METRICS = {"ece": cal.expected_calibration_error, "mce": cal.maximum_calibration_error,
            "brier": cal.brier_score}


@Release.register("confusion")
class ConfusionRelease(Release):
    """Confusion matrices, rates and fairness gaps at any threshold on a bin edge."""

    @cached_property
    def cube(self) -> fairness.ConfusionCube:
        part = self.part()
        counts = self.arrays()["count"][:-1, :2]  # drop the "other" score bin and label
        flat, groups = _flatten_groups(counts, part["dims"], 2)
        return fairness.ConfusionCube(edges=_edges(part["dims"][0]), groups=groups,
                                      counts=flat, alpha=_alphas(self)["count"])

    @property
    def thresholds(self) -> list[float]:
        return [float(e) for e in self.cube.edges]

    def at(self, threshold: float) -> pd.DataFrame:
        return fairness.at_threshold(self.cube, threshold)

    def demographic_parity_difference(self, threshold: float) -> float:
        return fairness.demographic_parity_difference(self.cube, threshold)

    def demographic_parity_ratio(self, threshold: float) -> float:
        return fairness.demographic_parity_ratio(self.cube, threshold)

    def equalized_odds_difference(self, threshold: float) -> float:
        return fairness.equalized_odds_difference(self.cube, threshold)

    def equalized_odds_ratio(self, threshold: float) -> float:
        return fairness.equalized_odds_ratio(self.cube, threshold)

    def interval(self, metric: str, threshold: float) -> tuple[float, float]:
        """Interval of ``metric`` (a fairness function's name) at ``threshold``."""
        fn = getattr(fairness, metric)
        return fairness.fairness_interval(self.cube, fn, threshold, level=LEVEL)

    def gaps(self, threshold: float) -> pd.DataFrame:
        """Fairness gaps at ``threshold`` with intervals; ``significant`` when the interval
        clears the metric's threshold (ratios are reported without one)."""
        rows = []
        for metric in ("demographic_parity_difference", "equalized_odds_difference",
                       "demographic_parity_ratio", "equalized_odds_ratio"):
            low, high = self.interval(metric, threshold)
            limit = THRESHOLDS.get(metric, float("nan"))
            rows.append({"metric": metric, "value": getattr(self, metric)(threshold),
                         "low": low, "high": high, "threshold": limit,
                         "significant": bool(low > limit)})
        return pd.DataFrame(rows).set_index("metric")

    @cached_property
    def sweep(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(rates, gaps)`` at every bin edge with intervals (:func:`fairness.threshold_sweep`):
        what a threshold slider moves over without asking again."""
        return fairness.threshold_sweep(self.cube, level=LEVEL)

    def roc_curve(self, group: str | None = None) -> pd.DataFrame:
        return fairness.roc_curve(self.cube, group)

    def pr_curve(self, group: str | None = None) -> pd.DataFrame:
        return fairness.pr_curve(self.cube, group)

    def chart(self, threshold: float = 0.5) -> Any:
        """Selection rate, TPR, FPR and precision per group at ``threshold`` (a bin edge),
        with intervals; the title gives the demographic parity difference."""
        return self._chart("confusion", threshold=threshold)

    def roc_chart(self) -> Any:
        """ROC curve of each group and of all rows, one point per bin edge."""
        return self._chart("confusion.roc")

    def to_frame(self) -> pd.DataFrame:
        """Per-group rates at every threshold on a bin edge, stacked."""
        return pd.concat([self.at(t).reset_index().assign(threshold=t)
                          for t in self.thresholds], ignore_index=True)


@Release.register("drift")
class DriftRelease(Release):
    """Per-column drift statistics between the reference and current samples."""

    @cached_property
    def histograms(self) -> list[drift.DriftHistogram]:
        out = []
        for name in self.parts:
            dim = self.part(name)["dims"][1]
            counts = self.arrays(name)["count"]
            out.append(drift.DriftHistogram(
                column=name, labels=tuple(dim["labels"]),
                edges=_edges(dim) if "bins" in dim else None, reference=counts[0],
                current=counts[1], alpha=_alphas(self, name)["count"]))
        return out

    @cached_property
    def table(self) -> pd.DataFrame:
        return drift.drift_table(self.histograms, level=LEVEL, rng=_rng())

    def to_frame(self) -> pd.DataFrame:
        """One row per column: psi, js, hellinger, wasserstein, ks, drifted, ..."""
        return self.table.copy()

    @property
    def drifted_share(self) -> float:
        return drift.drifted_share(self.table)


@Release.register("performance_estimate")
class PerformanceRelease(Release):
    """Expected performance of unlabelled data under calibration (CBPE)."""

    @cached_property
    def histogram(self) -> performance.ScoreHistogram:
        arrays = {m: a[:-1] for m, a in self.arrays().items()}
        scale = float(self.params["scale"])
        return performance.ScoreHistogram(
            edges=_edges(self.part()["dims"][0]), count=arrays["count"],
            score_sum=arrays["score_sum"] / scale, alphas=_alphas(self), scale=scale,
            threshold=float(self.threshold))

    def chart(self, threshold: float = 0.5) -> Any:
        """The expected metrics at ``threshold`` with their intervals."""
        return self._chart("performance_estimate", threshold=threshold)

    def at(self, threshold: float = 0.5) -> pd.DataFrame:
        """Expected accuracy, precision, recall and F1 at ``threshold``, with intervals."""
        values = performance.expected_performance(self.histogram, threshold)
        intervals = performance.performance_intervals(self.histogram, threshold, level=LEVEL,
                                                      rng=_rng())
        rows = []
        for metric, value in values.items():
            lo, hi = intervals[metric]
            rows.append({"metric": metric, "value": value, "low": lo, "high": hi})
        return pd.DataFrame(rows).set_index("metric")

    def to_frame(self) -> pd.DataFrame:
        return self.at(0.5)


@Release.register("cohort_errors")
class CohortRelease(Release):
    """Error rates over feature combinations, weakest cohorts first, with FDR control."""

    @cached_property
    def cube(self) -> cohorts.CohortCube:
        dims = self.part()["dims"]
        arrays = self.arrays()
        return cohorts.CohortCube(
            features=tuple(d["column"] for d in dims),
            labels=tuple(tuple(d["labels"]) for d in dims), count=arrays["count"],
            errors=arrays["errors"], alphas=_alphas(self))

    @cached_property
    def table(self) -> pd.DataFrame:
        return cohorts.error_table(self.cube, level=LEVEL, rng=_rng())

    def weakest(self, k: int = 5) -> pd.DataFrame:
        return self.table.head(k)

    def heatmap(self, rows: str, cols: str) -> pd.DataFrame:
        return cohorts.heatmap(self.cube, rows, cols)

    def chart(self, rows: str | None = None, cols: str | None = None) -> Any:
        """Heatmap of the error rate over two features (default: the first two), the other
        features pooled; suppressed cells are marked."""
        return self._chart("cohort_errors", rows=rows, cols=cols)

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


@Release.register("attribution")
class AttributionRelease(Release):
    """Global importance (mean |attribution|) per column and group, with intervals."""

    @cached_property
    def table(self) -> pd.DataFrame:
        part = self.part()
        columns = tuple(self.params["columns"])
        scales = {c: float(s) for c, s in self.params["scales"].items()}
        flat = {m: _flatten_groups(a, part["dims"], 0) for m, a in self.arrays().items()}
        cube = AttributionCube(
            columns=columns, groups=flat["count"][1], count=flat["count"][0],
            sums={c: flat[c][0] / scales[c] for c in columns}, scales=scales,
            bounds={c: float(b) for c, b in self.params["bounds"].items()},
            alphas=_alphas(self))
        return importance(cube, level=LEVEL, rng=_rng())

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


# the synthetic twin's release (kind "marginals") lives in its own module; importing it
# here registers it wherever the typed releases are registered
from . import synthetic as _synthetic  # noqa: E402, F401
