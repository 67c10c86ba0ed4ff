"""What the compiler may leave out or share, and why the answers stay the same.

A version's value ranges (``engine.observed_ranges``) let the compiler drop a clip with
nothing to clip, a NaN test with no NaN, and replace a bin's CASE chain by a floor with a few
fixes (``compile.floor_form``); cubes of one query share a scan (``compile.plan_scans``).
Each test runs both forms on DuckDB and compares them, for the bins at the doubles where the
two could differ.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import duckdb
import ibis
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_engine
from conftest import ServiceProcess, policy_copy
from test_engine import section, write_policy

from pdebug_jupyter.engine import Engine, observed_ranges
from pdebug_jupyter.engine import compile as compile_module
from pdebug_jupyter.engine.compile import cell_index, floor_form, plan_scans, query_expression
from pdebug_jupyter.policy import equal_width_edges, load_policy
from pdebug_jupyter.query import Dimension, Measure, build_query
from pdebug_jupyter.synth.loans import loans_frame

demo, open_engine = test_engine.demo, test_engine.open_engine  # the engine tests' fixtures

BOUNDS = [(0.0, 1.0), (0.0, 200_000.0), (-1.0, 1.0), (18.0, 90.0), (0.001, 0.999),
          (-1e6, 3e6), (0.0, 0.3)]
COUNTS = [1, 2, 3, 5, 7, 10, 13, 20, 25, 50, 64, 99, 100]
EXPLICIT = [((18.0, 90.0), (18.0, 25.0, 35.0, 45.0, 55.0, 65.0, 90.0)),
            ((0.0, 1.0), (0.0, 0.1, 0.25, 0.5, 1.0)),
            ((0.0, 1.0), (0.2, 0.4, 0.6))]  # narrower than the bounds: the rest is "other"


def cases() -> list[tuple[tuple[float, float], tuple[float, ...], tuple[float, float]]]:
    """(bounds, edges, values seen): within the edges, within the bounds and beyond them."""
    out = []
    for bounds, edges in [(b, equal_width_edges(b, n)) for b in BOUNDS for n in COUNTS] + EXPLICIT:
        span = edges[-1] - edges[0]
        for seen in ((edges[0], edges[-1]), (edges[0] + 0.3 * span, edges[-1] - 0.2 * span),
                     (bounds[0] - span, bounds[1] + span)):
            out.append((bounds, edges, seen))
    return out


def points(edges: tuple[float, ...], seen: tuple[float, float], form: Any,
           rng: random.Random) -> list[float]:
    """The doubles where a floor and the chain could part: each edge and its neighbours, the
    fixes' ends, the ends of the values seen; and random values between."""
    near = [*edges, *(v for _, lo, hi in form.fixes for v in (lo, hi)), *seen]
    out = set()
    for v in near:
        for direction in (-math.inf, math.inf):
            w = v
            for _ in range(3):
                out.add(w)
                w = math.nextafter(w, direction)
    out.update(rng.uniform(*seen) for _ in range(300))
    return sorted(v for v in out if seen[0] <= v <= seen[1])


def test_the_floor_form_gives_the_chain_s_bin_at_every_double_that_could_differ() -> None:
    rng = random.Random(7)
    con = duckdb.connect()
    t = ibis.table({"x": "float64"}, name="pts")
    found, fixed = 0, 0
    for bounds, edges, seen in cases():
        form = floor_form(edges, bounds, seen)
        if form is None:
            continue
        found += 1
        fixed += bool(form.fixes)
        dim = Dimension("x", edges=edges, bounds=bounds)
        fast = ibis.to_sql(t.select(floor=cell_index(t, dim, seen)), dialect="duckdb")
        assert "FLOOR" in fast and "ISNAN" not in fast
        sql = ibis.to_sql(t.select(chain=cell_index(t, dim), floor=cell_index(t, dim, seen)),
                          dialect="duckdb")
        pts = pa.table({"x": pa.array(points(edges, seen, form, rng), pa.float64())})
        con.register("pts", pts)
        rows = con.execute(sql).fetchall()
        differ = [(x, c, f) for x, (c, f) in zip(pts["x"].to_pylist(), rows, strict=True)
                  if c != f]
        assert not differ, (bounds, len(edges) - 1, seen, form, differ[:5])
    # decimal edges such as 0.9 need fixes; an offset such as -1 or -1e6 puts many jumps off
    # their edges (a form with more than a quarter of its edges fixed is not kept), and
    # uneven edges have none: 206 of the 282 cases have a form
    assert found >= 200 and fixed >= 20


@pytest.mark.parametrize(("bounds", "bins"), [((0.0, 1.0), 10), ((0.0, 1.0), 20),
                                              ((0.0, 1.0), 100), ((0.0, 200_000.0), 10)])
def test_the_policy_s_usual_bins_have_a_floor_form(bounds: tuple[float, float], bins: int) -> None:
    edges = equal_width_edges(bounds, bins)
    form = floor_form(edges, bounds, bounds)
    assert form is not None and len(form.fixes) <= max(2, bins // 4)


def test_integer_columns_get_the_chain_s_bins_from_the_floor_form() -> None:
    con = duckdb.connect()
    t = ibis.table({"x": "int64"}, name="pts")
    edges, bounds = (20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0), (20.0, 80.0)
    dim = Dimension("x", edges=edges, bounds=bounds)
    seen = (-3.0, 120.0)
    assert floor_form(edges, bounds, seen) is not None
    con.register("pts", pa.table({"x": pa.array(range(-3, 121), pa.int64())}))
    sql = ibis.to_sql(t.select(chain=cell_index(t, dim), floor=cell_index(t, dim, seen)),
                      dialect="duckdb")
    rows = con.execute(sql).fetchall()
    assert "FLOOR" in sql and all(c == f for c, f in rows)
    assert rows[0] == (0, 0) and rows[-1] == (5, 5)  # clipped to the bounds, as the chain does
    # rows[k] holds k - 3: 29 | 30 and 69 | 70 straddle edges
    assert [c for c, _ in rows[32:34]] == [0, 1] and [c for c, _ in rows[72:74]] == [4, 5]


def test_no_floor_form_where_values_seen_fall_outside_narrower_edges() -> None:
    bounds, edges = (0.0, 1.0), (0.2, 0.4, 0.6)
    assert floor_form(edges, bounds, (0.2, 0.6)) is not None
    assert floor_form(edges, bounds, (0.1, 0.6)) is None  # the chain's "other" below 0.2
    assert floor_form(edges, bounds, (0.2, 0.7)) is None  # and above 0.6


def test_ranges_leave_out_nan_infinity_and_empty_columns_though_parquet_statistics_hide_nan(
        tmp_path: Path) -> None:
    nan, inf = float("nan"), float("inf")
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({
        "nan": pa.array([0.05, nan, None, 0.95]),
        "inf": pa.array([0.05, 0.5, inf, 0.95]),
        "empty": pa.array([None, None, None, None], pa.float64()),
        "ints": pa.array([3, -7, None, 12], pa.int64()),
        "fine": pa.array([0.25, None, 0.125, 0.75]),
        "text": pa.array(["a", "b", "c", "d"]),
    }), path)
    # the statistics a Parquet writer keeps leave NaN out, and DuckDB answers a bare
    # min/max from them
    con = duckdb.connect()
    assert con.execute(f"SELECT max(nan) FROM read_parquet('{path}')").fetchone() == (0.95,)
    schema = ibis.schema({"nan": "float64", "inf": "float64", "empty": "float64",
                          "ints": "int64", "fine": "float64", "text": "string"})
    kept = tmp_path / "ranges.json"
    ranges = observed_ranges(schema, f"read_parquet('{path}')", kept,
                             lambda sql: con.execute(sql).fetchall()[0])
    assert ranges == {"ints": (-7.0, 12.0), "fine": (0.125, 0.75)}
    # kept per version: read back, not scanned again
    assert observed_ranges(schema, "no_such_relation", kept, lambda sql: 1 / 0) == ranges


def full_and_fast(demo: Any, body: dict[str, Any]) -> tuple[str, str, list[Any], list[Any]]:
    query = build_query(demo.ds, {**body, "epsilon": 1.0})
    version = demo.engine.version("loans")
    table = ibis.table(version.schema, name=version.relation)
    run = demo.engine.con.cursor().execute
    full, fast = (str(ibis.to_sql(query_expression(table, query, "duckdb", r), dialect="duckdb"))
                  for r in ({}, version.ranges))
    return full, fast, sorted(run(full).fetchall()), sorted(run(fast).fetchall())


@pytest.mark.parametrize("body", [
    {"kind": "calibration", "by": "sex"},
    {"kind": "performance_estimate", "where": {"window": "current"}},
    {"kind": "confusion", "by": "sex"},
    {"kind": "histogram", "column": "score", "bins": 13, "by": "default"},
], ids=lambda b: b["kind"])
def test_a_version_within_the_bounds_leaves_clip_and_chain_out_with_the_same_cube(
        demo: Any, body: dict[str, Any]) -> None:
    full, fast, expected, got = full_and_fast(demo, body)
    assert demo.engine.version("loans").ranges["score"][1] <= 1.0
    assert "ISNAN" in full and "ISNAN" not in fast and "FLOOR" in fast
    if body["kind"] in ("calibration", "performance_estimate"):  # fixed-point sums of scores
        assert "< 0.0" in full and "< 0.0" not in fast
    assert got == expected


def test_values_beyond_the_bounds_keep_the_clip(demo: Any) -> None:
    # income has planted values above its policy bound of 200,000: rule 3 still clips them
    assert demo.engine.version("loans").ranges["income"][1] > 200_000
    query = build_query(demo.ds, {"kind": "histogram", "column": "sex", "epsilon": 1.0})
    query = dataclasses.replace(query, cubes=(dataclasses.replace(query.cubes[0], measures=(
        Measure("income", column="income", bounds=(0.0, 200_000.0), scale=1),)),))
    version = demo.engine.version("loans")
    table = ibis.table(version.schema, name=version.relation)
    sql = str(ibis.to_sql(query_expression(table, query, "duckdb", version.ranges),
                          dialect="duckdb"))
    assert "> 200000.0" in sql
    (cube,), _ = demo.engine.aggregate(query)
    assert cube.sum() == np.rint(np.clip(demo.frame["income"].to_numpy(), 0, 200_000)).sum()


def test_a_source_replaced_while_a_query_runs_is_read_again_as_the_new_version(
        tmp_path: Path, open_engine: Any) -> None:
    frame = loans_frame(500, seed=3)
    frame["score"] = frame["score"].clip(0.0, 1.0)
    path = tmp_path / "loans.parquet"
    frame.to_parquet(path)
    engine, policy = open_engine(write_policy(tmp_path, section(path)))
    ds = policy.datasets["loans"]
    query = build_query(ds, {"kind": "calibration", "epsilon": 1.0})
    source = engine.sources["loans"]
    first = source.version()
    assert "score" in first.ranges  # compiled without the clip
    replaced = frame.assign(score=np.where(np.arange(len(frame)) < 5, 40.0, frame["score"]))
    run = source.run
    calls: list[str] = []

    def run_then_replace(sql: str) -> Any:
        out = run(sql)
        calls.append(sql)
        if len(calls) == 1:  # the file changes under the first query
            replaced.to_parquet(path)
            os.utime(path, (first.modified + 10, first.modified + 10))
        return out

    source.run = run_then_replace  # type: ignore[method-assign]
    (cube,), version = engine.aggregate(query)
    assert len(calls) == 2 and version.fingerprint != first.fingerprint
    assert version.ranges["score"][1] == 40.0  # beyond the bounds: clipped again
    assert "< 0.0" not in calls[0] and "< 0.0" in calls[1]
    scores = np.clip(replaced["score"].to_numpy(), 0.0, 1.0)
    names = [m.name for m in query.cubes[0].measures]
    assert cube[..., names.index("score_sum")].sum() == np.rint(scores * 10_000).sum()


@pytest.mark.parametrize("body", [
    {"kind": "drift", "columns": ["age", "income", "region", "sex"],
     "reference": {"window": "reference"}, "current": {"window": "current"}},
    {"kind": "marginals"},
], ids=lambda b: b["kind"])
def test_cubes_sharing_one_scan_equal_one_scan_per_cube(
        demo: Any, loans: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        body: dict[str, Any]) -> None:
    query = build_query(demo.ds, {**body, "epsilon": 1.0})
    scans = plan_scans(query)
    assert len(scans) < len(query.cubes)
    shared, _ = demo.engine.aggregate(query)
    monkeypatch.setattr(compile_module, "SCAN_CELLS", 1)  # every cube a scan of its own
    assert len(plan_scans(query)) == len(query.cubes)
    engine = Engine(load_policy(policy_copy(loans, tmp_path)))
    try:
        alone, _ = engine.aggregate(query)
    finally:
        engine.close()
    assert len(shared) == len(alone) == len(query.cubes)
    for a, b in zip(shared, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    if body["kind"] == "drift":  # every row of either window is counted once per column
        windows = demo.frame["window"].isin(["reference", "current"]).sum()
        assert all(c.sum() == windows for c in shared)


def test_the_ranges_stay_in_the_service(service: ServiceProcess) -> None:
    """A minimum or maximum is a row's value (rule 1): the ranges a version records are used
    by the compiler and kept next to the ledger, and no answer carries them."""
    texts = [service.query({"kind": kind, "epsilon": 0.5, **extra}).text for kind, extra in (
        ("calibration", {"by": "sex"}), ("histogram", {"column": "income"}),
        ("performance_estimate", {"where": {"window": "current"}}))]
    texts += [service.call("GET", path).text for path in ("/datasets/loans", "/releases")]
    [kept] = (service.policy.parent / ".pdebug-cache" / "datasets" / "loans").glob("*.ranges")
    ranges = json.loads(kept.read_text())
    assert {"score", "income", "age"} <= ranges.keys()
    # the values with a fraction (score and income ends): whole numbers such as age 18 are
    # also policy bounds, and short digit strings turn up inside any count
    fractions = [v for lo_hi in ranges.values() for v in lo_hi if v != int(v)]
    assert len(fractions) >= 3
    values = {repr(v) for v in fractions} | {f"{v:g}" for v in fractions}
    leaked = [v for v in values if any(v in text for text in texts)]
    assert not leaked, leaked
