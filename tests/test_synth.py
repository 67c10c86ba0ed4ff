"""The synthetic loans table: shape, determinism, files, and the planted problems."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pdebug_jupyter.synth import GROUND_TRUTH, LoansFiles, loans_frame, make_loans
from pdebug_jupyter.synth import loans as loans_module

N = 40_000
SEED = 7
STRING_COLUMNS = ["customer_id", "name", "email", "ssn", "phone", "sex", "region", "window"]
SSN = re.compile(r"9\d\d-\d\d-\d{4}")
EMAIL = re.compile(r"[a-z]+\.[a-z]+\.\d{8}@example\.com")
PHONE = re.compile(r"\+1-555-01\d\d-\d{4}")
CUSTOMER_ID = re.compile(r"C\d{8}")


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return loans_frame(N, SEED)


@pytest.fixture(scope="module")
def control() -> pd.DataFrame:
    return loans_frame(N, SEED, problems=False)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> LoansFiles:
    return make_loans(20_000, 3, tmp_path_factory.mktemp("loans") / "demo")


def truth(*keys: str) -> Any:
    value: Any = GROUND_TRUTH
    for key in keys:
        value = value[key]
    return value


def ece(frame: pd.DataFrame, bins: int = 10) -> float:
    """Expected calibration error over equal-width score bins (a binned reliability diagram)."""
    b = np.minimum((frame["score"] * bins).astype(int), bins - 1)
    grouped = frame.groupby(b)
    gaps = (grouped["default"].mean() - grouped["score"].mean()).abs()
    return float((grouped.size() / len(frame) * gaps).sum())


def selection_gap(frame: pd.DataFrame) -> float:
    selected = frame["score"] >= 0.5
    return float(selected[frame.sex == "female"].mean() - selected[frame.sex == "male"].mean())


def weak_cohort(frame: pd.DataFrame) -> pd.Series:
    return (frame.region == "east") & (frame.age >= 18) & (frame.age < 25)


def error_rates(frame: pd.DataFrame) -> tuple[float, float]:
    errors = (frame["score"] >= 0.5).astype(int) != frame["default"]
    weak = weak_cohort(frame)
    return float(errors[weak].mean()), float(errors[~weak].mean())


def window_means(frame: pd.DataFrame, column: str) -> tuple[float, float]:
    means = frame.groupby("window")[column].mean()
    return float(means["reference"]), float(means["current"])


# --- shape and determinism ---------------------------------------------------------------


def test_columns_types_and_domains(planted: pd.DataFrame) -> None:
    assert list(planted.columns) == [field.name for field in loans_module.SCHEMA]
    assert len(planted) == N
    for column in STRING_COLUMNS:
        assert pd.api.types.is_string_dtype(planted[column]), column
    assert planted["age"].dtype == np.int64
    assert planted["default"].dtype == np.int64
    assert planted["income"].dtype == np.float64
    assert planted["score"].dtype == np.float64
    assert set(planted.sex) == {"female", "male", "unknown"}
    assert set(planted.region) == {"north", "south", "east", "west", "central"}
    assert set(planted["default"]) == {0, 1}
    assert planted.score.between(0, 1).all()
    assert (planted.income >= 0).all()
    assert planted.age.between(18, 105).all()
    assert 0.17 < planted["default"].mean() < 0.23


def test_window_splits_rows_in_half_by_index(planted: pd.DataFrame) -> None:
    assert (planted.window.iloc[: N // 2] == "reference").all()
    assert (planted.window.iloc[N // 2 :] == "current").all()


def test_identifiers_are_well_formed_and_unique(planted: pd.DataFrame) -> None:
    assert planted.customer_id.iloc[0] == "C00000001"
    assert planted.customer_id.iloc[-1] == f"C{N:08d}"
    assert planted.customer_id.is_unique and planted.ssn.is_unique and planted.email.is_unique
    assert planted.customer_id.str.fullmatch(CUSTOMER_ID.pattern).all()
    assert planted.ssn.str.fullmatch(SSN.pattern).all()
    assert planted.email.str.fullmatch(EMAIL.pattern).all()
    assert planted.phone.str.fullmatch(PHONE.pattern).all()
    first_last = planted.name.str.lower().str.replace(" ", ".", regex=False) + "."
    assert all(e.startswith(p) for e, p in zip(planted.email, first_last, strict=True))
    assert 3_000 < planted.name.nunique() <= 100 * 100


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    first = loans_frame(5_000, 11)
    pd.testing.assert_frame_equal(first, loans_frame(5_000, 11))
    other = loans_frame(5_000, 12)
    assert (first.customer_id == other.customer_id).all()  # ids are row numbers
    for column in ("name", "email", "ssn", "age", "income", "score"):
        assert (first[column] != other[column]).mean() > 0.5, column


def test_control_has_the_same_people_and_reference_rows(
    planted: pd.DataFrame, control: pd.DataFrame
) -> None:
    for column in ("customer_id", "name", "email", "ssn", "phone", "sex", "region", "window"):
        assert (planted[column] == control[column]).all(), column
    reference = slice(0, N // 2)
    assert (planted.age.iloc[reference] == control.age.iloc[reference]).all()
    assert (planted.income.iloc[reference] == control.income.iloc[reference]).all()


def test_chunked_generation_is_deterministic_and_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loans_module, "CHUNK_ROWS", 3_000)
    files = make_loans(10_000, 5, tmp_path)
    parquet = pq.ParquetFile(files.data)
    assert parquet.metadata.num_row_groups == 4
    pd.testing.assert_frame_equal(parquet.read().to_pandas(), loans_frame(10_000, 5))
    canaries = files.canaries.read_text().splitlines()
    assert canaries == make_loans(10_000, 5, tmp_path / "again").canaries.read_text().splitlines()
    # rows were sampled from every chunk, not only the first
    ids = sorted(int(value[1:]) for value in canaries if CUSTOMER_ID.fullmatch(value))
    assert len(ids) == 200 and ids[0] <= 3_000 and ids[-1] > 9_000


# --- files -----------------------------------------------------------------------------


def test_parquet_holds_the_frame(written: LoansFiles) -> None:
    assert written.data.name == "loans.parquet" and written.data.parent.is_dir()
    table = pq.read_table(written.data)
    pd.testing.assert_frame_equal(table.to_pandas(), loans_frame(20_000, 3))
    assert not list(written.data.parent.glob("*.partial"))


def test_policy_has_the_documented_shape(written: LoansFiles) -> None:
    policy = tomllib.loads(written.policy.read_text(encoding="utf-8"))
    assert policy["service"] == {"ledger": "ledger.sqlite", "retention_days": 365}
    assert policy["users"] == [
        {"name": "alice", "role": "analyst", "token": "env:PDEBUG_TOKEN_ALICE"},
        {"name": "olivia", "role": "owner", "token": "env:PDEBUG_TOKEN_OLIVIA"},
        {"name": "victor", "role": "viewer", "token": "env:PDEBUG_TOKEN_VICTOR"},
        {"name": "audrey", "role": "auditor", "token": "env:PDEBUG_TOKEN_AUDREY"},
    ]
    dataset = policy["datasets"]["loans"]
    columns = dataset.pop("columns")
    assert dataset == {
        "source": "loans.parquet",
        "backend": "duckdb",
        "privacy_unit": "customer_id",
        "max_rows_per_unit": 1,
        "epsilon_per_user": 5.0,
        "epsilon_total": 20.0,
        "min_cohort": 25,
        "model_version": "credit-risk-gbm 2.3.1 (synthetic)",
        "preprocessing": "synthetic demo data generated by "
        "pdebug_jupyter.synth.make_loans(n=20000, seed=3, problems=True)",
        "synthetic": True,
    }
    assert (written.policy.parent / dataset["source"]).samefile(written.data)
    assert columns == {
        **{c: {"kind": "identifier"} for c in ("customer_id", "name", "email", "ssn", "phone")},
        "age": {"kind": "numeric", "bounds": [18, 90], "bins": [18, 25, 35, 45, 55, 65, 90]},
        "income": {"kind": "numeric", "bounds": [0, 200000], "bins": 10},
        "sex": {"kind": "protected", "categories": ["female", "male"]},
        "region": {"kind": "categorical", "categories": ["north", "south", "east", "west"]},
        "default": {"kind": "label"},
        "score": {"kind": "score"},
        "window": {"kind": "split", "categories": ["reference", "current"]},
    }


def test_policy_takes_budgets_users_and_name(tmp_path: Path) -> None:
    users = [{"name": 'q"uote\\', "role": "owner", "token": "env:X\nY\x7f"}]
    files = make_loans(
        500, 1, tmp_path, name="credit_2", epsilon_per_user=0.5, epsilon_total=3,
        min_cohort=40, max_rows_per_unit=2, users=users,
    )  # fmt: skip
    assert files.data == tmp_path / "credit_2.parquet"
    policy = tomllib.loads(files.policy.read_text(encoding="utf-8"))
    assert policy["users"] == users
    dataset = policy["datasets"]["credit_2"]
    assert dataset["source"] == "credit_2.parquet"
    assert (dataset["epsilon_per_user"], dataset["epsilon_total"]) == (0.5, 3.0)
    assert (dataset["min_cohort"], dataset["max_rows_per_unit"]) == (40, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fmt": "json"},
        {"name": "../escape"},
        {"name": ""},
        {"n": 0},
        {"seed": -1},
        {"epsilon_per_user": 0.0},
        {"epsilon_total": math.inf},
        {"min_cohort": 0},
        {"max_rows_per_unit": True},
        {"users": [{"name": "a", "role": "owner"}]},
        {"users": [{"name": "a", "role": "owner", "token": "t", "extra": "x"}]},
    ],
)
def test_bad_arguments_are_rejected_before_writing(tmp_path: Path, kwargs: Any) -> None:
    with pytest.raises(ValueError):
        make_loans(**{"n": 100, "path": tmp_path / "out", **kwargs})
    assert not (tmp_path / "out").exists()


def test_canaries_are_personal_values_from_the_table(written: LoansFiles) -> None:
    lines = written.canaries.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(set(lines))
    frame = pq.read_table(written.data).to_pandas()
    by_kind = {
        "customer_id": [v for v in lines if CUSTOMER_ID.fullmatch(v)],
        "ssn": [v for v in lines if SSN.fullmatch(v)],
        "email": [v for v in lines if EMAIL.fullmatch(v)],
        "phone": [v for v in lines if PHONE.fullmatch(v)],
        "name": [v for v in lines if re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", v)],
    }
    assert sum(len(values) for values in by_kind.values()) == len(lines)
    for column, values in by_kind.items():
        assert set(values) <= set(frame[column]), column
    for column in ("customer_id", "ssn", "email", "phone"):
        assert len(by_kind[column]) == 200, column
    assert 150 < len(by_kind["name"]) <= 200
    sampled = frame[frame.customer_id.isin(by_kind["customer_id"])]
    assert set(sampled.ssn) == set(by_kind["ssn"]) and set(sampled.name) == set(by_kind["name"])


def test_csv_format_holds_the_same_table(tmp_path: Path) -> None:
    files = make_loans(3_000, 2, tmp_path, fmt="csv", problems=False)
    assert files.data == tmp_path / "loans.csv"
    policy = tomllib.loads(files.policy.read_text(encoding="utf-8"))
    assert policy["datasets"]["loans"]["source"] == "loans.csv"
    assert "problems=False" in policy["datasets"]["loans"]["preprocessing"]
    read = pd.read_csv(files.data, dtype={"customer_id": str})
    expected = loans_frame(3_000, 2, problems=False)
    pd.testing.assert_frame_equal(read, expected, check_dtype=False)
    assert read["age"].dtype == np.int64 and read["income"].dtype == np.float64


# --- out-of-domain values ----------------------------------------------------------------


def test_undeclared_categories_and_out_of_bounds_values_are_rare(
    planted: pd.DataFrame, control: pd.DataFrame
) -> None:
    for frame in (planted, control):
        assert 0.0015 < (frame.sex == "unknown").mean() < 0.006
        assert 0.006 < (frame.region == "central").mean() < 0.015
        assert 0.001 < (frame.age > 90).mean() < 0.0035
        assert frame.age[frame.age > 90].between(91, 105).all()
        assert 0.002 < (frame.income > 200_000).mean() < 0.012
        reference = frame[frame.window == "reference"]
        assert reference.income.median() == pytest.approx(50_000, abs=1_500)


# --- planted problems --------------------------------------------------------------------


def test_female_scores_are_miscalibrated_and_male_scores_are_not(planted: pd.DataFrame) -> None:
    female = planted[planted.sex == "female"]
    male = planted[planted.sex == "male"]
    assert ece(female) == pytest.approx(
        truth("miscalibration", "ece_10_equal_bins", "female"), abs=0.015
    )
    assert ece(male) < 0.015
    # Overconfident: the highest-scored women default far less often than their scores say.
    top = female[female.score >= 0.7]
    assert top["default"].mean() < top.score.mean() - 0.1


def test_female_labels_follow_the_documented_formula(planted: pd.DataFrame) -> None:
    slope = truth("miscalibration", "slope")
    shift = truth("miscalibration", "shift")
    female = planted[(planted.sex == "female") & ~weak_cohort(planted)]
    logit = np.log(female.score / (1 - female.score))
    expected = 1 / (1 + np.exp(-slope * (logit - shift)))
    bins = pd.qcut(female.score, 5, labels=False)
    observed = female["default"].groupby(bins).mean()
    predicted = expected.groupby(bins).mean()
    standard_error = np.sqrt(predicted * (1 - predicted) / bins.value_counts().sort_index())
    assert ((observed - predicted).abs() < 4 * standard_error + 0.005).all()
    # and the uncorrected scores are far off in the top fifth
    assert female.score[bins == 4].mean() - observed[4] > 0.05


def test_control_is_calibrated_for_everyone(control: pd.DataFrame) -> None:
    assert ece(control[control.sex == "female"]) < 0.015
    assert ece(control[control.sex == "male"]) < 0.015


def test_parity_gap_is_about_five_points(planted: pd.DataFrame, control: pd.DataFrame) -> None:
    assert truth("parity_gap", "expected") == pytest.approx(0.05, abs=0.002)
    assert selection_gap(planted) == pytest.approx(0.05, abs=0.015)
    assert abs(selection_gap(control)) < 0.015


def test_age_and_income_drift_only_when_planted(planted: pd.DataFrame, control: pd.DataFrame) -> None:
    ref, cur = window_means(planted, "age")
    assert cur - ref == pytest.approx(truth("drift", "age", "expected_mean_shift"), abs=0.6)
    ref, cur = window_means(planted, "income")
    assert cur / ref == pytest.approx(truth("drift", "income", "expected_mean_ratio"), abs=0.03)
    ref, cur = window_means(control, "age")
    assert abs(cur - ref) < 0.6
    ref, cur = window_means(control, "income")
    assert abs(cur / ref - 1) < 0.03


def test_sex_and_region_do_not_drift(planted: pd.DataFrame) -> None:
    for column in truth("drift", "not_drifting"):
        shares = pd.crosstab(planted[column], planted.window, normalize="columns")
        assert (shares["current"] - shares["reference"]).abs().max() < 0.02, column


def test_weak_cohort_errs_far_more_often(planted: pd.DataFrame, control: pd.DataFrame) -> None:
    cohort, rest = error_rates(planted)
    assert weak_cohort(planted).sum() > 500
    assert cohort == pytest.approx(truth("weak_cohort", "error_rate_at_0.5", "cohort"), abs=0.06)
    assert cohort - rest > 0.12
    cohort, rest = error_rates(control)
    assert cohort - rest < 0.08


def test_ground_truth_is_read_only_and_names_the_planted_parameters() -> None:
    assert set(GROUND_TRUTH) >= {"miscalibration", "parity_gap", "drift", "weak_cohort"}
    assert truth("miscalibration", "slope") == 0.6
    assert truth("weak_cohort", "label_flip_rate") == 0.3
    assert truth("drift", "income", "current_factor") == 1.15
    assert truth("weak_cohort", "filter") == {"region": "east", "age_from": 18, "age_below": 25}
    assert isinstance(truth("drift"), Mapping)
    with pytest.raises(TypeError):
        truth("drift")["age"] = 0
