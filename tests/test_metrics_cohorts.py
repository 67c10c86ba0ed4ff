"""Error cohorts from a noisy (count, errors) cube: pandas oracle, the planted weak cohort,
coverage, valid p-values under the null, bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pdebug_jupyter.metrics import cohorts
from pdebug_jupyter.metrics._bootstrap import geometric_noise
from pdebug_jupyter.synth import GROUND_TRUTH, loans_frame

AGE_EDGES = np.array([18, 25, 35, 45, 55, 65, 90.0])
AGE_LABELS = ("[18, 25)", "[25, 35)", "[35, 45)", "[45, 55)", "[55, 65)", "[65, 90]", "other")
CATEGORIES = {"region": ("north", "south", "east", "west"), "sex": ("female", "male")}
LABELS = {"region": CATEGORIES["region"] + ("other",), "age": AGE_LABELS,
          "sex": CATEGORIES["sex"] + ("other",)}
ALPHA = math.exp(-0.5)  # epsilon 1 split over count and errors, sensitivity 1
MIN_COHORT = 25
WEAK = {"region": "east", "age": "[18, 25)"}  # GROUND_TRUTH["weak_cohort"]


def cells(frame: pd.DataFrame, feature: str) -> pd.Series:
    """Each row's cell label on the policy's public domain."""
    if feature == "age":
        index = np.digitize(np.clip(frame["age"].to_numpy(), 18, 90), AGE_EDGES[1:-1])
        return pd.Series(np.asarray(AGE_LABELS)[index], index=frame.index)
    values = frame[feature].astype(object)
    return values.where(values.isin(CATEGORIES[feature]), "other")


def with_cells(frame: pd.DataFrame, features: tuple[str, ...]) -> pd.DataFrame:
    wrong = (frame["score"] >= 0.5).astype(int) != frame["default"]
    return pd.DataFrame({**{f: cells(frame, f) for f in features}, "wrong": wrong})


def exact_cube(frame: pd.DataFrame, features: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    data = with_cells(frame, features)
    index = tuple(pd.Index(LABELS[f]).get_indexer(pd.Index(data[f])) for f in features)
    shape = tuple(len(LABELS[f]) for f in features)
    count, errors = np.zeros(shape), np.zeros(shape)
    np.add.at(count, index, 1.0)
    np.add.at(errors, index, data["wrong"].to_numpy(dtype=float))
    return count, errors


def release(count: np.ndarray, errors: np.ndarray, features: tuple[str, ...], alpha: float,
            rng: np.random.Generator, min_cohort: int = MIN_COHORT) -> cohorts.CohortCube:
    n = count + geometric_noise(alpha, count.shape, rng)
    e = errors + geometric_noise(alpha, count.shape, rng)
    e[n < min_cohort] = np.nan
    n[n < min_cohort] = np.nan
    return cohorts.CohortCube(features, tuple(LABELS[f] for f in features), n, e,
                              {"count": alpha, "errors": alpha})


def is_weak(row: pd.Series) -> bool:
    return all(row[f] == v for f, v in WEAK.items())


@pytest.fixture(scope="module")
def frames() -> dict[bool, pd.DataFrame]:
    return {problems: loans_frame(50_000, 0, problems=problems) for problems in (True, False)}


def test_error_rates_match_pandas_groupby(frames: dict[bool, pd.DataFrame]) -> None:
    features = ("region", "age", "sex")
    frame = frames[True]
    cube = release(*exact_cube(frame, features), features, 0.0, np.random.default_rng(0),
                   min_cohort=1)
    oracle = with_cells(frame, features).groupby(list(features))["wrong"].agg(["mean", "size"])
    table = cohorts.error_table(cube, rng=np.random.default_rng(1)).set_index(list(features))
    assert len(table) == len(oracle)  # every non-empty cell is released, nothing else
    joined = table.join(oracle)
    assert np.allclose(joined["error_rate"], joined["mean"], atol=1e-12)
    assert np.array_equal(joined["count"], joined["size"])
    assert (joined["low"] <= joined["error_rate"] + 1e-12).all()
    heat = cohorts.heatmap(cube, "age", "region")
    pooled = with_cells(frame, ("age", "region")).pivot_table(
        index="age", columns="region", values="wrong", aggfunc="mean")
    pooled = pooled.reindex(index=list(LABELS["age"]), columns=list(LABELS["region"]))
    assert heat.index.name == "age" and list(heat.columns) == list(LABELS["region"])
    np.testing.assert_allclose(heat.to_numpy(), pooled.to_numpy(dtype=float), atol=1e-12)


def test_the_planted_weak_cohort_is_the_top_significant_cell(
        frames: dict[bool, pd.DataFrame]) -> None:
    features = ("region", "age")
    truth = GROUND_TRUTH["weak_cohort"]["error_rate_at_0.5"]  # type: ignore[index]
    rng = np.random.default_rng(2)
    planted = cohorts.error_table(release(*exact_cube(frames[True], features), features,
                                          0.0, rng), rng=rng)
    top = planted.iloc[0]
    assert is_weak(top) and top["significant"]
    assert top["low"] <= truth["cohort"] <= top["high"]
    control = cohorts.error_table(release(*exact_cube(frames[False], features), features,
                                          0.0, rng), rng=rng)
    weak = control[control.apply(is_weak, axis=1)].iloc[0]
    # in the control the cohort is only as weak as the other young cells
    assert weak["high"] < 0.3 < top["low"]


def test_the_weak_cohort_is_found_at_epsilon_one_in_most_trials() -> None:
    """20 trials (5 tables x 4 releases), min cohort 25."""
    features = ("region", "age")
    rng = np.random.default_rng(3)
    found = 0
    for seed in range(1, 6):
        exact = exact_cube(loans_frame(50_000, seed), features)
        for _ in range(4):
            table = cohorts.error_table(release(*exact, features, ALPHA, rng), rng=rng)
            found += bool(is_weak(table.iloc[0]) and table.iloc[0]["significant"])
    assert found >= 18, found


def test_intervals_cover_and_p_values_hold_their_level_under_the_null() -> None:
    """Every cell at the same error rate 0.18 (the null), counts like a real (region x age)
    cube; new sample and new noise per trial."""
    rng = np.random.default_rng(4)
    means = np.outer([0.25, 0.25, 0.245, 0.245, 0.01], [0.13, 0.25, 0.24, 0.2, 0.12, 0.06, 0.0])
    features = ("region", "age")
    covered, tested, rejected, any_significant = 0, 0, 0, 0
    trials = 200
    for _ in range(trials):
        count = rng.poisson(50_000 * means).astype(float)
        cube = release(count, rng.binomial(count.astype(int), 0.18).astype(float), features,
                       ALPHA, rng)
        table = cohorts.error_table(cube, rng=rng)
        covered += int(table["low"].le(0.18).mul(table["high"].ge(0.18)).sum())
        p = table["p_value"].dropna()
        tested, rejected = tested + len(p), rejected + int((p < 0.05).sum())
        any_significant += bool(table["significant"].any())
    assert 0.85 <= covered / tested <= 0.95
    assert 0.03 <= rejected / tested <= 0.07
    assert any_significant / trials <= 0.15  # BH at 0.1 under the global null


def test_suppressed_cells_are_not_listed_and_pool_as_empty() -> None:
    count = np.array([[100.0, np.nan], [50.0, 80.0]])
    errors = np.array([[10.0, np.nan], [25.0, -3.0]])
    cube = cohorts.CohortCube(("a", "b"), (("x", "other"), ("y", "other")), count, errors,
                              {"count": 0.5, "errors": 0.5})
    table = cohorts.error_table(cube, rng=np.random.default_rng(5))
    assert len(table) == 3 and table["errors"].min() == 0.0  # clipped at 0
    heat = cohorts.heatmap(cube, "b", "a")
    assert np.isnan(heat.to_numpy()[1, 0])  # ("other", "x"): nothing released there
    assert heat.loc["y", "other"] == pytest.approx(0.5)


def test_bad_input_is_refused_with_a_clear_message() -> None:
    labels = (("x", "other"), ("y", "z", "other"))
    alphas = {"count": 0.5, "errors": 0.5}
    with pytest.raises(ValueError, match=r"errors has shape \(2, 2\), expected \(2, 3\)"):
        cohorts.CohortCube(("a", "b"), labels, np.ones((2, 3)), np.ones((2, 2)), alphas)
    with pytest.raises(ValueError, match="one tuple of labels per feature"):
        cohorts.CohortCube(("a",), labels, np.ones((2, 3)), np.ones((2, 3)), alphas)
    with pytest.raises(ValueError, match="alphas"):
        cohorts.CohortCube(("a", "b"), labels, np.ones((2, 3)), np.ones((2, 3)), {"count": 0.5})
    cube = cohorts.CohortCube(("a", "b"), labels, np.ones((2, 3)), np.ones((2, 3)), alphas)
    with pytest.raises(ValueError, match="two different features"):
        cohorts.heatmap(cube, "a", "a")
