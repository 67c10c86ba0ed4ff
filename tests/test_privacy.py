"""Differential privacy of cubes: the geometric mechanism's distribution, OS randomness,
suppression on the noisy count, the epsilon split and sensitivities."""

from __future__ import annotations

import ast
import inspect
import math
import secrets
from pathlib import Path

import numpy as np
import pytest
from diffprivlib.mechanisms import Geometric
from scipy import stats

import pdebug_jupyter
from pdebug_jupyter import privacy
from pdebug_jupyter.privacy import (
    CubeGeometric,
    Noise,
    geometric_noise,
    plan_noise,
    release,
    release_cube,
    sensitivity,
)
from pdebug_jupyter.query import Cube, Dimension, Measure, Query

PACKAGE = Path(pdebug_jupyter.__file__).parent
DRAWS = 20_000
# A goodness-of-fit test that a correct mechanism fails once in 10,000 runs.
P_MIN = 1e-4


def cube_query(measures: tuple[Measure, ...], *, epsilon: float = 0.5, cells: int = 2) -> Query:
    dim = Dimension("sex", categories=tuple(f"c{i}" for i in range(cells - 1)))
    return Query("histogram", "loans", epsilon, (Cube("histogram", (dim,), measures),), (), {})


def pmf(z: np.ndarray | int, alpha: float) -> np.ndarray:
    """P(Z = z) of the two-sided geometric distribution."""
    return (1 - alpha) / (1 + alpha) * alpha ** np.abs(z)


# -- the mechanism -----------------------------------------------------------------------------

@pytest.mark.parametrize("sens", [1, 3])
def test_geometric_noise_has_the_two_sided_geometric_distribution(sens: int) -> None:
    eps = 0.5
    alpha = math.exp(-eps / sens)
    noise = geometric_noise(np.zeros(DRAWS, dtype=np.int64), eps, sens)
    # one bucket per value z in [-k, k] with at least ~40 expected draws, plus two pooled tails
    k = 0
    while DRAWS * pmf(k + 1, alpha) >= 40:
        k += 1
    values = np.arange(-k, k + 1)
    tail = alpha ** (k + 1) / (1 + alpha)  # P(Z > k) = P(Z < -k)
    expected = DRAWS * np.concatenate([[tail], pmf(values, alpha), [tail]])
    observed = np.concatenate([[(noise < -k).sum()],
                               [(noise == v).sum() for v in values],
                               [(noise > k).sum()]])
    assert observed.sum() == DRAWS
    assert expected.sum() == pytest.approx(DRAWS)
    assert stats.chisquare(observed, expected).pvalue > P_MIN
    # mean 0 and the variance the release reports (Noise.sd), within 6 standard errors
    sd = Noise("count", eps, sens, alpha).sd
    assert abs(noise.mean()) < 6 * sd / math.sqrt(DRAWS)
    # the sample variance's standard error follows from the 4th moment, summed from the pmf
    support = np.arange(-2_000, 2_001)
    assert sd**2 == pytest.approx(float((support**2 * pmf(support, alpha)).sum()))
    fourth = float((support.astype(float) ** 4 * pmf(support, alpha)).sum())
    assert abs(noise.var() - sd**2) < 6 * math.sqrt((fourth - sd**4) / DRAWS)


def test_noise_is_integer_keeps_the_shape_and_adds_to_the_value() -> None:
    values = np.array([[0, 5, 10**12], [-3, 7, 1]], dtype=np.int64)
    noisy = geometric_noise(values, 200.0, 1)  # alpha = e^-200: no noise in practice
    assert noisy.dtype == np.int64 and noisy.shape == (2, 3)
    np.testing.assert_array_equal(noisy, values)
    rough = geometric_noise(values, 0.1, 1)
    assert rough.dtype == np.int64 and rough.shape == (2, 3)


def test_two_calls_draw_different_noise() -> None:
    zeros = np.zeros(1_000, dtype=np.int64)
    first, second = geometric_noise(zeros, 0.5, 1), geometric_noise(zeros, 0.5, 1)
    assert not np.array_equal(first, second)
    assert len(np.unique(first)) > 5


def test_no_caller_can_choose_a_seed() -> None:
    assert list(inspect.signature(geometric_noise).parameters) == [
        "values", "epsilon", "sensitivity"]
    for fn in (release, release_cube, plan_noise):
        names = set(inspect.signature(fn).parameters)
        assert not names & {"seed", "random_state", "rng", "random"}, fn.__name__


@pytest.mark.parametrize(("eps", "sens"), [(0.1, 1), (1.0, 3), (0.05, 20_000), (50.0, 1)])
def test_the_cube_sampler_is_diffprivlibs_geometric_value_for_value(eps: float, sens: int) -> None:
    """Seeded only here, in a test, to line the two up draw for draw: the vectorised sampler
    returns exactly what diffprivlib's own ``randomise`` returns for the same draws."""
    values = np.array([[0, 1, -7], [12_345, 10**9, 3]], dtype=np.int64)
    ours = CubeGeometric(epsilon=eps, sensitivity=sens, random_state=42).randomise_cube(values)
    theirs = Geometric(epsilon=eps, sensitivity=sens, random_state=42)
    assert ours.dtype == np.int64 and ours.shape == values.shape
    assert ours.tolist() == [[theirs.randomise(int(v)) for v in row] for row in values]


def test_the_cube_sampler_draws_from_the_operating_system() -> None:
    assert isinstance(CubeGeometric(epsilon=1.0, sensitivity=1)._rng, secrets.SystemRandom)


# The four the architecture names, and diffprivlib's other floating-point noise mechanisms.
FLOATING_MECHANISMS = {"Laplace", "LaplaceTruncated", "LaplaceBoundedDomain", "GaussianAnalytic",
                       "LaplaceFolded", "Gaussian"}


def names_used(tree: ast.AST) -> set[str]:
    """Every imported, bare and attribute name and every string constant in a module."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom | ast.Import):
            out |= {alias.name.split(".")[-1] for alias in node.names}
        elif isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.add(node.value)  # getattr(mechanisms, "Laplace") counts too
    return out


def test_no_floating_point_mechanism_is_used_anywhere_in_the_package() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "privacy" / "__init__.py" in files
    for file in files:
        used = names_used(ast.parse(file.read_text(), filename=str(file)))
        assert not used & FLOATING_MECHANISMS, (file, used & FLOATING_MECHANISMS)
    assert "Geometric" in names_used(ast.parse(inspect.getsource(privacy)))


def test_privacy_code_never_seeds_or_passes_a_random_state() -> None:
    seeding = {"seed", "default_rng", "RandomState", "SeedSequence", "Generator",
               "check_random_state"}
    for file in sorted((PACKAGE / "privacy").rglob("*.py")):
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword):
                assert node.arg not in ("random_state", "seed", "rng"), (file, node.lineno)
            if isinstance(node, ast.Attribute | ast.Name):
                name = node.attr if isinstance(node, ast.Attribute) else node.id
                assert name not in seeding, (file, node.lineno, name)
            if isinstance(node, ast.Attribute) and node.attr == "random":
                assert not (isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy")), \
                    (file, node.lineno)
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert "random" not in modules and "numpy.random" not in modules, file


# -- suppression on the noisy count (rule 5) ---------------------------------------------------

MIN_COHORT = 20
REPEATS = 400


def test_suppression_is_decided_on_the_noisy_count_not_the_true_count() -> None:
    query = cube_query((Measure("count"),), epsilon=0.5, cells=2)
    true = np.array([[MIN_COHORT], [MIN_COHORT - 1]], dtype=np.int64)
    at_threshold = below = 0
    for _ in range(REPEATS):
        released = release([true], query, 1, MIN_COHORT)[0]
        np.testing.assert_array_equal(released.suppressed,
                                      released.values[..., 0] < MIN_COHORT)
        at_threshold += int(released.suppressed[0])
        below += int(released.suppressed[1])
    # P(noise < 0) = a / (1 + a) = 0.38 at epsilon 0.5: a true count at the threshold is
    # often hidden and a true count just below it often shown
    assert 0.2 * REPEATS < at_threshold < 0.8 * REPEATS
    assert REPEATS - below > 0.2 * REPEATS


def test_the_suppression_mask_covers_every_measure_of_a_cell() -> None:
    measures = (Measure("count"), Measure("score", column="score", bounds=(0, 1), scale=1_000))
    query = cube_query(measures, epsilon=200.0, cells=3)  # practically no noise
    true = np.array([[1_000, 0], [0, 10**6], [5, 5]], dtype=np.int64)
    released = release([true], query, 1, MIN_COHORT)[0]
    assert released.suppressed.shape == query.cubes[0].shape == (3,)
    assert released.suppressed.dtype == np.bool_
    assert released.suppressed.tolist() == [False, True, True]  # only the count decides
    assert released.values.dtype == np.int64 and released.values.shape == (3, 2)
    assert released.threshold == MIN_COHORT


def test_a_minimum_cohort_of_zero_suppresses_nothing() -> None:
    query = cube_query((Measure("count"),), epsilon=0.1, cells=50)
    released = release([np.zeros((50, 1), dtype=np.int64)], query, 1, 0)[0]
    assert (released.values[..., 0] < 0).any()  # negative noisy counts are still shown
    assert not released.suppressed.any() and released.suppressed.shape == (50,)


def test_the_first_measure_of_a_cube_must_be_its_count() -> None:
    query = cube_query((Measure("score", column="score", bounds=(0, 1), scale=100),))
    with pytest.raises(ValueError, match="row count"):
        release([np.zeros((2, 1), dtype=np.int64)], query, 1, 0)


# -- epsilon split and sensitivity (rule 9) ----------------------------------------------------

def test_plan_noise_splits_epsilon_by_weight_and_scales_sensitivity_by_rows_per_unit() -> None:
    measures = (Measure("count", weight=1.0),
                Measure("score", column="score", bounds=(0, 1), scale=1_000, weight=3.0))
    (count, score), = plan_noise(cube_query(measures, epsilon=2.0), 3)
    assert (count.measure, count.epsilon, count.sensitivity) == ("count", 0.5, 3)
    assert (score.measure, score.epsilon, score.sensitivity) == ("score", 1.5, 3_000)
    assert count.epsilon + score.epsilon == pytest.approx(2.0)
    assert count.alpha == pytest.approx(math.exp(-0.5 / 3))
    assert score.alpha == pytest.approx(math.exp(-1.5 / 3_000))
    assert count.scale == pytest.approx(6.0) and score.scale == pytest.approx(2_000.0)


@pytest.mark.parametrize(("measure", "row"), [
    (Measure("count"), 1),
    (Measure("s", column="score", bounds=(0, 1), scale=1_000), 1_000),
    (Measure("s", column="income", bounds=(-2.5, 1.0), scale=10), 25),
    (Measure("s", column="income", bounds=(0, 200_000), scale=1), 200_000),
])
def test_sensitivity_is_rows_per_unit_times_the_largest_row_contribution(
        measure: Measure, row: int) -> None:
    assert measure.row_sensitivity == row
    assert sensitivity(measure, 1) == row
    assert sensitivity(measure, 3) == 3 * row


def test_released_noise_uses_the_planned_sensitivity() -> None:
    # with k = 50 rows per unit a count gets noise 50 times wider than with k = 1
    query = cube_query((Measure("count"),), epsilon=1.0, cells=2_000)
    zeros = np.zeros((2_000, 1), dtype=np.int64)
    narrow = release([zeros], query, 1, 0)[0]
    wide = release([zeros], query, 50, 0)[0]
    assert wide.noise[0].sensitivity == 50 and narrow.noise[0].sensitivity == 1
    assert np.abs(narrow.values).mean() < 2 < 10 < np.abs(wide.values).mean()


# -- the error the release reports -------------------------------------------------------------

def coverage(t: int, alpha: float) -> float:
    """Exact P(|Z| <= t) = 1 - 2 a^(t+1) / (1 + a)."""
    return 1 - 2 * alpha ** (t + 1) / (1 + alpha)


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.5, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("sens", [1, 3, 1_000])
@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99])
def test_half_width_is_the_smallest_t_covering_the_level(eps: float, sens: int,
                                                         level: float) -> None:
    noise = Noise("count", eps, sens, math.exp(-eps / sens))
    t = noise.half_width(level)
    assert coverage(t, noise.alpha) >= level
    assert t == 0 or coverage(t - 1, noise.alpha) < level
    if t < 5_000:  # the closed form agrees with the pmf summed over [-t, t]
        summed = float(pmf(np.arange(-t, t + 1), noise.alpha).sum())
        assert summed == pytest.approx(coverage(t, noise.alpha), abs=1e-9)


def test_half_width_defaults_to_95_percent_and_is_public() -> None:
    noise = plan_noise(cube_query((Measure("count"),), epsilon=0.5), 1)[0][0]
    t = noise.half_width()
    assert t == noise.half_width(0.95) == noise.public()["ci95_half_width"]
    assert coverage(t, noise.alpha) >= 0.95 > coverage(t - 1, noise.alpha)
    assert noise.public()["sd"] == pytest.approx(math.sqrt(2 * noise.alpha) / (1 - noise.alpha))
