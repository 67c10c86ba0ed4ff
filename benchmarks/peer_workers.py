"""One tool, one Parquet file, one or more query kinds, in this process: a JSON line per kind.

``python peer_workers.py TOOL KIND[,KIND...] PARQUET ROWS REPEAT EPSILON BUDGET_S``

Run by ``bench_peers.py`` in each tool's own interpreter (its own venv where its
dependencies conflict with ours), so that the process's peak resident memory (``VmHWM``)
belongs to that tool and that kind alone. It imports only the standard library and
``cubes.py`` before the tool's own packages.

Timing: ``setup`` (loading the data, building a reader) is timed once; ``prepare`` (building
the DP query or measurement and fitting its epsilon, which does not read the data) is timed
once; then the kind runs until ``REPEAT`` runs are timed or ``BUDGET_S`` seconds are spent
(at least one). A first run under 2 s is a warm-up and not counted; a longer one counts,
since what a warm-up hides (a first plan, a cold page cache) is small beside it.

Tools: ``duckdb`` (the hand-written SQL of ``cubes.RAW_SQL``), ``pandas`` (``cubes.PANDAS``),
``smartnoise-duckdb`` and ``smartnoise-pandas`` (SmartNoise SQL over a DuckDB connection or
its own pandas reader; ``smartnoise-duckdb-rows`` with each row its own privacy unit),
``opendp`` (OpenDP's Polars measurements), ``evidently`` (its data drift report; ``drift``
only).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cubes import (
    AGE,
    AGE_BREAKS,
    DRIFT_COLUMNS,
    INCOME,
    INCOME_WIDTH,
    MEASURES,
    PANDAS,
    PANDAS_COLUMNS,
    RAW_SQL,
    REGIONS,
    SCORE10,
    SCORE20,
    SEXES,
    WINDOWS,
)

DELTA = 1e-6  # SmartNoise's dimension censoring needs a delta (its keys come from the data)
Result = dict[str, Any]  # what one run released: {"cells": n, "total": count of one cube}


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def version(package: str) -> str:
    from importlib.metadata import version as installed

    return installed(package)


# --- the data's columns as the DP tools see them -----------------------------------------------
# SmartNoise aggregates plain columns only (no SUM(score * label), no LEAST), so the bins and
# the per-row products are columns of the table it reads: a DuckDB view (computed in every
# scan, so inside the timings) or pandas columns (computed once, in the setup).
VIEW = f"""
SELECT customer_id, CAST({AGE} AS INTEGER) AS a, CAST({INCOME} AS INTEGER) AS i, sex, region,
       "window" AS win, "default" AS label, score, CAST({SCORE10} AS INTEGER) AS b10,
       CAST({SCORE20} AS INTEGER) AS b20, score * "default" AS sp, score * score AS ss,
       ((score >= 0.5) <> ("default" = 1))::INTEGER AS err
FROM read_parquet('{{path}}')"""
UNIT = {"float": {"type": "float", "lower": 0.0, "upper": 1.0},
        "int": {"type": "int", "lower": 0, "upper": 1}}
SN_COLUMNS = {"customer_id": {"type": "string", "private_id": True},
              "a": {"type": "int"}, "i": {"type": "int"}, "sex": {"type": "string"},
              "region": {"type": "string"}, "win": {"type": "string"}, "label": UNIT["int"],
              "score": UNIT["float"], "b10": {"type": "int"}, "b20": {"type": "int"},
              "sp": UNIT["float"], "ss": UNIT["float"], "err": UNIT["int"]}
SN_SQL = {
    "histogram": ["SELECT a, sex, COUNT(*) AS n FROM loans.loans GROUP BY a, sex"],
    "calibration": ["SELECT b10, sex, COUNT(*) AS n, SUM(label) AS pos, SUM(score) AS s, "
                    "SUM(sp) AS sp, SUM(ss) AS ss FROM loans.loans GROUP BY b10, sex"],
    "confusion": ["SELECT b10, label, sex, COUNT(*) AS n FROM loans.loans "
                  "GROUP BY b10, label, sex"],
    "drift": [f"SELECT win, {c}, COUNT(*) AS n FROM loans.loans WHERE win IN ('reference', "
              f"'current') GROUP BY win, {c}" for c in ("a", "i", "region", "sex")],
    "cohort_errors": ["SELECT region, a, COUNT(*) AS n, SUM(err) AS errors FROM loans.loans "
                      "GROUP BY region, a"],
    "performance_estimate": ["SELECT b20, COUNT(*) AS n, SUM(score) AS s FROM loans.loans "
                             "WHERE win = 'current' GROUP BY b20"],
}


class _DuckCursor:
    """The DB-API subset SmartNoise's Postgres reader uses, over a DuckDB connection.

    DuckDB refuses ``ORDER BY RANDOM()`` inside a window, which SmartNoise's per-unit
    reservoir sample uses; the order is dropped (an arbitrary row per unit instead of a random
    one). Each unit has exactly one row here (``max_ids`` 1), so the rows kept are the same.
    """

    def __init__(self, con: Any) -> None:
        self.con, self.description, self.rows = con, None, []

    def execute(self, sql: str) -> None:
        result = self.con.execute(sql.replace("ORDER BY RANDOM ( )", ""))
        self.description, self.rows = result.description, result.fetchall()

    def __iter__(self) -> Any:
        return iter(self.rows)


class _DuckConnection:
    def __init__(self, con: Any) -> None:
        self.con = con

    def cursor(self) -> _DuckCursor:
        return _DuckCursor(self.con)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def _summary(n_cells: int, total: float) -> Result:
    return {"cells": n_cells, "total": round(float(total))}


# --- each tool: setup(path, rows) -> state; prepare(state, kind, epsilon) -> run() -----------
def duckdb_tool(path: str, rows: int) -> tuple[Any, dict[str, str]]:
    import duckdb

    return (duckdb.connect(), f"read_parquet('{path}')"), {"duckdb": duckdb.__version__}


def duckdb_prepare(state: Any, kind: str, epsilon: float) -> Callable[[], Result]:
    con, src = state
    sql = RAW_SQL[kind].format(src=src)

    def run() -> Result:
        cursor = con.execute(sql)
        rows = cursor.fetchall()
        names = [d[0] for d in cursor.description]
        n = names.index("n")
        first = [r for r in rows if r[0] == 0] if kind == "drift" else rows  # the age cube
        return _summary(len(rows), sum(r[n] for r in first))
    return run


def pandas_tool(path: str, rows: int) -> tuple[Any, dict[str, str]]:
    import pandas as pd

    return pd.read_parquet(path, columns=PANDAS_COLUMNS), {"pandas": pd.__version__}


def pandas_prepare(state: Any, kind: str, epsilon: float) -> Callable[[], Result]:
    def run() -> Result:
        out: Any = PANDAS[kind](state)
        parts = out if isinstance(out, list) else [out]
        first = parts[0]
        n = first["n"] if "n" in getattr(first, "columns", []) else (
            first["size"] if "size" in getattr(first, "columns", []) else first)
        return _summary(sum(len(p) for p in parts), n.sum())
    return run


def smartnoise_duckdb_tool(path: str, rows: int, row_privacy: bool = False
                           ) -> tuple[Any, dict[str, str]]:
    import duckdb
    from snsql.sql.reader.base import SqlReader

    con = duckdb.connect()
    con.execute("CREATE SCHEMA loans")
    con.execute("CREATE VIEW loans.loans AS " + VIEW.format(path=path))
    reader = SqlReader.from_connection(_DuckConnection(con), engine="postgres")
    return (reader, rows, row_privacy), {"smartnoise-sql": version("smartnoise-sql"),
                                         "opendp": version("opendp"),
                                         "duckdb": duckdb.__version__}


def smartnoise_rows_tool(path: str, rows: int) -> tuple[Any, dict[str, str]]:
    """SmartNoise told that each row is its own privacy unit (``row_privacy``): no per-unit
    sample in each query, which the service's once-per-version proof of one row per customer
    makes the same privacy unit here."""
    return smartnoise_duckdb_tool(path, rows, row_privacy=True)


def smartnoise_pandas_tool(path: str, rows: int) -> tuple[Any, dict[str, str]]:
    import numpy as np
    import pandas as pd
    from snsql.sql.reader.base import SqlReader

    df = pd.read_parquet(path, columns=["customer_id", *PANDAS_COLUMNS])
    score, label = df["score"], df["default"]
    frame = pd.DataFrame({
        "customer_id": df["customer_id"],
        "a": np.searchsorted(AGE_BREAKS, df["age"].to_numpy(), side="right"),
        "i": np.clip(np.floor(df["income"].to_numpy() / INCOME_WIDTH), 0, 9).astype(int),
        "sex": df["sex"], "region": df["region"], "win": df["window"], "label": label,
        "score": score, "b10": np.minimum(np.floor(score.to_numpy() * 10), 9).astype(int),
        "b20": np.minimum(np.floor(score.to_numpy() * 20), 19).astype(int),
        "sp": score * label, "ss": score * score,
        "err": ((score >= 0.5) != (label == 1)).astype(int)})
    del df
    # SmartNoise's pandas reader copies the frame into an in-memory SQLite database
    reader = SqlReader.from_connection(frame, engine="pandas",
                                       metadata=_sn_metadata(rows, row_privacy=False))
    return (reader, rows, False), {"smartnoise-sql": version("smartnoise-sql"),
                            "opendp": version("opendp"), "pandas": pd.__version__}


def _sn_metadata(rows: int, row_privacy: bool) -> dict[str, Any]:
    columns = dict(SN_COLUMNS)
    if row_privacy:
        columns["customer_id"] = {"type": "string"}
    return {"loans": {"loans": {"loans": {"rows": rows, "max_ids": 1, "censor_dims": True,
                                          "row_privacy": row_privacy, **columns}}}}


def smartnoise_prepare(state: Any, kind: str, epsilon: float) -> Callable[[], Result]:
    from snsql import Privacy
    from snsql.sql.private_reader import PrivateReader

    reader, rows, row_privacy = state
    queries, meta = SN_SQL[kind], _sn_metadata(rows, row_privacy)
    # SmartNoise's epsilon is per noisy statistic; give the kind's whole query (or queries)
    # the same total as the service's release, by SmartNoise's own cost accounting
    unit = PrivateReader(reader, meta, privacy=Privacy(epsilon=1.0, delta=DELTA))
    per_statistic = epsilon / unit.get_privacy_cost(queries)[0]
    private = PrivateReader(reader, meta, privacy=Privacy(epsilon=per_statistic, delta=DELTA))
    spent = private.get_privacy_cost(queries)[0]
    assert spent <= epsilon * (1 + 1e-9), spent

    def run() -> Result:
        out = [private.execute(q) for q in queries]
        n = out[0][0].index("n")
        return _summary(sum(len(o) - 1 for o in out), sum(r[n] for r in out[0][1:]))
    run.spent = spent  # type: ignore[attr-defined]
    return run


def opendp_tool(path: str, rows: int) -> tuple[Any, dict[str, str]]:
    import opendp.prelude as dp
    import polars as pl
    from opendp.domains import with_margin

    dp.enable_features("contrib", "honest-but-curious")
    score = pl.col("score").fill_null(0.0).clip(0.0, 1.0)
    label = pl.col("default").fill_null(0)
    # the per-row products, as in the SmartNoise view: a row-wise map of the data before
    # OpenDP's plan (it has no product expression), inside each timed run
    lf = (pl.scan_parquet(path).select(*PANDAS_COLUMNS)
          .with_columns(sp=score * label, ss=score * score,
                        err=((pl.col("score") >= 0.5) != (pl.col("default") == 1))
                        .cast(pl.Int64)))
    # float sums need a bound on the rows per group (OpenDP's fix for float rounding)
    domain = with_margin(dp.domain_of(lf, infer=True), dp.polars.Margin(by=[], max_length=rows))
    return (lf, domain), {"opendp": version("opendp"), "polars": pl.__version__}


def _opendp_plans(root: Any, kind: str) -> list[Any]:
    """Each kind's grouped DP aggregate(s), left-joined to the policy's public keys."""
    import itertools

    import opendp.prelude as dp
    import polars as pl

    ages, b10, b20 = ([str(i) for i in range(n)] for n in (6, 10, 20))

    def cut(column: str, breaks: list[float], labels: list[str]) -> Any:
        return pl.col(column).cut(breaks, labels=labels, left_closed=True)

    age = cut("age", [float(b) for b in AGE_BREAKS], ages)
    income = cut("income", [float(INCOME_WIDTH * i) for i in range(1, 10)],
                 [str(i) for i in range(10)])
    score10 = cut("score", [i / 10 for i in range(1, 10)], b10)
    score20 = cut("score", [i / 20 for i in range(1, 20)], b20)
    categorical = {"a", "b", "v_age", "v_income"}

    def keyed(frame: Any, keys: dict[str, list[Any]], *aggs: Any) -> Any:
        names = list(keys)
        grid = list(itertools.product(*keys.values()))
        schema = {k: pl.Categorical if k in categorical else
                  (pl.Int64 if k == "default" else pl.String) for k in names}
        table = pl.LazyFrame({k: [g[i] for g in grid] for i, k in enumerate(names)},
                             schema=schema)
        grouped = frame.group_by(*names).agg(dp.len(), *aggs)
        return table.join(grouped, how="left", on=names, nulls_equal=True)

    def unit_sum(column: str, bounds: tuple[Any, Any]) -> Any:
        return pl.col(column).fill_null(bounds[0]).dp.sum(bounds)

    if kind == "histogram":
        return [keyed(root.with_columns(a=age), {"a": ages, "sex": SEXES})]
    if kind == "calibration":
        return [keyed(root.with_columns(b=score10), {"b": b10, "sex": SEXES},
                      unit_sum("default", (0, 1)), unit_sum("score", (0.0, 1.0)),
                      unit_sum("sp", (0.0, 1.0)), unit_sum("ss", (0.0, 1.0)))]
    if kind == "confusion":
        return [keyed(root.with_columns(b=score10), {"b": b10, "default": [0, 1],
                                                     "sex": SEXES})]
    if kind == "drift":
        bins = {"age": (age, ages), "income": (income, [str(i) for i in range(10)]),
                "region": (pl.col("region"), REGIONS), "sex": (pl.col("sex"), SEXES)}
        plans = []
        for column in DRIFT_COLUMNS:
            expr, domain = bins[column]
            name = f"v_{column}" if column in ("age", "income") else column
            frame = root.with_columns(expr.alias(name)) if name != column else root
            # the public keys keep the two windows: OpenDP has no IS IN filter
            plans.append(keyed(frame, {"window": WINDOWS, name: domain}))
        return plans
    if kind == "cohort_errors":
        return [keyed(root.with_columns(a=age), {"region": REGIONS, "a": ages},
                      unit_sum("err", (0, 1)))]
    if kind == "performance_estimate":
        current = root.filter(pl.col("window") == "current").with_columns(b=score20)
        return [keyed(current, {"b": b20}, unit_sum("score", (0.0, 1.0)))]
    raise ValueError(kind)


def opendp_prepare(state: Any, kind: str, epsilon: float) -> Callable[[], Result]:
    import opendp.prelude as dp
    import polars as pl

    lf, domain = state
    root = pl.LazyFrame(schema=lf.collect_schema())
    plans = _opendp_plans(root, kind)
    share = epsilon / len(plans)  # drift: one cube per column, an equal share each

    def make(plan: Any, scale: float) -> Any:
        return dp.m.make_private_lazyframe(domain, dp.symmetric_distance(), dp.max_divergence(),
                                           plan, global_scale=scale)

    # Laplace-type noise: epsilon is (sum of sensitivities) / scale, so one measurement at
    # scale 1 gives the scale for the share; OpenDP's Context API would binary-search it
    # instead (about 1,100 measurements, several seconds whatever the data size)
    measurements = []
    for plan in plans:
        at_one = make(plan, 1.0).map(1)
        m = make(plan, at_one / share * (1 + 1e-9))
        assert m.map(1) <= share * (1 + 1e-9), m.map(1)
        measurements.append(m)

    def run() -> Result:
        out = [m(lf).collect() for m in measurements]
        return _summary(sum(o.height for o in out), out[0]["len"].sum())
    run.spent = sum(m.map(1) for m in measurements)  # type: ignore[attr-defined]
    return run


def opendp_context_resolve_ms(state: Any, epsilon: float) -> float:
    """The Context API's way to the same histogram measurement, for the record."""
    import opendp.prelude as dp
    import polars as pl

    lf, _ = state
    context = dp.Context.compositor(data=lf, privacy_unit=dp.unit_of(contributions=1),
                                    privacy_loss=dp.loss_of(epsilon=epsilon),
                                    split_evenly_over=1)
    ages = [str(i) for i in range(6)]
    keys = pl.LazyFrame({"a": [a for a in ages for _ in SEXES], "sex": SEXES * len(ages)},
                        schema={"a": pl.Categorical, "sex": pl.String})
    query = (context.query().with_columns(a=pl.col("age").cut([float(b) for b in AGE_BREAKS],
                                                               labels=ages, left_closed=True))
             .group_by("a", "sex").agg(dp.len()).with_keys(keys))
    t = time.perf_counter()
    query.resolve()
    return (time.perf_counter() - t) * 1000


def evidently_tool(path: str, rows: int) -> tuple[Any, dict[str, str]]:
    import pandas as pd

    df = pd.read_parquet(path, columns=[*DRIFT_COLUMNS, "window"])
    return df, {"evidently": version("evidently"), "pandas": pd.__version__}


def evidently_prepare(state: Any, kind: str, epsilon: float) -> Callable[[], Result]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if kind != "drift":
        raise ValueError("evidently: drift only")
    cols = DRIFT_COLUMNS
    definition = DataDefinition(numerical_columns=cols[:2], categorical_columns=cols[2:])

    def run() -> Result:
        ref = state[state["window"] == "reference"][cols]
        cur = state[state["window"] == "current"][cols]
        snapshot = Report([DataDriftPreset(columns=cols)]).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition))
        values = {m["config"]["column"]: m["value"] for m in snapshot.dict()["metrics"]
                  if "column" in m["config"]}
        return {"cells": len(values), "values": values}
    return run


# imported (timed, and the resident size after it recorded) before the data is touched
IMPORTS = {"duckdb": ["duckdb"], "pandas": ["pandas", "pyarrow"],
           "smartnoise-duckdb": ["duckdb", "snsql"], "smartnoise-duckdb-rows": ["duckdb", "snsql"],
           "smartnoise-pandas": ["pandas", "snsql"],
           "opendp": ["polars", "opendp.prelude"], "evidently": ["pandas", "evidently"]}
TOOLS: dict[str, tuple[Callable[[str, int], tuple[Any, dict[str, str]]],
                       Callable[[Any, str, float], Callable[[], Result]]]] = {
    "duckdb": (duckdb_tool, duckdb_prepare),
    "pandas": (pandas_tool, pandas_prepare),
    "smartnoise-duckdb": (smartnoise_duckdb_tool, smartnoise_prepare),
    "smartnoise-duckdb-rows": (smartnoise_rows_tool, smartnoise_prepare),
    "smartnoise-pandas": (smartnoise_pandas_tool, smartnoise_prepare),
    "opendp": (opendp_tool, opendp_prepare),
    "evidently": (evidently_tool, evidently_prepare),
}


def timed_runs(run: Callable[[], Result], repeat: int, budget_s: float
               ) -> tuple[float, list[float], Result]:
    runs: list[float] = []
    started = t = time.perf_counter()
    result = run()
    first_ms = (time.perf_counter() - t) * 1000
    if first_ms > 2000:  # a long first run counts; a short one was a warm-up
        runs.append(first_ms)
    while len(runs) < repeat and (not runs or time.perf_counter() - started < budget_s):
        t = time.perf_counter()
        result = run()
        runs.append((time.perf_counter() - t) * 1000)
    return first_ms, runs, result


def measure(tool: str, kinds: list[str], path: str, rows: int, repeat: int, epsilon: float,
            budget_s: float) -> None:
    """Print one JSON line per kind. Several kinds share one setup (for tools whose setup
    dwarfs a query); the peak memory is then the process's peak so far."""
    setup, prepare = TOOLS[tool]
    t = time.perf_counter()
    for module in IMPORTS[tool]:
        importlib.import_module(module)
    import_ms, import_mib = (time.perf_counter() - t) * 1000, status_mib("VmRSS")
    t = time.perf_counter()
    state, versions = setup(path, rows)
    setup_ms = (time.perf_counter() - t) * 1000
    for kind in kinds:
        assert kind in MEASURES, kind
        t = time.perf_counter()
        run = prepare(state, kind, epsilon)
        prepare_ms = (time.perf_counter() - t) * 1000
        first_ms, runs, result = timed_runs(run, repeat, budget_s)
        extra = {}
        if tool == "opendp" and kind == "histogram":
            extra["context_resolve_ms"] = opendp_context_resolve_ms(state, epsilon)
        print(json.dumps({
            "tool": tool, "kind": kind, "rows": rows, "versions": versions,
            "python": sys.version.split()[0], "kinds_in_process": len(kinds),
            "import_ms": import_ms, "import_mib": import_mib, "setup_ms": setup_ms,
            "prepare_ms": prepare_ms, "first_ms": first_ms, "runs_ms": runs,
            "peak_mib": status_mib("VmHWM"), "epsilon": getattr(run, "spent", None),
            "result": result, **extra}), flush=True)


def main() -> None:
    warnings.simplefilter("ignore")  # OpenDP's FutureWarnings, SmartNoise's mechanism notes
    tool, kinds, path, rows, repeat, epsilon, budget = sys.argv[1:8]
    if tool not in TOOLS:
        raise SystemExit(f"unknown tool {tool!r} (one of {', '.join(TOOLS)})")
    measure(tool, kinds.split(","), path, int(rows), int(repeat), float(epsilon), float(budget))


if __name__ == "__main__":
    main()
