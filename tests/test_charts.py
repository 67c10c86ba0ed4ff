"""Charts of real releases: valid Vega-Lite, inline release data only, honest marks."""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import pytest

import pdebug_jupyter as pdj
from pdebug_jupyter.metrics import fairness
from pdebug_jupyter.metrics.releases import LEVEL
from pdebug_jupyter.synth import LoansFiles, make_loans

PACKAGE = Path(pdj.__file__).parent
SUPPRESSED = "suppressed: noisy count below the minimum cohort size"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> LoansFiles:
    files = make_loans(5_000, seed=1, path=tmp_path_factory.mktemp("charts"),
                       epsilon_per_user=1000.0, epsilon_total=1000.0, users=[])
    frame = pd.read_parquet(files.data)
    rng = np.random.default_rng(0)
    frame["shap_age"] = rng.normal(0, 0.4, len(frame))
    frame["shap_income"] = rng.normal(0, 0.1, len(frame))
    frame.to_parquet(files.data)
    files.policy.write_text(files.policy.read_text().replace(
        "window = {", 'shap_age = { kind = "attribution", bounds = [-1, 1] }\n'
        'shap_income = { kind = "attribution", bounds = [-1, 1] }\nwindow = {'))
    return files


@pytest.fixture(scope="module")
def releases(files: LoansFiles) -> dict[str, Any]:
    """One release per kind. The session is closed before any chart is drawn: charts are
    post-processing of the release alone."""
    with pdj.connect(policy=files.policy) as s:
        ds = s.dataset("loans")
        return {
            "histogram": ds.histogram("age", by="sex", epsilon=1.0),
            "histogram_1d": ds.histogram("region", epsilon=1.0),
            "calibration": ds.calibration(by="sex", epsilon=2.0),
            "confusion": ds.confusion(by="sex", epsilon=2.0),
            "drift": ds.drift(["age", "region"], epsilon=2.0),
            "cohort_errors": ds.cohort_errors(["region", "sex"], epsilon=2.0),
            "attribution": ds.attribution(by="sex", epsilon=2.0),
            "performance_estimate": ds.performance_estimate(where={"window": "current"},
                                                            epsilon=2.0),
        }


@pytest.fixture(scope="module")
def specs(releases: dict[str, Any]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Every chart with its spec; ``to_dict()`` validates against the Vega-Lite schema."""
    charts = {name: (rel, rel.chart()) for name, rel in releases.items()}
    charts["roc"] = (releases["confusion"], releases["confusion"].roc_chart())
    return {name: (rel, chart.to_dict(validate=True)) for name, (rel, chart) in charts.items()}


def data_values(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The inline records of the chart's own (top-level) data."""
    data = spec["data"]
    return list(data["values"] if "values" in data else spec["datasets"][data["name"]])


def layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec["spec"]["layer"] if "spec" in spec else spec["layer"])


def layer(spec: dict[str, Any], mark: str, **encoded: str) -> dict[str, Any]:
    """The one layer with ``mark`` whose encodings have these fields."""
    found = [lay for lay in layers(spec)
             if lay["mark"]["type"] == mark
             and all(lay["encoding"].get(ch, {}).get("field") == f for ch, f in encoded.items())]
    assert len(found) == 1, [(lay["mark"], lay["encoding"]) for lay in layers(spec)]
    return found[0]


def plain(values: Any) -> list[Any]:
    """Frame values as the chart holds them: missing values null, numbers as Python's."""
    return [None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
            else (v.item() if isinstance(v, np.generic) else v) for v in values]


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


CHARTS = ["histogram", "histogram_1d", "calibration", "confusion", "roc", "drift",
          "cohort_errors", "attribution", "performance_estimate"]


@pytest.mark.parametrize("name", CHARTS)
def test_every_chart_is_offline_release_data_with_its_provenance(
        name: str, specs: dict[str, tuple[Any, dict[str, Any]]], files: LoansFiles) -> None:
    rel, spec = specs[name]
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    assert not [v for k, v in walk(spec) if k == "url"]  # data inline, renders offline
    assert data_values(spec)
    subtitle = " ".join(spec["title"]["subtitle"])
    assert f"ε = {rel.epsilon:g} spent" in subtitle
    assert rel.release_id in subtitle
    assert "synthetic data" in subtitle
    assert spec["usermeta"]["pdebug"] == {
        "release_id": rel.release_id, "kind": rel.kind, "dataset": "loans",
        "epsilon": rel.epsilon, "synthetic": True}
    text = json.dumps(spec)
    canaries = [c for c in files.canaries.read_text().splitlines() if c]
    assert len(canaries) == 1000
    assert not [c for c in canaries if c in text]


def test_histogram_bars_are_the_released_counts_with_noise_whiskers(
        specs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    rel, spec = specs["histogram"]
    frame = rel.frame()
    values = data_values(spec)
    assert [v["cell"] for v in values] == list(frame["age"].astype(str))
    assert [v["group"] for v in values] == list(frame["sex"].astype(str))
    assert [v["count"] for v in values] == plain(frame["count"])
    half = frame["count_ci95"]
    assert [v["low"] for v in values] == plain(frame["count"] - half)
    assert [v["high"] for v in values] == plain(frame["count"] + half)
    assert [v["suppressed"] for v in values] == list(frame["suppressed"])
    assert frame["suppressed"].any() and (~frame["suppressed"]).any()
    bars = layer(spec, "bar", y="count", xOffset="group", color="group")
    assert bars["transform"] == [{"filter": "!datum.suppressed"}]
    whiskers = layer(spec, "rule", y="low", y2="high", xOffset="group")
    assert whiskers["transform"] == [{"filter": "!datum.suppressed"}]
    crosses = layer(spec, "point", shape="status")
    assert crosses["transform"] == [{"filter": "datum.suppressed"}]
    assert crosses["encoding"]["shape"]["scale"]["range"] == ["cross"]
    assert crosses["encoding"]["y"] == {"datum": 0}
    reasons = {v["status"] for v in values if v["suppressed"]}
    assert reasons == {f"{SUPPRESSED} ({rel.threshold})"}
    assert "95% interval of the DP noise" in " ".join(spec["title"]["subtitle"])


def test_a_one_dimension_histogram_without_suppression_has_no_suppressed_layer(
        specs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    rel, spec = specs["histogram_1d"]
    assert not rel.frame()["suppressed"].any()
    assert [lay["mark"]["type"] for lay in layers(spec)] == ["bar", "rule"]
    assert "xOffset" not in layers(spec)[0]["encoding"]
    assert [v["count"] for v in data_values(spec)] == plain(rel.frame()["count"])


def test_reliability_diagram_shows_the_rates_their_intervals_and_the_ece(
        specs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    rel, spec = specs["calibration"]
    frame = rel.to_frame()
    values = data_values(spec)
    for field in ("group", "count", "mean_score", "positive_rate", "rate_low", "rate_high",
                  "suppressed"):
        assert [v[field] for v in values] == plain(frame[field]), field
    points = layer(spec, "circle", x="mean_score", y="positive_rate", size="count",
                   color="group")
    assert points["encoding"]["y"]["scale"] == {"domain": [0, 1]}
    layer(spec, "rule", x="mean_score", y="rate_low", y2="rate_high")
    diagonal = layer(spec, "line", x="reference", y="reference")
    edges = rel.cube.edges
    assert spec["datasets"][diagonal["data"]["name"]] == [
        {"reference": float(edges[0])}, {"reference": float(edges[-1])}]
    assert frame["suppressed"].any()
    layer(spec, "point", x="mid", shape="status")
    low, high = rel.ece_ci
    assert f"ECE {rel.ece:.3f}, {LEVEL:.0%} interval {low:.3f}–{high:.3f}" in spec["title"]["text"]


def test_confusion_chart_shows_each_groups_rates_at_the_threshold_with_intervals(
        releases: dict[str, Any], specs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    rel, spec = specs["confusion"]
    at = rel.at(0.5)
    values = data_values(spec)
    assert [(v["group"], v["rate"]) for v in values] == [
        (g, r) for g in at.index for r in fairness.RATES]
    for v in values:
        assert v["value"] == plain([at.loc[v["group"], v["rate"]]])[0]
        interval = fairness.fairness_interval(
            rel.cube, fairness.GroupRate(v["rate"], v["group"]), 0.5, level=LEVEL)
        assert (v["low"], v["high"]) == pytest.approx(interval)
        assert v["suppressed"] == at.loc[v["group"], "suppressed"]
    layer(spec, "point", x="rate", y="value", xOffset="group", color="group")
    layer(spec, "rule", x="rate", y="low", y2="high", xOffset="group")
    gap = rel.demographic_parity_difference(0.5)
    assert f"demographic parity difference {gap:.3f}" in spec["title"]["text"]
    # another threshold is another view of the same release
    other = rel.chart(threshold=0.3).to_dict()
    assert "threshold 0.3" in other["title"]["text"]
    assert [v["value"] for v in data_values(other)] != [v["value"] for v in values]
    with pytest.raises(ValueError, match="not a bin edge"):
        rel.chart(threshold=0.33)


def test_roc_chart_has_one_curve_per_group_from_the_release(
        specs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    rel, spec = specs["roc"]
    values = data_values(spec)
    for group in ("female", "male", "all"):
        curve = rel.roc_curve(group)
        mine = [v for v in values if v["group"] == group]
        assert [v["fpr"] for v in mine] == plain(curve["fpr"])
        assert [v["tpr"] for v in mine] == plain(curve["tpr"])
    curves = layer(spec, "line", x="fpr", y="tpr", color="group")
    assert curves["encoding"]["order"] == {"field": "threshold", "sort": "descending",
                                           "type": "quantitative"}
    layer(spec, "line", x="reference", y="reference")


def test_drift_chart_has_a_row_per_column_with_its_rule_and_highlights_drift(
        specs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    rel, spec = specs["drift"]
    table = rel.to_frame()
    values = data_values(spec)
    for field in ("column", "method", "statistic", "low", "high", "threshold", "drifted"):
        assert [v[field] for v in values] == plain(table[field]), field
    assert spec["facet"]["row"]["field"] == "label"
    assert spec["resolve"] == {"scale": {"x": "independent"}}
    assert [v["verdict"] for v in values] == [
        "drifted" if d else "not drifted" for d in table["drifted"]]
    assert table["drifted"].any()  # the planted age drift
    point = layer(spec, "point", x="statistic", color="verdict")
    assert point["encoding"]["color"]["scale"] == {"domain": ["drifted", "not drifted"],
                                                   "range": ["#d62728", "#7f7f7f"]}
    layer(spec, "rule", x="low", x2="high")
    layer(spec, "rule", x="threshold")
    age = next(v for v in values if v["column"] == "age")
    assert age["rule"] == (f"normed Wasserstein: drifted when the interval's lower end ≥ "
                           f"{age['threshold']:.3g}")


def test_cohort_heatmap_is_the_error_rate_over_two_features(
        specs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    rel, spec = specs["cohort_errors"]
    heat = rel.heatmap("region", "sex")
    values = data_values(spec)
    assert [(v["row"], v["col"]) for v in values] == [
        (r, c) for r in heat.index for c in heat.columns]
    hidden = np.isnan(rel.cube.count).ravel()
    assert [v["suppressed"] for v in values] == list(hidden)
    assert hidden.any()
    released = [v for v in values if not v["suppressed"]]
    assert [v["error_rate"] for v in released] == pytest.approx(
        [heat.loc[v["row"], v["col"]] for v in released])
    assert all(v["error_rate"] is None for v in values if v["suppressed"])
    cells = layer(spec, "rect", y="row", x="col", color="error_rate")
    assert cells["transform"] == [{"filter": "!datum.suppressed"}]
    layer(spec, "point", y="row", x="col", shape="status")
    swapped = rel.chart(rows="sex").to_dict()
    assert [(v["row"], v["col"]) for v in data_values(swapped)] == [
        (c, r) for c in heat.columns for r in heat.index]
    assert [v["suppressed"] for v in data_values(swapped)] == list(
        np.isnan(rel.cube.count).T.ravel())
    with pytest.raises(ValueError, match="unknown feature 'age'"):
        rel.chart(rows="age")


def test_attribution_chart_bars_are_the_importances_with_interval_whiskers(
        specs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    rel, spec = specs["attribution"]
    table = rel.to_frame()
    values = data_values(spec)
    for field in ("group", "column", "importance", "low", "high"):
        assert [v[field] for v in values] == plain(table[field]), field
    layer(spec, "bar", x="importance", y="column", yOffset="group", color="group")
    layer(spec, "rule", x="low", x2="high", y="column")


def test_performance_chart_points_are_the_expected_metrics(
        specs: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    rel, spec = specs["performance_estimate"]
    at = rel.at(0.5)
    values = data_values(spec)
    assert [v["metric"] for v in values] == list(at.index)
    assert [v["value"] for v in values] == plain(at["value"])
    assert all(v["low"] <= v["value"] <= v["high"] for v in values)
    layer(spec, "point", x="metric", y="value")
    layer(spec, "rule", x="metric", y="low", y2="high")
    assert "threshold 0.5" in spec["title"]["text"]


def test_charts_stay_inline_whatever_altairs_data_transformer(
        releases: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with alt.data_transformers.enable("json"):
        spec = releases["histogram"].chart().to_dict()
    assert not [v for k, v in walk(spec) if k == "url"]
    assert list(tmp_path.iterdir()) == []


def test_a_kind_without_a_chart_builder_is_a_clear_error() -> None:
    rel = pdj.Release({"kind": "mystery", "parts": []})
    with pytest.raises(pdj.PdebugError, match="no chart is registered for 'mystery'") as err:
        rel.chart()
    assert err.value.code == "no_chart"


def test_client_and_metrics_never_import_charts_or_altair() -> None:
    for layer_dir in ("client", "metrics"):
        for path in (PACKAGE / layer_dir).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [a.name for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                assert not [n for n in names if "charts" in n or "altair" in n], path
