"""Fairness views of a released confusion cube: Fairlearn and scikit-learn oracles at
negligible noise, the planted parity gap, thresholds off the bin edges, suppressed cells,
and interval coverage under real privacy.

Cubes are built here with numpy as the engine builds them (score bins ``[a, b)`` with the
last closed, label axis (negative, positive), "unknown" sex in the "other" group), then
given the release's two-sided geometric noise; at epsilon 1e6 that noise is 0 with
probability ~1, so the cube stands in for the exact counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy import stats
from sklearn.metrics import precision_recall_curve, precision_score, roc_curve

from pdebug_jupyter.metrics import fairness as fair
from pdebug_jupyter.metrics._bootstrap import geometric_noise
from pdebug_jupyter.synth import GROUND_TRUTH, loans_frame

EDGES = np.linspace(0.0, 1.0, 11)
GROUPS = ("female", "male", "other")
DECLARED = ["female", "male"]


def bin_index(score: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(EDGES, score, side="right") - 1, 0, EDGES.size - 2)


def true_counts(score: np.ndarray, label: np.ndarray, sex: np.ndarray) -> np.ndarray:
    group = np.select([sex == g for g in DECLARED], range(len(DECLARED)), len(DECLARED))
    cell = (bin_index(score) * 2 + label) * len(GROUPS) + group
    shape = (EDGES.size - 1, 2, len(GROUPS))
    return np.bincount(cell, minlength=int(np.prod(shape))).reshape(shape).astype(float)


def release(counts: np.ndarray, epsilon: float, rng: np.random.Generator) -> fair.ConfusionCube:
    """One count measure with sensitivity 1 gets the whole epsilon."""
    alpha = float(np.exp(-epsilon))
    return fair.ConfusionCube(EDGES, GROUPS, counts + geometric_noise(alpha, counts.shape, rng),
                              alpha)


def cube_of(frame: pd.DataFrame, epsilon: float, seed: int) -> fair.ConfusionCube:
    counts = true_counts(frame["score"].to_numpy(), frame["default"].to_numpy(),
                         frame["sex"].to_numpy())
    return release(counts, epsilon, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def loans() -> pd.DataFrame:
    # Small enough for Fairlearn's MetricFrame, which takes ~1 s per metric at 50,000 rows.
    return loans_frame(10_000, seed=7)


@pytest.fixture(scope="module")
def exact(loans: pd.DataFrame) -> fair.ConfusionCube:
    return cube_of(loans, 1e6, 0)


def declared_rows(loans: pd.DataFrame, threshold: float) -> dict[str, pd.Series]:
    rows = loans[loans["sex"].isin(DECLARED)]
    return {"y_true": rows["default"], "y_pred": (rows["score"] >= threshold).astype(int),
            "sensitive_features": rows["sex"]}


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.8])
def test_rates_at_a_threshold_match_fairlearn_metric_frame(
        loans: pd.DataFrame, exact: fair.ConfusionCube, threshold: float) -> None:
    frame = fair.at_threshold(exact, threshold)
    assert frame.index.tolist() == ["female", "male", "all"]
    metrics = {"count": count, "selection_rate": selection_rate, "tpr": true_positive_rate,
               "fpr": false_positive_rate,
               "precision": lambda y, p: precision_score(y, p, zero_division=np.nan)}
    oracle = MetricFrame(metrics=metrics, **declared_rows(loans, threshold))
    for column in metrics:
        np.testing.assert_allclose(frame.loc[DECLARED, column], oracle.by_group.loc[DECLARED, column],
                                   atol=1e-3)
    # "all" pools every row, the undeclared "unknown" sex included.
    y, p = loans["default"], (loans["score"] >= threshold).astype(int)
    everyone = {"count": len(y), "selection_rate": selection_rate(y, p),
                "tpr": true_positive_rate(y, p), "fpr": false_positive_rate(y, p),
                "precision": precision_score(y, p, zero_division=np.nan)}
    for column, expected in everyone.items():
        assert frame.loc["all", column] == pytest.approx(expected, abs=1e-3, nan_ok=True)
    assert (frame[["tp", "fp", "tn", "fn"]].sum(axis=1) == frame["count"]).all()


@pytest.mark.parametrize("threshold", [0.3, 0.6])
def test_fairness_gaps_match_fairlearn(loans: pd.DataFrame, exact: fair.ConfusionCube,
                                       threshold: float) -> None:
    rows = declared_rows(loans, threshold)
    pairs = [(fair.demographic_parity_difference, demographic_parity_difference),
             (fair.demographic_parity_ratio, demographic_parity_ratio),
             (fair.equalized_odds_difference, equalized_odds_difference),
             (fair.equalized_odds_ratio, equalized_odds_ratio)]
    for ours, theirs in pairs:
        assert ours(exact, threshold) == pytest.approx(theirs(**rows), abs=1e-3)


@pytest.mark.parametrize("group", [None, "female", "male"])
def test_roc_and_pr_curves_match_sklearn_at_the_bin_edges(
        loans: pd.DataFrame, exact: fair.ConfusionCube, group: str | None) -> None:
    rows = loans if group is None else loans[loans["sex"] == group]
    y, s = rows["default"].to_numpy(), rows["score"].to_numpy()
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    roc = fair.roc_curve(exact, group)
    np.testing.assert_allclose(roc["threshold"], EDGES[::-1])
    # sklearn's point for an edge is its last threshold at or above the edge.
    at = [np.flatnonzero(thresholds >= e).max() for e in roc["threshold"]]
    np.testing.assert_allclose(roc["fpr"], fpr[at], atol=1e-12)
    np.testing.assert_allclose(roc["tpr"], tpr[at], atol=1e-12)
    precision, recall, cuts = precision_recall_curve(y, s, drop_intermediate=False)
    pr = fair.pr_curve(exact, group)
    for _, point in pr.iterrows():
        above = np.flatnonzero(cuts >= point["threshold"])
        if above.size == 0:  # nobody predicted positive: precision undefined
            assert np.isnan(point["precision"]) and point["recall"] == 0
            continue
        assert point["precision"] == pytest.approx(precision[above.min()], abs=1e-12)
        assert point["recall"] == pytest.approx(recall[above.min()], abs=1e-12)


def test_planted_parity_gap_is_visible() -> None:
    planted = cast(Mapping[str, float], GROUND_TRUTH["parity_gap"])
    frame = loans_frame(50_000, seed=7)
    exact = cube_of(frame, 1e6, 0)
    rates = fair.at_threshold(exact, 0.5)["selection_rate"]
    assert rates["female"] - rates["male"] == pytest.approx(planted["expected"], abs=0.01)
    assert fair.demographic_parity_difference(exact, 0.5) == pytest.approx(0.05, abs=0.01)
    # At epsilon 1 the interval excludes a zero gap and holds the planted one.
    low, high = fair.fairness_interval(cube_of(frame, 1.0, 1),
                                       fair.demographic_parity_difference, 0.5)
    assert 0.02 < low < planted["expected"] < high < 0.08


def test_every_threshold_is_an_edge_and_the_extremes_select_everyone_or_nobody(
        exact: fair.ConfusionCube) -> None:
    assert (fair.at_threshold(exact, EDGES[0])["selection_rate"] == 1.0).all()
    assert (fair.at_threshold(exact, EDGES[-1])["selection_rate"] == 0.0).all()
    assert fair.at_threshold(exact, 0.30000000000000004).equals(fair.at_threshold(exact, 0.3))


@pytest.mark.parametrize(("threshold", "message"), [
    (0.55, "threshold 0.55 is not a bin edge; the nearest edges are 0.5 and 0.6"),
    (1.5, r"threshold 1.5 is outside the bin edges \[0, 1\]"),
    (float("nan"), "threshold must be a finite number"),
])
def test_a_threshold_off_the_edges_is_a_clear_one_line_error(
        exact: fair.ConfusionCube, threshold: float, message: str) -> None:
    for view in (fair.at_threshold, fair.demographic_parity_difference,
                 fair.equalized_odds_ratio):
        with pytest.raises(ValueError, match=message) as error:
            view(exact, threshold)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=message):
        fair.fairness_interval(exact, fair.demographic_parity_difference, threshold)


def test_suppressed_cells_count_as_zero_and_are_reported(exact: fair.ConfusionCube) -> None:
    counts = exact.counts.copy()
    counts[9, 0, 0] = counts[9, 1, 2] = counts[0, 1, 2] = np.nan
    cube = fair.ConfusionCube(EDGES, GROUPS, counts, exact.alpha)
    zeroed = fair.ConfusionCube(EDGES, GROUPS, np.nan_to_num(counts), exact.alpha)
    frame = fair.at_threshold(cube, 0.5)
    assert frame["suppressed"].tolist() == [1, 0, 3]
    pd.testing.assert_frame_equal(frame.drop(columns="suppressed"),
                                  fair.at_threshold(zeroed, 0.5).drop(columns="suppressed"))
    assert np.isfinite(frame[["selection_rate", "tpr", "fpr", "precision"]].to_numpy()).all()
    for metric in (fair.demographic_parity_difference, fair.equalized_odds_ratio):
        assert np.isfinite(metric(cube, 0.5))
        assert np.isfinite(fair.fairness_interval(cube, metric, 0.5)).all()


def test_a_cube_without_groups_has_one_row(exact: fair.ConfusionCube) -> None:
    pooled = fair.ConfusionCube(EDGES, ("all",), exact.counts.sum(axis=2, keepdims=True), 0.0)
    frame = fair.at_threshold(pooled, 0.5)
    assert frame.index.tolist() == ["all"]
    tpr = float(frame["tpr"].to_numpy()[0])
    assert tpr == float(fair.at_threshold(exact, 0.5)["tpr"].to_numpy()[-1])
    assert fair.demographic_parity_difference(pooled, 0.5) == 0.0
    assert fair.GroupRate("tpr")(pooled, 0.5) == tpr


def wrapped(metric: fair.Metric) -> fair.Metric:
    """The same metric as a callable the module does not know: evaluated draw by draw."""
    return lambda cube, threshold: metric(cube, threshold)


def test_vectorised_intervals_equal_calling_the_metric_on_each_draw(
        exact: fair.ConfusionCube) -> None:
    cube = release(exact.counts, 0.3, np.random.default_rng(2))
    gaps: tuple[fair.Metric, ...] = (fair.demographic_parity_difference, fair.demographic_parity_ratio,
            fair.equalized_odds_difference, fair.equalized_odds_ratio)
    candidates: list[fair.Metric] = [*gaps, fair.GroupRate("precision", "female")]
    for metric in candidates:
        fast = fair.fairness_interval(cube, metric, 0.4, draws=50, rng=np.random.default_rng(3))
        # Any other callable gets the percentile form: estimate + deviations.
        low, high = fair.fairness_interval(cube, wrapped(metric), 0.4, draws=50,
                                           rng=np.random.default_rng(3))
        if metric in gaps:  # the gaps take the reflected form: estimate - deviations
            twice = 2 * metric(cube, 0.4)
            low, high = twice - high, twice - low
        assert fast == pytest.approx((low, high), abs=1e-12)
    with pytest.raises(ValueError, match="unknown rate 'accuracy'"):
        fair.GroupRate("accuracy")


def test_the_threshold_sweep_equals_each_threshold_asked_one_at_a_time(
        exact: fair.ConfusionCube) -> None:
    cube = release(exact.counts, 0.5, np.random.default_rng(4))
    rates, gaps = fair.threshold_sweep(cube, draws=60, rng=np.random.default_rng(5))
    assert sorted(set(rates["threshold"])) == list(cube.edges)
    for threshold in cube.edges[[0, 3, 5, -1]]:
        frame = fair.at_threshold(cube, threshold)
        here = rates[rates["threshold"] == threshold]
        for group in frame.index:
            for rate in fair.RATES:
                row = here[(here["group"] == group) & (here["rate"] == rate)].iloc[0]
                assert row["value"] == pytest.approx(frame.at[group, rate], nan_ok=True)
                low, high = fair.fairness_interval(cube, fair.GroupRate(rate, str(group)),
                                                   threshold, draws=60,
                                                   rng=np.random.default_rng(5))
                assert (row["low"], row["high"]) == pytest.approx((low, high), nan_ok=True)
        for metric in (fair.demographic_parity_difference, fair.equalized_odds_difference):
            row = gaps[(gaps["threshold"] == threshold) & (gaps["metric"] == metric.__name__)]
            assert float(row["value"].iloc[0]) == pytest.approx(metric(cube, threshold))
            interval = fair.fairness_interval(cube, metric, threshold, draws=60,
                                              rng=np.random.default_rng(5))
            assert (float(row["low"].iloc[0]), float(row["high"].iloc[0])) == pytest.approx(interval)


def population_mass() -> np.ndarray:
    """Share of rows per (bin, label, group) cell, integrated on a fine grid of q: q ~ Beta(2, 5)
    is the true default probability and the score of men and "other"; women score
    sigmoid(logit(q) / 0.6 + 0.62), the generator's planted shift."""
    q = (np.arange(200_000) + 0.5) / 200_000
    weight = stats.beta.pdf(q, 2, 5)
    female = 0.5 * (1 + np.tanh(0.5 * (np.log(q / (1 - q)) / 0.6 + 0.62)))
    mass = np.zeros((EDGES.size - 1, 2, len(GROUPS)))
    for group, (share, score) in enumerate(zip((0.49, 0.49, 0.02), (female, q, q), strict=True)):
        for label, w in ((0, weight * (1 - q)), (1, weight * q)):
            mass[:, label, group] = np.bincount(bin_index(score), share * w, minlength=EDGES.size - 1)
    return np.asarray(mass / mass.sum())


def test_intervals_cover_the_population_value_under_real_privacy() -> None:
    """Nominal 90% intervals over 450 simulated releases of 50,000 rows (multinomial cell
    counts from the population), at epsilon 0.1, 0.3 and 1: the demographic parity
    difference and the female TPR at 0.5 cover their population values at 85% to 95%
    (0.91 and 0.91 measured over 900 releases)."""
    n, trials = 50_000, 450
    mass = population_mass()
    population = fair.ConfusionCube(EDGES, GROUPS, mass, 0.0)
    tpr = fair.GroupRate("tpr", "female")
    metrics: dict[str, fair.Metric] = {"parity": fair.demographic_parity_difference,
                                       "tpr": tpr}
    truth = {name: metric(population, 0.5) for name, metric in metrics.items()}
    assert truth["parity"] == pytest.approx(0.112, abs=0.001)
    rng = np.random.default_rng(20240611)
    covered = dict.fromkeys(metrics, 0)
    for trial in range(trials):
        counts = rng.multinomial(n, mass.ravel()).reshape(mass.shape).astype(float)
        cube = release(counts, (0.1, 0.3, 1.0)[trial % 3], rng)
        for name, metric in metrics.items():
            low, high = fair.fairness_interval(cube, metric, 0.5, rng=rng)
            covered[name] += low <= truth[name] <= high
    coverage = {k: v / trials for k, v in covered.items()}
    assert all(0.85 <= c <= 0.95 for c in coverage.values()), coverage
