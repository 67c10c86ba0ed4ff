"""Drift statistics from noisy histograms: scipy oracles, planted drift, coverage, bad input."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from pdebug_jupyter.metrics import drift
from pdebug_jupyter.metrics._bootstrap import geometric_noise
from pdebug_jupyter.synth import GROUND_TRUTH, loans_frame

# the policy of make_loans: public bins and categories, values clipped to the bounds
EDGES = {"age": np.array([18, 25, 35, 45, 55, 65, 90.0]), "income": np.linspace(0, 200_000, 11)}
CATEGORIES = {"sex": ("female", "male"), "region": ("north", "south", "east", "west")}
COLUMNS = ("age", "income", "sex", "region")
N = 50_000
ALPHA_EPS1 = math.exp(-1 / len(COLUMNS))  # epsilon 1 split over the columns; sensitivity 1
MIN_COHORT = 25
PLANTED = {"age", "income"}


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Left-closed bins, the last one closed, after clipping to the outer edges."""
    return np.asarray(np.digitize(np.clip(values, edges[0], edges[-1]), edges[1:-1]))


def cell_counts(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Exact (2, cells) counts, reference then current, "other" last."""
    if column in EDGES:
        cells = bin_index(frame[column].to_numpy(), EDGES[column])  # never missing here
    else:
        codes = pd.Index(CATEGORIES[column]).get_indexer(pd.Index(frame[column]))
        cells = np.where(codes < 0, len(CATEGORIES[column]), codes)
    k = len(EDGES[column]) if column in EDGES else len(CATEGORIES[column]) + 1
    current = (frame["window"] == "current").to_numpy()
    return np.stack([np.bincount(cells[current == c], minlength=k) for c in (False, True)]
                    ).astype(float)


def noisy(exact: dict[str, np.ndarray], alpha: float, rng: np.random.Generator,
          min_cohort: int = MIN_COHORT) -> list[drift.DriftHistogram]:
    """What the service would release: geometric noise, then noisy-count suppression."""
    hists = []
    for column, counts in exact.items():
        released = counts + geometric_noise(alpha, counts.shape, rng)
        released[released < min_cohort] = np.nan
        edges = EDGES.get(column)
        labels = (tuple(f"bin{i}" for i in range(len(edges) - 1)) if edges is not None
                  else CATEGORIES[column]) + ("other",)
        hists.append(drift.DriftHistogram(column, labels, edges, released[0], released[1],
                                          alpha))
    return hists


def release(frame: pd.DataFrame, alpha: float, rng: np.random.Generator,
            min_cohort: int = MIN_COHORT) -> list[drift.DriftHistogram]:
    return noisy({c: cell_counts(frame, c) for c in COLUMNS}, alpha, rng, min_cohort)


@pytest.fixture(scope="module")
def frames() -> dict[bool, pd.DataFrame]:
    return {problems: loans_frame(N, 0, problems=problems) for problems in (True, False)}


def drifted(table: pd.DataFrame) -> set[str]:
    return set(table.loc[table["drifted"], "column"])


@pytest.mark.parametrize("problems", [True, False])
def test_statistics_match_scipy_on_the_binned_data(frames: dict[bool, pd.DataFrame],
                                                   problems: bool) -> None:
    frame = frames[problems]
    hists = release(frame, math.exp(-1e6), np.random.default_rng(0), min_cohort=0)
    for h in hists:
        ref, cur = cell_counts(frame, h.column)
        p, q = ref / ref.sum(), cur / cur.sum()
        fp, fq = np.where(p > 0, p, 1e-4), np.where(q > 0, q, 1e-4)
        assert drift.psi(h) == pytest.approx(np.sum((fp - fq) * np.log(fp / fq)), abs=1e-3)
        assert drift.js_distance(h) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-3)
        hell = math.sqrt(1 - np.sum(np.sqrt(p * q)))
        assert drift.hellinger(h) == pytest.approx(hell, abs=1e-3)
        kept = (ref + cur) > 0
        chi2, chi2_p = stats.chi2_contingency(np.stack([ref, cur])[:, kept], correction=False)[:2]
        assert drift.chi_square(h) == pytest.approx((chi2, chi2_p), abs=1e-3)
        if h.edges is None:
            assert math.isnan(drift.wasserstein(h)) and math.isnan(drift.ks(h)[0])
            continue
        # every raw value replaced by its bin's midpoint
        mids = (h.edges[:-1] + h.edges[1:]) / 2
        window = frame["window"].to_numpy()
        x = mids[bin_index(frame.loc[window == "reference", h.column].to_numpy(), h.edges)]
        y = mids[bin_index(frame.loc[window == "current", h.column].to_numpy(), h.edges)]
        oracle = stats.ks_2samp(x, y, method="asymp")
        assert drift.ks(h) == pytest.approx((oracle.statistic, oracle.pvalue), abs=1e-3)
        w1 = stats.wasserstein_distance(x, y)
        assert drift.wasserstein(h) == pytest.approx(w1, abs=1e-3)
        assert drift.wasserstein_norm(h) == pytest.approx(w1 / np.std(x), abs=1e-3)


def test_planted_drift_is_flagged_and_the_control_is_not(
        frames: dict[bool, pd.DataFrame]) -> None:
    rng = np.random.default_rng(1)
    planted = drift.drift_table(release(frames[True], 0.0, rng), rng=rng)
    control = drift.drift_table(release(frames[False], 0.0, rng), rng=rng)
    assert drifted(planted) == PLANTED
    assert PLANTED.isdisjoint(GROUND_TRUTH["drift"]["not_drifting"])  # type: ignore[index]
    assert drifted(control) == set()
    assert list(planted["method"]) == ["wasserstein_norm", "wasserstein_norm", "js", "js"]
    assert drift.drifted_share(planted) == 0.5 and drift.dataset_drifted(planted)
    assert drift.drifted_share(control) == 0.0 and not drift.dataset_drifted(control)
    age = planted.set_index("column").loc["age"]
    assert age["low"] <= age["statistic"] <= age["high"]
    assert age["low"] >= drift.DEFAULT_THRESHOLDS["wasserstein_norm"]


def test_conclusions_hold_at_epsilon_one_in_most_trials() -> None:
    """20 trials (5 tables x 4 releases) at epsilon 1 over 4 columns and min cohort 25."""
    rng = np.random.default_rng(2)
    right = {True: 0, False: 0}
    for seed in range(1, 6):
        for problems in (True, False):
            frame = loans_frame(N, seed, problems=problems)
            exact = {c: cell_counts(frame, c) for c in COLUMNS}
            for _ in range(4):
                table = drift.drift_table(noisy(exact, ALPHA_EPS1, rng), rng=rng)
                right[problems] += drifted(table) == (PLANTED if problems else set())
    assert right[True] >= 18 and right[False] >= 18, right


def test_small_reference_decides_with_p_values_as_evidently_does() -> None:
    frame = loans_frame(1_600, 3)
    table = drift.drift_table(release(frame, 0.0, np.random.default_rng(3)),
                              rng=np.random.default_rng(4))
    assert list(table["method"]) == ["ks_pvalue", "ks_pvalue", "chi2_pvalue", "chi2_pvalue"]
    age = table.set_index("column").loc["age"]
    assert age["drifted"] and age["high"] < 0.05


def coverage(make: Callable[[np.random.Generator], drift.DriftHistogram], target: float,
             method: str, sampling: bool, seed: int, trials: int = 200) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        lo, hi = drift.drift_interval(make(rng), method, rng=rng, sampling=sampling)
        hits += lo <= target <= hi
    return hits / trials


@pytest.mark.parametrize("method", ["psi", "js", "wasserstein_norm"])
def test_intervals_cover_in_85_to_95_percent(frames: dict[bool, pd.DataFrame],
                                             method: str) -> None:
    """Nominal 90%: the population value (new sample and new noise per trial) and the
    pre-noise value of one table (new noise only), for the drifted age column."""
    ref, cur = cell_counts(frames[True], "age")
    labels = tuple(f"bin{i}" for i in range(6)) + ("other",)

    def histogram(r: np.ndarray, c: np.ndarray, rng: np.random.Generator) -> drift.DriftHistogram:
        noisy = np.stack([r, c]) + geometric_noise(ALPHA_EPS1, (2, r.size), rng)
        noisy[noisy < MIN_COHORT] = np.nan
        return drift.DriftHistogram("age", labels, EDGES["age"], noisy[0], noisy[1], ALPHA_EPS1)

    exact = drift.DriftHistogram("age", labels, EDGES["age"], ref, cur, 0.0)
    target = {"psi": drift.psi, "js": drift.js_distance,
              "wasserstein_norm": drift.wasserstein_norm}[method](exact)

    def new_sample(rng: np.random.Generator) -> drift.DriftHistogram:
        r = rng.multinomial(int(ref.sum()), ref / ref.sum()).astype(float)
        c = rng.multinomial(int(cur.sum()), cur / cur.sum()).astype(float)
        return histogram(r, c, rng)

    population = coverage(new_sample, target, method, True, seed=5)
    noise_only = coverage(lambda rng: histogram(ref, cur, rng), target, method, False, seed=6)
    assert 0.85 <= population <= 0.95 and 0.85 <= noise_only <= 0.95, (population, noise_only)


def test_suppressed_cells_count_as_zero_and_other_stays_out_of_the_number_line() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    labels = ("a", "b", "c", "other")
    ref = np.array([50.0, 30.0, 20.0, 0.0])
    base = drift.DriftHistogram("x", labels, edges, ref, np.array([20.0, 30.0, 50.0, 0.0]), 0.0)
    extra = drift.DriftHistogram("x", labels, edges, ref, np.array([20.0, 30.0, 50.0, 40.0]), 0.0)
    hidden = drift.DriftHistogram("x", labels, edges, ref, np.array([20.0, 30.0, 50.0, np.nan]),
                                  0.0)
    assert drift.wasserstein(extra) == pytest.approx(drift.wasserstein(base)) == pytest.approx(0.6)
    assert drift.ks(extra)[0] == pytest.approx(drift.ks(base)[0]) == pytest.approx(0.3)
    assert drift.psi(extra) > drift.psi(base)
    assert drift.psi(hidden) == drift.psi(base) and drift.js_distance(hidden) == drift.js_distance(base)


def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="current has shape"):
        drift.DriftHistogram("x", ("a", "other"), None, np.ones(2), np.ones(3), 0.5)
    with pytest.raises(ValueError, match="edges must be 3 increasing"):
        drift.DriftHistogram("x", ("a", "b", "other"), np.array([0.0, 1.0]), np.ones(3),
                             np.ones(3), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        drift.DriftHistogram("x", ("a", "other"), None, np.ones(2), np.ones(2), 1.0)
    cat = drift.DriftHistogram("x", ("a", "b", "other"), None, np.ones(3), np.ones(3), 0.5)
    with pytest.raises(ValueError, match="needs a numeric column"):
        drift.drift_table([cat], method="wasserstein_norm")
    with pytest.raises(ValueError, match="unknown drift method"):
        drift.drift_interval(cat, "kl")
    assert math.isnan(drift.drifted_share(drift.drift_table([])))
