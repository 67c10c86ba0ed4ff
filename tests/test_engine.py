"""The engine's TRUE cubes (before noise): domains from the policy, clipping, the ``other``
cell, contribution bounding once per dataset version, sources, and canonical queries.

Expected counts are computed independently with pandas/numpy from the same file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import policy_copy

from pdebug_jupyter.engine import Engine, EngineError
from pdebug_jupyter.engine.compile import query_expression
from pdebug_jupyter.policy import DatasetPolicy, Policy, load_policy
from pdebug_jupyter.query import Measure, Query, QueryError, build_query
from pdebug_jupyter.synth.loans import loans_frame

COLUMNS = {
    "customer_id": '{ kind = "identifier" }',
    "name": '{ kind = "identifier" }',
    "age": '{ kind = "numeric", bounds = [18, 90], bins = [18, 25, 35, 45, 55, 65, 90] }',
    "income": '{ kind = "numeric", bounds = [0, 200000], bins = 10 }',
    "sex": '{ kind = "protected", categories = ["female", "male"] }',
    "region": '{ kind = "categorical", categories = ["north", "south", "east", "west"] }',
    "default": '{ kind = "label" }',
    "score": '{ kind = "score" }',
    "window": '{ kind = "split", categories = ["reference", "current"] }',
}
AGE_LABELS = ("[18, 25)", "[25, 35)", "[35, 45)", "[45, 55)", "[55, 65)", "[65, 90]", "other")


def section(source: Path, *, name: str = "loans", columns: dict[str, str] | None = None,
            max_rows_per_unit: int = 1, table: str | None = None) -> str:
    cols = COLUMNS if columns is None else columns
    lines = [f"[datasets.{name}]", f'source = "{source}"', 'privacy_unit = "customer_id"',
             f"max_rows_per_unit = {max_rows_per_unit}", "epsilon_per_user = 5.0",
             "epsilon_total = 20.0", "min_cohort = 0"]
    if table:
        lines.append(f'table = "{table}"')
    lines.append(f"[datasets.{name}.columns]")
    lines += [f"{c} = {spec}" for c, spec in cols.items()]
    return "\n".join(lines) + "\n"


def write_policy(directory: Path, *sections: str) -> Path:
    path = directory / "policy.toml"
    path.write_text('[service]\nledger = "ledger.sqlite"\n\n' + "\n".join(sections))
    return path


@pytest.fixture
def open_engine() -> Iterator[Any]:
    """Open an Engine on a policy file; every engine is closed after the test."""
    engines: list[Engine] = []

    def open_(path: Path) -> tuple[Engine, Policy]:
        policy = load_policy(path)
        engines.append(Engine(policy))
        return engines[-1], policy

    yield open_
    for engine in engines:
        engine.close()


def count_cube(engine: Engine, ds: DatasetPolicy, **body: Any) -> tuple[np.ndarray, Query]:
    """The true count cube of a histogram query (the count is the only measure)."""
    query = build_query(ds, {"kind": "histogram", "epsilon": 1.0, **body})
    (cube,), version = engine.aggregate(query)
    assert cube.shape == query.cubes[0].shape + (1,) and cube.dtype == np.int64
    assert version.fingerprint == engine.version(ds.name).fingerprint
    return cube[..., 0], query


# -- an independent computation of the same cube ---------------------------------------------

def label_of(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value).lower() if isinstance(value, bool | np.bool_) else str(value)


def bin_index(values: pd.Series, edges: Sequence[float], bounds: tuple[float, float]
              ) -> np.ndarray:
    """Clip to the bounds, then left-closed bins with the last one closed; else ``other``."""
    x = np.clip(values.to_numpy(dtype="float64", na_value=np.nan), *bounds)
    index = np.searchsorted(edges, x, side="right") - 1
    index = np.where(x == edges[-1], len(edges) - 2, index)
    outside = np.isnan(x) | (x < edges[0]) | (x > edges[-1])
    return np.where(outside, len(edges) - 1, index)


def category_index(values: pd.Series, categories: Sequence[str]) -> np.ndarray:
    position = {c: i for i, c in enumerate(categories)}
    return np.array([position.get(label_of(v), len(categories)) for v in values])  # type: ignore[arg-type]


def expected_counts(frame: pd.DataFrame, query: Query) -> np.ndarray:
    for col, values in query.where:
        frame = frame[[label_of(v) in values for v in frame[col]]]
    index = [bin_index(frame[d.column], d.edges, d.bounds) if d.edges  # type: ignore[arg-type]
             else category_index(frame[d.column], d.categories) for d in query.cubes[0].dims]
    out = np.zeros(query.cubes[0].shape, dtype=np.int64)
    np.add.at(out, tuple(index), 1)
    return out


# -- the 20,000-row demo set ----------------------------------------------------------------

@dataclass
class Demo:
    ds: DatasetPolicy
    engine: Engine
    frame: pd.DataFrame


@pytest.fixture(scope="module")
def demo(loans: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    policy = load_policy(policy_copy(loans, tmp_path_factory.mktemp("engine")))
    engine = Engine(policy)
    yield Demo(policy.datasets["loans"], engine, pd.read_parquet(loans.data))
    engine.close()


QUERIES = [
    {"column": "age", "by": "sex"},
    {"column": "income", "by": ["region", "window"]},
    {"column": "score", "bins": 7, "by": "default"},
    {"column": "region", "by": ["sex", "default"]},
    {"column": "income", "bins": 3, "where": {"window": "current", "region": ["north", "east"]}},
    {"column": "age", "by": "region", "where": {"sex": "female", "default": 1}},
]


@pytest.mark.parametrize("body", QUERIES, ids=lambda b: "-".join(map(str, b.values())))
def test_true_counts_over_the_declared_domain_equal_an_independent_computation(
        demo: Demo, body: dict[str, Any]) -> None:
    counts, query = count_cube(demo.engine, demo.ds, **body)
    expected = expected_counts(demo.frame, query)
    np.testing.assert_array_equal(counts, expected)
    if not query.where:
        assert counts.sum() == len(demo.frame)  # every row lands in exactly one cell


def test_an_undeclared_category_is_never_a_key_and_lands_in_other(demo: Demo) -> None:
    counts, query = count_cube(demo.engine, demo.ds, column="region")
    assert query.cubes[0].dims[0].labels == ("north", "south", "east", "west", "other")
    central = int((demo.frame["region"] == "central").sum())
    assert central > 100  # the generator plants about 1% "central"
    assert counts[-1] == central
    declared = [int((demo.frame["region"] == r).sum()) for r in ("north", "south", "east", "west")]
    assert counts[:-1].tolist() == declared


def test_values_above_the_bound_land_in_the_top_bin(demo: Demo) -> None:
    age, query = count_cube(demo.engine, demo.ds, column="age")
    assert query.cubes[0].dims[0].labels == AGE_LABELS
    ages = demo.frame["age"]
    assert (ages > 90).sum() > 10  # planted outliers above the policy bound
    assert age[-2] == (ages >= 65).sum() and age[-1] == 0
    income, _ = count_cube(demo.engine, demo.ds, column="income")
    incomes = demo.frame["income"]
    assert (incomes > 200_000).sum() > 10
    assert income[9] == (incomes >= 180_000).sum() and income[-1] == 0


@pytest.fixture
def small() -> pd.DataFrame:
    return loans_frame(2_000, seed=5)


def test_values_below_the_bound_land_in_the_bottom_bin(
        small: pd.DataFrame, tmp_path: Path, open_engine: Any) -> None:
    small.loc[:9, "age"] = [-5, 0, 5, 10, 17, 17, 17, 1, 2, 3]
    small.loc[10:14, "income"] = [-1.0, -1e9, -0.01, -50_000.0, -7.5]
    small.to_parquet(tmp_path / "loans.parquet")
    engine, policy = open_engine(write_policy(tmp_path, section(tmp_path / "loans.parquet")))
    ds = policy.datasets["loans"]
    age, _ = count_cube(engine, ds, column="age")
    assert age[0] == (small["age"] < 25).sum() and age[-1] == 0
    income, _ = count_cube(engine, ds, column="income")
    assert income[0] == (small["income"] < 20_000).sum() and income[-1] == 0
    assert (small["income"] < 0).sum() == 5


def test_bins_are_left_closed_and_the_last_bin_is_closed(tmp_path: Path,
                                                          open_engine: Any) -> None:
    frame = loans_frame(10, seed=5)
    frame["age"] = [18, 24, 25, 64, 65, 89, 90, 91, 17, 35]
    frame["score"] = [0.0, 1.0, 0.5, 1.2, -0.1, 0.05, 0.05, 0.05, 0.05, 0.999]
    frame.to_parquet(tmp_path / "loans.parquet")
    engine, policy = open_engine(write_policy(tmp_path, section(tmp_path / "loans.parquet")))
    ds = policy.datasets["loans"]
    assert count_cube(engine, ds, column="age")[0].tolist() == [3, 1, 1, 0, 1, 4, 0]
    # score: 0.0, -0.1 and four 0.05 in [0, 0.1); 0.5 in [0.5, 0.6); 1.0, 1.2, 0.999 in [0.9, 1]
    assert count_cube(engine, ds, column="score")[0].tolist() == [6, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0]


def test_edges_narrower_than_the_bounds_send_the_rest_to_other(tmp_path: Path,
                                                                open_engine: Any) -> None:
    frame = loans_frame(10, seed=5)
    frame["age"] = [18, 24, 25, 44, 45, 65, 66, 90, 95, 10]
    frame.to_parquet(tmp_path / "loans.parquet")
    columns = {**COLUMNS, "age": '{ kind = "numeric", bounds = [18, 90], bins = [25, 45, 65] }'}
    engine, policy = open_engine(write_policy(
        tmp_path, section(tmp_path / "loans.parquet", columns=columns)))
    counts, query = count_cube(engine, policy.datasets["loans"], column="age")
    assert query.cubes[0].dims[0].labels == ("[25, 45)", "[45, 65]", "other")
    assert counts.tolist() == [2, 2, 6]


def test_null_and_nan_values_land_in_other(tmp_path: Path, open_engine: Any) -> None:
    frame = loans_frame(10, seed=5)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    nan, none = float("nan"), None
    replace = {
        "score": pa.array([nan, nan, none, 0.05, 0.05, 0.05, 0.05, 0.05, 0.95, 0.95]),
        "income": pa.array([none, nan, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 250_000.0]),
        "sex": pa.array([None, "female", "unknown", "male", "male", "male", "female",
                         "female", "female", "female"]),
    }
    for name, values in replace.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    pq.write_table(table, tmp_path / "loans.parquet")
    engine, policy = open_engine(write_policy(tmp_path, section(tmp_path / "loans.parquet")))
    ds = policy.datasets["loans"]
    assert count_cube(engine, ds, column="score")[0].tolist() == [5, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3]
    assert count_cube(engine, ds, column="income")[0].tolist() == [7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]
    assert count_cube(engine, ds, column="sex")[0].tolist() == [5, 3, 2]


def test_a_column_left_out_of_the_policy_cannot_be_queried(
        small: pd.DataFrame, tmp_path: Path, open_engine: Any) -> None:
    small.to_parquet(tmp_path / "loans.parquet")
    columns = {c: spec for c, spec in COLUMNS.items() if c != "region"}
    engine, policy = open_engine(write_policy(
        tmp_path, section(tmp_path / "loans.parquet", columns=columns)))
    ds = policy.datasets["loans"]
    assert "region" in pd.read_parquet(tmp_path / "loans.parquet").columns
    for body in ({"column": "region"}, {"column": "age", "by": "region"},
                 {"column": "age", "where": {"region": "north"}}):
        with pytest.raises(QueryError) as info:
            build_query(ds, {"kind": "histogram", "epsilon": 1.0, **body})
        assert info.value.code == "unknown_column"
    # the engine's relation exposes only declared, queryable columns
    assert list(engine.version("loans").schema.names) == [
        "age", "income", "sex", "default", "score", "window"]


# -- contribution bounding (rule 8) -----------------------------------------------------------

REGIONS = ("north", "south", "east", "west")


def repeated_units(n: int = 1_000, copies: int = 5, null_units: int = 3) -> pd.DataFrame:
    """``n`` units in region "central"; four of them (one per declared region) appear
    ``copies`` times, and ``null_units`` rows of region "north" have no unit at all."""
    frame = loans_frame(n, seed=9)
    frame["region"] = "central"
    frame.loc[:3, "region"] = list(REGIONS)
    extra = frame.iloc[[i for i in range(4) for _ in range(copies - 1)]].copy()
    extra["sex"] = (["male", "female", "unknown", "female"] * copies)[:len(extra)]
    orphans = frame.iloc[[0] * null_units].copy()
    orphans["customer_id"] = None
    return pd.concat([frame, extra, orphans], ignore_index=True)


def bounded(tmp_path: Path, open_engine: Any, max_rows_per_unit: int, frame: pd.DataFrame
            ) -> tuple[Engine, DatasetPolicy]:
    frame.to_parquet(tmp_path / "loans.parquet")
    engine, policy = open_engine(write_policy(tmp_path, section(
        tmp_path / "loans.parquet", max_rows_per_unit=max_rows_per_unit)))
    return engine, policy.datasets["loans"]


def test_one_row_per_unit_counts_each_unit_once(tmp_path: Path, open_engine: Any) -> None:
    frame = repeated_units()
    engine, ds = bounded(tmp_path, open_engine, 1, frame)
    counts, _ = count_cube(engine, ds, column="region")
    assert counts.tolist() == [1, 1, 1, 1, 996]
    assert counts.sum() == frame["customer_id"].nunique() == 1_000


@pytest.mark.parametrize("k", [2, 4])
def test_each_unit_contributes_at_most_max_rows_per_unit_rows(
        tmp_path: Path, open_engine: Any, k: int) -> None:
    engine, ds = bounded(tmp_path, open_engine, k, repeated_units())
    counts, _ = count_cube(engine, ds, column="region")
    assert counts.tolist() == [k, k, k, k, 996]


def test_rows_without_a_unit_are_dropped(tmp_path: Path, open_engine: Any) -> None:
    # every unit fits the limit of 5; only the three rows without a unit must go
    engine, ds = bounded(tmp_path, open_engine, 5, repeated_units())
    counts, _ = count_cube(engine, ds, column="region")
    assert counts.tolist() == [5, 5, 5, 5, 996]


def test_a_unit_column_proven_unique_needs_no_bounded_copy(
        small: pd.DataFrame, tmp_path: Path, open_engine: Any) -> None:
    engine, ds = bounded(tmp_path, open_engine, 1, small)
    counts, _ = count_cube(engine, ds, column="sex")
    assert counts.sum() == 2_000
    assert engine.version("loans").bounded_copy is None
    assert not list((tmp_path / ".pdebug-cache").rglob("*.parquet"))


def test_the_bounded_copy_is_made_once_per_dataset_version(tmp_path: Path,
                                                           open_engine: Any) -> None:
    engine, ds = bounded(tmp_path, open_engine, 2, repeated_units())
    first, v1 = engine.aggregate(build_query(ds, {"kind": "histogram", "column": "region",
                                                  "by": "sex", "epsilon": 1.0}))
    copy = v1.bounded_copy
    assert copy is not None and copy.exists()
    assert tmp_path / ".pdebug-cache" in copy.parents  # next to the ledger
    written = copy.stat().st_mtime_ns
    second, v2 = engine.aggregate(build_query(ds, {"kind": "histogram", "column": "region",
                                                   "by": "sex", "epsilon": 0.5}))
    assert v2 is v1 and copy.stat().st_mtime_ns == written
    # the same rows are read every time: the random choice of rows is not redrawn per query
    np.testing.assert_array_equal(first, second)
    # a restarted engine finds the copy of this version on disk and reads it
    other, _ = open_engine(tmp_path / "policy.toml")
    again, v3 = other.aggregate(build_query(ds, {"kind": "histogram", "column": "region",
                                                 "by": "sex", "epsilon": 1.0}))
    assert v3.fingerprint == v1.fingerprint and v3.bounded_copy == copy
    assert copy.stat().st_mtime_ns == written
    np.testing.assert_array_equal(again, first)
    assert sorted((tmp_path / ".pdebug-cache").rglob("*.parquet")) == [copy]


def test_changing_the_file_makes_a_new_version_and_removes_the_old_copy(
        tmp_path: Path, open_engine: Any) -> None:
    frame = repeated_units()
    engine, ds = bounded(tmp_path, open_engine, 1, frame)
    before, old = engine.aggregate(build_query(ds, {"kind": "histogram", "column": "region",
                                                    "epsilon": 1.0}))
    assert before[0][..., 0].tolist() == [1, 1, 1, 1, 996]
    assert engine.peek(ds.name) == old
    stamp = (tmp_path / "loans.parquet").stat().st_mtime_ns
    frame[frame["region"] != "west"].to_parquet(tmp_path / "loans.parquet")
    assert engine.peek(ds.name) is None  # a cheap look never serves a changed file
    os.utime(tmp_path / "loans.parquet", ns=(stamp + 10**9, stamp + 10**9))
    assert engine.peek(ds.name) is None
    after, new = engine.aggregate(build_query(ds, {"kind": "histogram", "column": "region",
                                                   "epsilon": 1.0}))
    assert after[0][..., 0].tolist() == [1, 1, 1, 0, 996]
    assert new.fingerprint != old.fingerprint and engine.peek(ds.name) == new
    assert new.bounded_copy is not None and new.bounded_copy.exists()
    assert old.bounded_copy is not None and not old.bounded_copy.exists()
    assert sorted((tmp_path / ".pdebug-cache").rglob("*.parquet")) == [new.bounded_copy]


def test_bounding_one_dataset_keeps_the_bounded_copy_of_another(tmp_path: Path,
                                                                open_engine: Any) -> None:
    # "loans-eu" starts with "loans-": cleaning up old copies of "loans" must not touch it
    frame = repeated_units()
    frame.to_parquet(tmp_path / "loans.parquet")
    frame[frame["region"] != "west"].to_parquet(tmp_path / "eu.parquet")
    engine, policy = open_engine(write_policy(
        tmp_path, section(tmp_path / "loans.parquet", max_rows_per_unit=2),
        section(tmp_path / "eu.parquet", name="loans-eu", max_rows_per_unit=2)))
    eu, loans = policy.datasets["loans-eu"], policy.datasets["loans"]
    assert count_cube(engine, eu, column="region")[0].tolist() == [2, 2, 2, 0, 996]
    assert count_cube(engine, loans, column="region")[0].tolist() == [2, 2, 2, 2, 996]
    assert count_cube(engine, eu, column="region")[0].tolist() == [2, 2, 2, 0, 996]


def test_a_dataset_named_raw_x_does_not_change_what_dataset_x_reads(
        small: pd.DataFrame, tmp_path: Path, open_engine: Any) -> None:
    small.iloc[:500].to_parquet(tmp_path / "loans.parquet")
    small.to_parquet(tmp_path / "other.parquet")
    engine, policy = open_engine(write_policy(
        tmp_path, section(tmp_path / "loans.parquet"),
        section(tmp_path / "other.parquet", name="raw_loans")))
    loans, raw_loans = policy.datasets["loans"], policy.datasets["raw_loans"]
    assert count_cube(engine, loans, column="sex")[0].sum() == 500
    assert count_cube(engine, raw_loans, column="sex")[0].sum() == 2_000
    assert count_cube(engine, loans, column="sex")[0].sum() == 500


# -- sources ---------------------------------------------------------------------------------

def write_source(frame: pd.DataFrame, directory: Path, fmt: str) -> str:
    """Write ``frame`` as ``fmt`` and return the dataset section reading it."""
    if fmt == "parquet":
        frame.to_parquet(directory / "loans.parquet")
        return section(directory / "loans.parquet")
    if fmt == "csv":
        frame.to_csv(directory / "loans.csv", index=False)
        return section(directory / "loans.csv")
    con = duckdb.connect(str(directory / "loans.duckdb"))
    con.register("frame", frame)
    con.execute("CREATE TABLE loans AS SELECT * FROM frame")
    con.close()
    return section(directory / "loans.duckdb", table="loans")


@pytest.mark.parametrize("fmt", ["csv", "duckdb"])
def test_csv_and_duckdb_sources_give_the_same_counts_as_parquet(
        small: pd.DataFrame, tmp_path: Path, open_engine: Any, fmt: str) -> None:
    (tmp_path / "parquet").mkdir()
    (tmp_path / fmt).mkdir()
    reference, p_policy = open_engine(write_policy(
        tmp_path / "parquet", write_source(small, tmp_path / "parquet", "parquet")))
    engine, policy = open_engine(write_policy(tmp_path / fmt,
                                              write_source(small, tmp_path / fmt, fmt)))
    for body in QUERIES:
        expected, query = count_cube(reference, p_policy.datasets["loans"], **body)
        counts, _ = count_cube(engine, policy.datasets["loans"], **body)
        np.testing.assert_array_equal(counts, expected)
        np.testing.assert_array_equal(counts, expected_counts(small, query))


def test_where_filters_on_categorical_split_and_label_columns(demo: Demo) -> None:
    frame = demo.frame
    counts, _ = count_cube(demo.engine, demo.ds, column="sex",
                           where={"window": "current", "region": ["west", "north"],
                                  "default": 0})
    keep = ((frame["window"] == "current") & frame["region"].isin(["west", "north"])
            & (frame["default"] == 0))
    picked = frame[keep]
    assert counts.tolist() == [(picked["sex"] == "female").sum(), (picked["sex"] == "male").sum(),
                               (picked["sex"] == "unknown").sum()]
    everything, _ = count_cube(demo.engine, demo.ds, column="sex",
                               where={"window": ["reference", "current"]})
    assert everything.sum() == len(frame)


def test_a_declared_column_missing_from_the_source_is_a_policy_mismatch(
        small: pd.DataFrame, tmp_path: Path, open_engine: Any) -> None:
    small.drop(columns=["score"]).to_parquet(tmp_path / "loans.parquet")
    engine, policy = open_engine(write_policy(tmp_path, section(tmp_path / "loans.parquet")))
    with pytest.raises(EngineError) as info:
        count_cube(engine, policy.datasets["loans"], column="age")
    assert info.value.code == "policy_mismatch"
    assert "score" in info.value.message and "'loans'" in info.value.message


LABELS = [
    ("integer 0/1", "int64", '{ kind = "label" }', ("0", "1")),
    ("boolean, default categories", "bool", '{ kind = "label" }', ("0", "1")),
    ("boolean, categories false/true", "bool", '{ kind = "label", categories = [false, true] }',
     ("false", "true")),
    ("integer, categories 0/1", "int64", '{ kind = "label", categories = [0, 1] }', ("0", "1")),
]


@pytest.mark.parametrize(("case", "dtype", "spec", "labels"), LABELS, ids=[c[0] for c in LABELS])
def test_boolean_and_integer_label_columns(small: pd.DataFrame, tmp_path: Path,
                                           open_engine: Any, case: str, dtype: str, spec: str,
                                           labels: tuple[str, str]) -> None:
    small["default"] = small["default"].astype(dtype)
    small.to_parquet(tmp_path / "loans.parquet")
    engine, policy = open_engine(write_policy(tmp_path, section(
        tmp_path / "loans.parquet", columns={**COLUMNS, "default": spec})))
    ds = policy.datasets["loans"]
    positives = int(small["default"].astype(int).sum())
    assert 0 < positives < 2_000
    counts, query = count_cube(engine, ds, column="default")
    assert query.cubes[0].dims[0].labels == (*labels, "other")
    assert counts.tolist() == [2_000 - positives, positives, 0]
    by_label, _ = count_cube(engine, ds, column="sex", where={"default": labels[1]})
    assert by_label.sum() == positives


def half_even(values: np.ndarray) -> np.ndarray:
    """numpy's rint: to the nearest integer, ties to even (the rule of Python's round)."""
    return np.rint(values)


def test_fixed_point_sums_clip_scale_and_round_each_row(demo: Demo) -> None:
    query = build_query(demo.ds, {"kind": "histogram", "column": "sex", "epsilon": 1.0})
    query = dataclasses.replace(query, cubes=(dataclasses.replace(query.cubes[0], measures=(
        Measure("count"),
        Measure("income", column="income", bounds=(0.0, 100_000.0), scale=1),
        Measure("score", column="score", bounds=(0.0, 1.0), scale=1_000),
        Measure("score_sq", column="score", bounds=(0.0, 1.0), scale=1_000, power=2))),))
    (cube,), _ = demo.engine.aggregate(query)
    assert cube.shape == (3, 4) and cube.dtype == np.int64
    frame = demo.frame
    group = category_index(frame["sex"], ("female", "male"))
    income = half_even(np.clip(frame["income"].to_numpy(), 0, 100_000))
    score = frame["score"].to_numpy()
    assert ((score >= 0) & (score <= 1)).all()
    for cell in range(3):
        rows = group == cell
        assert cube[cell].tolist() == [rows.sum(), income[rows].sum(),
                                       half_even(score[rows] * 1_000).sum(),
                                       half_even(score[rows] ** 2 * 1_000).sum()]


# Bounds whose grid values are exact ties (1.25 * 2 = 2.5, 1.5 ** 2 * 10 = 22.5): the
# sensitivity rounds them with Python's round (to even: 2 and 22), so a row rounded away from
# zero there (3, 23) would add more than the noise is sized for.
TIE_MEASURES = (
    Measure("count"),
    Measure("plain", column="x", bounds=(-1.25, 1.25), scale=2),
    Measure("square", column="x", bounds=(-1.5, 1.25), scale=10, power=2),
    Measure("magnitude", column="x", bounds=(-1.25, 0.75), scale=2, absolute=True),
    Measure("wide", column="x", bounds=(-7.0, 7.0), scale=3),
)
TIE_VALUES = [-np.inf, -7.0, -1.5, -1.25, -1.0, -0.75, -0.5, -0.25, -0.0, 0.0, 0.25, 0.5, 0.75,
              1.0, 1.1, 1.25, 1.5, 7.0, np.inf, np.nan, None]


def grid_oracle(x: np.ndarray, m: Measure, rounding: Any) -> np.ndarray:
    """One row's integer, computed with numpy; NaN counts as the upper bound (DuckDB sorts NaN
    above every number) and NULL adds nothing."""
    lo, hi = m.bounds
    v = np.clip(np.where(np.isnan(x), hi, x), lo, hi) ** m.power
    return rounding(np.abs(v) * m.scale if m.absolute else v * m.scale)  # type: ignore[no-any-return]


@pytest.fixture
def ties(tmp_path: Path, open_engine: Any) -> tuple[Engine, Query, np.ndarray]:
    """One row per cell: each cell of the cube is one row's contribution."""
    names = [f"r{i}" for i in range(len(TIE_VALUES))]
    pq.write_table(pa.table({"customer_id": [f"c{i}" for i in range(len(names))], "row": names,
                             "x": pa.array(TIE_VALUES, pa.float64())}), tmp_path / "x.parquet")
    listed = ", ".join(f'"{n}"' for n in names)
    columns = {"customer_id": '{ kind = "identifier" }',
               "row": f'{{ kind = "categorical", categories = [{listed}] }}',
               "x": '{ kind = "numeric", bounds = [-10, 10], bins = 2 }'}
    engine, policy = open_engine(write_policy(tmp_path, section(tmp_path / "x.parquet",
                                                                columns=columns)))
    query = build_query(policy.datasets["loans"], {"kind": "histogram", "column": "row",
                                                   "epsilon": 1.0})
    query = dataclasses.replace(query, cubes=(dataclasses.replace(
        query.cubes[0], measures=TIE_MEASURES),))
    x = np.array([np.nan if v is None else v for v in TIE_VALUES], dtype=np.float64)
    return engine, query, x


def assert_rows_within_the_sensitivity(cube: np.ndarray, expected: dict[str, np.ndarray]
                                       ) -> None:
    null = len(TIE_VALUES) - 1  # the NULL row adds nothing to any sum
    assert cube[:-1, 0].tolist() == [1] * len(TIE_VALUES) and cube[-1].tolist() == [0] * 5
    for j, m in enumerate(TIE_MEASURES[1:], start=1):
        r = m.row_sensitivity
        values = cube[:-1, j]
        assert np.abs(values).max() <= r, (m.name, values.tolist(), r)
        assert values[null] == 0
        np.testing.assert_array_equal(values[:null], expected[m.name][:null], err_msg=m.name)


def test_every_row_adds_an_integer_within_the_sensitivity_ties_to_even(ties: Any) -> None:
    engine, query, x = ties
    assert [m.row_sensitivity for m in TIE_MEASURES[1:]] == [2, 22, 2, 21]
    (cube,), _ = engine.aggregate(query)
    expected = {m.name: grid_oracle(x, m, half_even) for m in TIE_MEASURES[1:]}
    assert expected["plain"][[3, 15]].tolist() == [-2, 2]  # the ties at the bounds, to even
    assert expected["plain"][[5, 7, 10, 12]].tolist() == [-2, 0, 0, 2]  # ties inside, to even
    assert expected["square"][2] == 22 and expected["magnitude"][3] == 2
    assert_rows_within_the_sensitivity(cube, expected)


def test_a_backend_that_rounds_ties_away_from_zero_is_clamped_to_the_sensitivity(
        ties: Any) -> None:
    # Compiled for a backend without a half-to-even cast, run on DuckDB, whose ROUND takes
    # ties away from zero as Spark's does: the bounds' ties would give 3 and 23.
    engine, query, x = ties
    version = engine.version("loans")
    table = ibis.table(version.schema, name=version.relation)
    sql = str(ibis.to_sql(query_expression(table, query, backend="pyspark"), dialect="duckdb"))
    assert "ROUND" in sql
    result = engine.con.cursor().execute(sql).fetchnumpy()
    cube = np.zeros((len(TIE_VALUES) + 1, len(TIE_MEASURES)), dtype=np.int64)
    for j, m in enumerate(TIE_MEASURES):
        cube[np.asarray(result["d0"], dtype=np.int64), j] = np.ma.filled(result[m.name], 0)

    def away(v: np.ndarray) -> np.ndarray:
        return np.sign(v) * np.floor(np.abs(v) + 0.5)

    expected = {m.name: np.clip(grid_oracle(x, m, away), -m.row_sensitivity, m.row_sensitivity)
                for m in TIE_MEASURES[1:]}
    assert expected["plain"][[3, 4, 15]].tolist() == [-2, -2, 2]  # clamped 3 and -3, and 2
    assert expected["plain"][7].tolist() == -1  # -0.25 * 2 = -0.5: away from zero
    assert_rows_within_the_sensitivity(cube, expected)


# -- canonical queries -----------------------------------------------------------------------

def test_reordered_keys_and_scalar_or_list_values_have_one_canonical_form(demo: Demo) -> None:
    bodies = [
        {"kind": "histogram", "column": "income", "by": "sex",
         "where": {"window": "current", "region": ["north", "east"]}, "epsilon": 0.5},
        {"epsilon": 0.5, "where": {"region": ["east", "north", "east"], "window": ["current"]},
         "by": ["sex"], "column": "income", "kind": "histogram", "bins": 10},
        {"where": {"window": "current", "region": ["north", "east"]}, "by": ["sex"],
         "column": "income", "epsilon": 0.5, "kind": "histogram"},
    ]
    queries = [build_query(demo.ds, body) for body in bodies]
    assert len({q.canonical() for q in queries}) == 1
    assert len({q.digest for q in queries}) == 1
    assert queries[0].where == (("region", ("east", "north")), ("window", ("current",)))


def test_a_label_given_as_a_number_or_a_string_is_the_same_query(demo: Demo) -> None:
    one = build_query(demo.ds, {"kind": "histogram", "column": "age", "where": {"default": 1},
                                "epsilon": 0.5})
    text = build_query(demo.ds, {"kind": "histogram", "column": "age",
                                 "where": {"default": ["1"]}, "epsilon": 0.5})
    assert one.digest == text.digest


@pytest.mark.parametrize("change", [{"epsilon": 0.25}, {"bins": 5}, {"by": "window"},
                                    {"where": {"window": "reference"}}])
def test_a_query_that_means_something_else_has_another_digest(demo: Demo,
                                                              change: dict[str, Any]) -> None:
    body = {"kind": "histogram", "column": "income", "by": "sex",
            "where": {"window": "current"}, "epsilon": 0.5}
    base = build_query(demo.ds, body)
    other = build_query(demo.ds, {**body, **change})
    assert other.canonical() != base.canonical() and other.digest != base.digest
