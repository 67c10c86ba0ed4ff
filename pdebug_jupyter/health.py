"""A model health check: one budget split across calibration, fairness, drift and cohorts.

Each finding is flagged only when its interval clears its threshold, and carries the
evidence and a plain-language recommendation. ``pdebug-jupyter check`` runs it headless
and exits non-zero on a finding, so it can gate CI like a test suite.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .client import Dataset
from .metrics.releases import (
    THRESHOLDS,
    CalibrationRelease,
    CohortRelease,
    ConfusionRelease,
    DriftRelease,
)

#: Shares of the health check's epsilon per analysis.
SPLIT = {"calibration": 0.25, "fairness": 0.25, "drift": 0.3, "cohorts": 0.2}
#: A cohort is weak when its error rate is surely above 1.5x the overall rate: error rates
#: differ between the cohorts of any model, which is no finding.
COHORT_ERROR_RATIO = 1.5


@dataclass(frozen=True)
class Finding:
    analysis: str
    subject: str
    metric: str
    value: float
    low: float
    high: float
    threshold: float
    recommendation: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> float:
        """How far the interval's lower end clears the threshold, relative to it."""
        return (self.low - self.threshold) / self.threshold if self.threshold else self.low


@dataclass(frozen=True)
class HealthReport:
    dataset: str
    epsilon: float
    findings: tuple[Finding, ...]
    release_ids: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_frame(self) -> pd.DataFrame:
        rows = [{**asdict(f), "severity": f.severity} for f in self.findings]
        return pd.DataFrame(rows, columns=[*Finding.__dataclass_fields__, "severity"])

    def to_html(self) -> str:
        head = (f"<h1>pdebug-jupyter health check: {html.escape(self.dataset)}</h1>"
                f"<p>epsilon spent: {self.epsilon:g}; releases: "
                f"{html.escape(', '.join(self.release_ids))}</p>")
        if self.ok:
            return head + "<p>No significant problem found.</p>"
        cols = ("analysis", "subject", "metric", "value", "low", "high", "threshold",
                "recommendation")
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(getattr(f, c)))}</td>"
                                        for c in cols) + "</tr>" for f in self.findings)
        header = "".join(f"<th>{c}</th>" for c in cols)
        return head + f"<table><tr>{header}</tr>{rows}</table>"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _split_columns(ds: Dataset) -> tuple[list[str], list[str], list[str]]:
    cols = ds.schema["columns"]
    protected = [c["name"] for c in cols if c["kind"] == "protected"]
    categorical = [c["name"] for c in cols if c["kind"] == "categorical"]
    numeric = [c["name"] for c in cols if c["kind"] == "numeric"]
    return protected, categorical, numeric


def _calibration(rel: CalibrationRelease) -> list[Finding]:
    out = []
    table = rel.by_group()
    for group, row in table.iterrows():
        if group == "other" or not row["significant"]:
            continue
        out.append(Finding("calibration", f"group {group}", "ece", row["ece"], row["ece_low"],
                           row["ece_high"], THRESHOLDS["ece"],
                           f"Recalibrate the model for group {group} (for example isotonic or "
                           "Platt scaling fitted on that group).",
                           {"release_id": rel.release_id, "brier": row["brier"]}))
    return out


def _fairness(rel: ConfusionRelease, threshold: float) -> list[Finding]:
    out = []
    for metric, row in rel.gaps(threshold).iterrows():
        if row["significant"]:
            rates = rel.at(threshold)
            out.append(Finding("fairness", f"threshold {threshold:g}", str(metric), row["value"],
                               row["low"], row["high"], row["threshold"],
                               f"Investigate the {str(metric).replace('_', ' ')} across groups: "
                               "review features acting as proxies, or adjust thresholds.",
                               {"release_id": rel.release_id,
                                "selection_rate": rates["selection_rate"].round(4).to_dict()}))
    return out


def _drift(rel: DriftRelease) -> list[Finding]:
    out = []
    for _, row in rel.table.iterrows():
        if bool(row["drifted"]):
            out.append(Finding("drift", f"column {row['column']}", str(row["method"]),
                               float(row["statistic"]), float(row["low"]), float(row["high"]),
                               float(row["threshold"]),
                               f"Investigate drift in {row['column']}: compare its reference and "
                               "current distributions and consider retraining.",
                               {"release_id": rel.release_id, "psi": float(row["psi"])}))
    return out


def _cohorts(rel: CohortRelease) -> list[Finding]:
    out = []
    table = rel.table
    limit = COHORT_ERROR_RATIO * float(np.nansum(rel.cube.errors)
                                                     / np.nansum(rel.cube.count))
    weak = table[table["significant"] & (table["low"] > limit)]
    for _, row in weak.head(5).iterrows():
        cohort = ", ".join(f"{f}={row[f]}" for f in rel.cube.features)
        out.append(Finding("cohorts", cohort, "error_rate", float(row["error_rate"]),
                           float(row["low"]), float(row["high"]), limit,
                           f"Inspect the cohort {cohort}: its error rate is above the overall "
                           "rate by half or more; collect data or add features that describe it.",
                           {"release_id": rel.release_id, "p_value": float(row["p_value"])}))
    return out


def health_check(ds: Dataset, epsilon: float = 1.0, *, threshold: float = 0.5,
                 features: list[str] | None = None) -> HealthReport:
    """Spend ``epsilon`` once across calibration, fairness, drift and error cohorts of
    ``ds`` and return the findings, most severe first.

    Analyses the policy gives no footing for are left out and their share is not spent:
    fairness without a protected column, drift without a split column with two categories,
    cohorts without categorical or numeric features.
    """
    protected, categorical, numeric = _split_columns(ds)
    chosen = features or (categorical[:1] + numeric[:1])
    splits = [c for c in ds.schema["columns"] if c["kind"] == "split"
              and len(c.get("categories", ())) >= 2]
    plan = {"calibration": True, "fairness": bool(protected), "drift": len(splits) == 1,
            "cohorts": bool(chosen)}
    by = protected or None
    findings: list[Finding] = []
    releases: list[str] = []
    if plan["calibration"]:
        cal = ds.calibration(by=by, epsilon=epsilon * SPLIT["calibration"])
        assert isinstance(cal, CalibrationRelease)
        findings += _calibration(cal)
        releases.append(cal.release_id)
    if plan["fairness"]:
        con = ds.confusion(by=by, epsilon=epsilon * SPLIT["fairness"])
        assert isinstance(con, ConfusionRelease)
        findings += _fairness(con, threshold)
        releases.append(con.release_id)
    if plan["drift"]:
        dri = ds.drift(epsilon=epsilon * SPLIT["drift"])
        assert isinstance(dri, DriftRelease)
        findings += _drift(dri)
        releases.append(dri.release_id)
    if plan["cohorts"]:
        coh = ds.cohort_errors(chosen, threshold=threshold, epsilon=epsilon * SPLIT["cohorts"])
        assert isinstance(coh, CohortRelease)
        findings += _cohorts(coh)
        releases.append(coh.release_id)
    findings.sort(key=lambda f: f.severity, reverse=True)
    spent = epsilon * sum(SPLIT[k] for k, run in plan.items() if run)
    return HealthReport(ds.name, spent, tuple(findings), tuple(releases))
