"""CBPE-style expected performance from a noisy score histogram: oracle, noise, coverage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pdebug_jupyter.metrics import performance
from pdebug_jupyter.metrics._bootstrap import geometric_noise
from pdebug_jupyter.synth import loans_frame

EDGES = np.linspace(0.0, 1.0, 21)  # the query kind's default: 20 score bins
SCALE = 10_000.0
EPS = 0.5  # epsilon 1 split over the count and the score sum
ALPHAS = {"count": math.exp(-EPS), "score_sum": math.exp(-EPS / SCALE)}  # sensitivities 1, SCALE
TOLERANCE = 1e-4  # fixed-point rounding: at most 0.5 / SCALE = 5e-5 in any rate


def exact_cube(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row count and fixed-point score sum (in score units) per bin, as the engine computes."""
    cells = np.digitize(scores, EDGES[1:-1])
    count = np.bincount(cells, minlength=EDGES.size - 1).astype(float)
    grid = np.bincount(cells, weights=np.round(scores * SCALE), minlength=EDGES.size - 1)
    return count, grid / SCALE


def release(count: np.ndarray, score_sum: np.ndarray, rng: np.random.Generator,
            min_cohort: int = 25) -> performance.ScoreHistogram:
    """Noise both measures and suppress bins whose noisy count is below ``min_cohort`` (0:
    none), as the service does; the histogram knows the threshold, as a release does."""
    n = count + geometric_noise(ALPHAS["count"], count.shape, rng)
    s = score_sum + geometric_noise(ALPHAS["score_sum"], count.shape, rng) / SCALE
    s[n < min_cohort] = np.nan
    n[n < min_cohort] = np.nan
    return performance.ScoreHistogram(EDGES, n, s, ALPHAS, SCALE, threshold=min_cohort)


def row_level(scores: np.ndarray, threshold: float) -> dict[str, float]:
    """CBPE on the raw rows: a calibrated score is the probability that the row is positive."""
    pred = scores >= threshold
    tp, fp = scores[pred].sum(), (1 - scores[pred]).sum()
    fn, tn = scores[~pred].sum(), (1 - scores[~pred]).sum()
    return {"accuracy": (tp + tn) / scores.size, "precision": tp / (tp + fp),
            "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn)}


@pytest.fixture(scope="module")
def current() -> pd.DataFrame:
    frame = loans_frame(50_000, 0, problems=False)  # calibrated scores
    return frame[frame["window"] == "current"]


def test_expected_performance_matches_the_row_level_expectation(current: pd.DataFrame) -> None:
    scores = current["score"].to_numpy()
    h = performance.ScoreHistogram(EDGES, *exact_cube(scores), {"count": 0.0, "score_sum": 0.0},
                                   SCALE)
    for threshold in (0.1, 0.25, 0.5, 0.7):
        got = performance.expected_performance(h, threshold)
        for metric, value in row_level(scores, threshold).items():
            assert got[metric] == pytest.approx(value, abs=TOLERANCE), (threshold, metric)
    # calibrated scores: the label-free estimate is close to the accuracy actually realised
    realised = np.mean((scores >= 0.5) == current["default"].to_numpy())
    assert performance.expected_performance(h, 0.5)["accuracy"] == pytest.approx(realised,
                                                                                  abs=0.01)


def test_extreme_thresholds_and_suppressed_bins() -> None:
    count = np.array([100.0, 50.0, 10.0, 40.0])
    h = performance.ScoreHistogram(np.linspace(0, 1, 5), count, np.array([10.0, 15, 5, 35]),
                                   {"count": 0.0, "score_sum": 0.0}, SCALE)
    everyone = performance.expected_performance(h, 0.0)
    assert everyone["recall"] == 1.0 and everyone["precision"] == pytest.approx(65 / 200)
    nobody = performance.expected_performance(h, 1.0)
    assert math.isnan(nobody["precision"]) and nobody["recall"] == 0.0
    assert nobody["accuracy"] == pytest.approx(135 / 200)
    hidden = performance.ScoreHistogram(h.edges, np.array([100.0, 50, np.nan, 40]),
                                        np.array([10.0, 15, np.nan, 35]), h.alphas, SCALE)
    empty = performance.ScoreHistogram(h.edges, np.array([100.0, 50, 0, 40]),
                                       np.array([10.0, 15, 0, 35]), h.alphas, SCALE)
    assert (performance.expected_performance(hidden, 0.5)
            == performance.expected_performance(empty, 0.5))


def test_estimate_holds_at_epsilon_one(current: pd.DataFrame) -> None:
    scores = current["score"].to_numpy()
    count, score_sum = exact_cube(scores)
    truth = row_level(scores, 0.5)
    rng = np.random.default_rng(1)
    inside = 0
    for _ in range(20):
        h = release(count, score_sum, rng)
        got = performance.expected_performance(h, 0.5)
        assert got["accuracy"] == pytest.approx(truth["accuracy"], abs=0.005)
        assert got["precision"] == pytest.approx(truth["precision"], abs=0.02)
        lo, hi = performance.performance_interval(h, "accuracy", 0.5, rng=rng)
        inside += lo <= truth["accuracy"] <= hi
    assert inside >= 18


def test_a_suppressed_bin_holds_what_it_could_have_held(current: pd.DataFrame) -> None:
    """At a threshold of 0.9 only the top two bins predict positive; hide the top one (6
    rows). Left empty, the estimate and the pre-noise recall interval fall short of the
    value on the rows. With the threshold (25) known, the bin holds the mean of the counts
    it could hold at its middle score, about 12 rows, and the interval, which draws the
    count, covers both the value on the rows and the estimate."""
    scores = current["score"].to_numpy()
    count, score_sum = exact_cube(scores)
    count[-1] = score_sum[-1] = np.nan
    truth = row_level(scores, 0.9)["recall"]
    known, unknown = (performance.ScoreHistogram(EDGES, count, score_sum, ALPHAS, SCALE,
                                                 threshold=t) for t in (25, 0))
    empty = performance.expected_performance(unknown, 0.9)["recall"]
    low, high = performance.performance_interval(unknown, "recall", 0.9, sampling=False,
                                                 rng=np.random.default_rng(1))
    assert low <= empty <= high < truth
    filled = performance.expected_performance(known, 0.9)["recall"]
    low, high = performance.performance_interval(known, "recall", 0.9, sampling=False,
                                                 rng=np.random.default_rng(1))
    assert low <= truth <= high and low <= filled <= high
    # The fill-in, from the noise's distribution directly: P(n) ~ P(n + noise <= 24).
    z = np.arange(-300, 301)
    noise = (1 - ALPHAS["count"]) / (1 + ALPHAS["count"]) * ALPHAS["count"] ** np.abs(z)
    n = np.arange(200)
    chance = np.array([noise[z <= 24 - k].sum() for k in n])
    mean = float(n @ chance / chance.sum())
    assert 12 < mean < 12.5
    count[-1], score_sum[-1] = mean, mean * 0.975
    stated = performance.ScoreHistogram(EDGES, count, score_sum, ALPHAS, SCALE)
    assert performance.expected_performance(known, 0.9) == pytest.approx(
        performance.expected_performance(stated, 0.9), abs=1e-12)


def test_all_intervals_at_once_equal_one_at_a_time(current: pd.DataFrame) -> None:
    h = release(*exact_cube(current["score"].to_numpy()), np.random.default_rng(5))
    together = performance.performance_intervals(h, 0.5, rng=np.random.default_rng(6))
    for metric in performance.METRICS:
        assert together[metric] == performance.performance_interval(
            h, metric, 0.5, rng=np.random.default_rng(6))


# Coverage: a nominal 90% interval must cover its target in 85% to 95% of releases. Over
# TRIALS releases, an observed count of covering intervals passes when it lies between the
# binomial 1% quantiles of the two ends: a method whose true coverage is anywhere in
# [0.85, 0.95] passes with probability >= 99% per case, while 75% coverage (225 of 300) or
# 99% (297 of 300) fails (asserted below).
TRIALS = 300


def passing_counts(trials: int) -> tuple[int, int]:
    return int(stats.binom.ppf(0.01, trials, 0.85)), int(stats.binom.isf(0.01, trials, 0.95))


def test_intervals_cover_in_85_to_95_percent(current: pd.DataFrame) -> None:
    """Nominal 90%, every metric at a threshold of 0.5, under the policy's suppression (min
    cohort 25: the top bin of 6 rows is always suppressed, the next of 28 often). Targets:
    the population's expected metric when each trial draws a new sample (rows resampled
    from the window) and new noise; the pre-noise value of one table when only the noise is
    new. Both include the rows of suppressed bins, which the intervals fill in (see
    ``performance_interval``); left empty, recall and F1 pre-noise covered only ~0.78 and
    ~0.80."""
    low_ok, high_ok = passing_counts(TRIALS)
    assert not low_ok <= round(0.75 * TRIALS) <= high_ok
    assert not low_ok <= round(0.99 * TRIALS) <= high_ok
    population = current["score"].to_numpy()
    count, score_sum = exact_cube(population)
    exact = performance.ScoreHistogram(EDGES, count, score_sum, ALPHAS, SCALE)
    targets = {True: row_level(population, 0.5),
               False: performance.expected_performance(exact, 0.5)}
    rng = np.random.default_rng(2)
    hits = {(m, sampling): 0 for m in performance.METRICS for sampling in targets}
    for _ in range(TRIALS):
        sample = exact_cube(rng.choice(population, population.size))
        for sampling, target in targets.items():
            h = release(*(sample if sampling else (count, score_sum)), rng)
            for metric, (lo, hi) in performance.performance_intervals(
                    h, 0.5, rng=rng, sampling=sampling).items():
                hits[metric, sampling] += lo <= target[metric] <= hi
    assert all(low_ok <= v <= high_ok for v in hits.values()), (hits, low_ok, high_ok)


def test_bad_input_is_refused_with_a_clear_message() -> None:
    h = performance.ScoreHistogram(EDGES, np.ones(20), np.ones(20) / 2, ALPHAS, SCALE)
    with pytest.raises(ValueError, match=r"^threshold 0\.52 is not a bin edge") as err:
        performance.expected_performance(h, 0.52)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="is outside the bin edges|not a bin edge"):
        performance.performance_interval(h, "accuracy", 0.33)
    with pytest.raises(ValueError, match="unknown metric"):
        performance.performance_interval(h, "auc", 0.5)
    with pytest.raises(ValueError, match=r"count has shape \(21,\), expected \(20,\)"):
        performance.ScoreHistogram(EDGES, np.ones(21), np.ones(20), ALPHAS, SCALE)
    with pytest.raises(ValueError, match="alphas"):
        performance.ScoreHistogram(EDGES, np.ones(20), np.ones(20), {"count": 0.5}, SCALE)
