"""Every analysis kind: fresh releases against raw DuckDB, and against the peer tools.

For each size it writes synthetic loans (once, under benchmarks/data/; reused when there),
deletes the ledger, starts the real service process and, for each kind, measures:

* ``raw``: the equivalent aggregate written by hand and run directly in DuckDB on the same
  Parquet file (the same grouping and measures, plain SQL: ``floor`` for equal-width bins,
  double sums);
* ``service SQL``: the service's own compiled SQL run in this process through its engine
  (no HTTP, no noise, no ledger): a diagnostic that splits the gap between raw and fresh
  into "the SQL the service generates" and "the fixed cost of a release";
* ``fresh``: a fresh release over HTTP (a new epsilon each time, so nothing is cached:
  query, noise, one ledger transaction, JSON);

interleaved in rotating order so drift in the machine's speed hits all three alike. Then,
on the same data loaded with pandas (the load timed on its own), the peer analysis:
Fairlearn's ``MetricFrame`` for ``confusion``, Evidently's data drift for ``drift`` (run in
its own virtual environment as a subprocess, timed inside it), and a pandas groupby computing
the same cube for every kind as a baseline; finally the client-side views ("free"
post-processing of one release, e.g. ``ece`` and its interval).

``attribution`` is not measured: the synthetic loans have no attribution columns.

Target (ARCHITECTURE.md, issue 3): fresh/raw at most 1.3 for every kind.
Run: ``python benchmarks/bench_kinds.py [--rows 1000000 10000000] [--repeat 11]``; with
``--explain`` it instead times the service's SQL rebuilt one feature at a time (CASE-chain
bins, the per-row fixed-point grid; the SQL compiled before ROUND and POWER were dropped;
one-scan drift plans) to show where each gap comes from.
Evidently pins its own dependencies, and 0.7.23 declares no upper bound on pandas yet fails to
import with pandas 3 (a removed pandas internal), so it lives in its own venv::

    python3 -m venv /tmp/evvenv && /tmp/evvenv/bin/pip install evidently "pandas<3" pyarrow
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from bench_core import TOKEN, dataset  # same data and token as the core benchmark
from cubes import (  # the hand-written SQL and pandas cubes, shared with bench_peers.py
    AGE,
    DRIFT_COLUMNS,
    IN_WINDOWS,
    INCOME,
    PANDAS_COLUMNS,
    RAW_SQL,
    SCORE10,
    SCORE20,
    pandas_calibration,
    pandas_cohort_errors,
    pandas_confusion,
    pandas_drift,
    pandas_histogram,
    pandas_performance_estimate,
)
from fairlearn.metrics import (
    MetricFrame,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

import pdebug_jupyter  # noqa: F401 (registers the typed releases: calibration, drift, ...)
from pdebug_jupyter.client.local import _readline
from pdebug_jupyter.client.release import Release
from pdebug_jupyter.client.transport import Transport
from pdebug_jupyter.engine import Engine
from pdebug_jupyter.policy import load_policy
from pdebug_jupyter.query import build_query

HERE = Path(__file__).parent
EVIDENTLY_PYTHON = "/tmp/evvenv/bin/python"  # noqa: S108 (a default, overridable)
WINDOWS = {"reference": {"window": "reference"}, "current": {"window": "current"}}


def fairlearn_confusion(df: pd.DataFrame) -> object:
    """Fairlearn's MetricFrame at one threshold, with its between-group differences."""
    frame = MetricFrame(metrics={"selection_rate": selection_rate, "tpr": true_positive_rate,
                                 "fpr": false_positive_rate},
                        y_true=df["default"], y_pred=(df["score"] >= 0.5).astype(int),
                        sensitive_features=df["sex"])
    return frame.by_group, frame.difference()


# --- the free views on the client ------------------------------------------------------------
def _views_calibration(r: Any) -> object:
    return r.ece, r.ece_ci, r.by_group()


VIEWS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "histogram": ("to_frame()", lambda r: r.to_frame()),
    "calibration": ("ece + ece_ci + by_group()", _views_calibration),
    "confusion": ("at(0.5) + gaps(0.5)", lambda r: (r.at(0.5), r.gaps(0.5))),
    "drift": ("to_frame()", lambda r: r.to_frame()),
    "cohort_errors": ("weakest(5) + heatmap()",
                      lambda r: (r.weakest(5), r.heatmap("region", "age"))),
    "performance_estimate": ("at(0.5)", lambda r: r.at(0.5)),
}


@dataclass(frozen=True)
class Kind:
    name: str
    body: dict[str, Any]  # the request body, without epsilon
    pandas: Callable[[pd.DataFrame], object]
    peer: str = ""  # the peer tool's name, where one exists
    peer_fn: Callable[[pd.DataFrame], object] | None = None


KINDS = [
    Kind("histogram", {"kind": "histogram", "column": "age", "by": "sex"}, pandas_histogram),
    Kind("calibration", {"kind": "calibration", "by": "sex"}, pandas_calibration),
    Kind("confusion", {"kind": "confusion", "by": "sex"}, pandas_confusion,
         "Fairlearn MetricFrame", fairlearn_confusion),
    Kind("drift", {"kind": "drift", "columns": DRIFT_COLUMNS, **WINDOWS}, pandas_drift,
         "Evidently DataDriftPreset"),
    Kind("cohort_errors", {"kind": "cohort_errors", "features": ["region", "age"]},
         pandas_cohort_errors),
    Kind("performance_estimate", {"kind": "performance_estimate",
                                  "where": {"window": "current"}}, pandas_performance_estimate),
]

# --- Evidently, in its own interpreter: prints one JSON line ----------------------------------
EVIDENTLY_SCRIPT = r"""
import json, sys, time
t = time.perf_counter()
import pandas as pd
from importlib.metadata import version
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
imported = time.perf_counter() - t
path, repeat, cols = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
t = time.perf_counter()
df = pd.read_parquet(path, columns=[*cols, "window"])
load = time.perf_counter() - t
definition = DataDefinition(numerical_columns=cols[:2], categorical_columns=cols[2:])
runs = []
for _ in range(repeat):
    t = time.perf_counter()
    ref = df[df["window"] == "reference"][cols]
    cur = df[df["window"] == "current"][cols]
    snapshot = Report([DataDriftPreset(columns=cols)]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition))
    result = snapshot.dict()
    runs.append((time.perf_counter() - t) * 1000)
values = {m["config"]["column"]: m["value"] for m in result["metrics"]
          if "column" in m["config"]}
print(json.dumps({"evidently": version("evidently"), "pandas": pd.__version__,
                  "import_ms": imported * 1000, "load_ms": load * 1000, "runs_ms": runs,
                  "values": values}))
"""


def evidently(python: str, data: Path, repeat: int) -> dict[str, Any]:
    """Evidently's data drift on DRIFT_COLUMNS, or {"error": why it did not run}."""
    if not Path(python).exists():
        return {"error": f"{python} not found (create the venv: see this script's docstring)"}
    env = {**os.environ, "DO_NOT_TRACK": "1", "ITERATIVE_DO_NOT_TRACK": "1"}
    proc = subprocess.run([python, "-c", EVIDENTLY_SCRIPT, str(data), str(repeat),
                           ",".join(DRIFT_COLUMNS)], capture_output=True, text=True, env=env,
                          timeout=3600, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return dict(json.loads(lines[-1]))


# --- measuring ---------------------------------------------------------------------------------
def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ms(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def check_equivalent(kind: Kind, raw: list[tuple[Any, ...]], true: list[np.ndarray],
                     names: list[str]) -> None:
    """The hand-written SQL counts the same rows as the service's cubes (all cubes, all cells)."""
    n_raw = sum(row[names.index("n")] for row in raw)
    n_service = sum(int(cube[..., 0].sum()) for cube in true)
    if n_raw != n_service:
        raise SystemExit(f"{kind.name}: the raw SQL counts {n_raw} rows, the service's cubes "
                         f"{n_service}: they are not the same aggregate")


def bench_service(rows: int, directory: Path, kinds: list[Kind], repeat: int
                  ) -> tuple[dict[str, dict[str, Any]], float]:
    data = directory / "loans.parquet"
    policy = load_policy(directory / "policy.toml")
    ds = policy.datasets["loans"]
    con = duckdb.connect()
    src = f"read_parquet('{data}')"
    sqls = {k.name: RAW_SQL[k.name].format(src=src) for k in kinds}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pdebug_jupyter", "serve", "--policy",
                             str(directory / "policy.toml"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    url = json.loads(_readline(proc.stdout, 600))["url"]
    start = time.perf_counter() - t
    engine = Engine(policy)  # the service's engine, in this process, for the SQL alone
    http = Transport(url, TOKEN, None)  # the client a kernel uses

    def release(kind: Kind, eps: float) -> dict[str, Any]:
        body = dict(http.request("POST", "/datasets/loans/query",
                                 {**kind.body, "epsilon": eps}))
        assert body["cached"] is False, "a fresh release was answered from the cache"
        return body

    out: dict[str, dict[str, Any]] = {}
    try:
        for k in kinds:  # warm up: first request, Ibis compilation (kept per query shape)
            cursor = con.execute(sqls[k.name])
            raw = cursor.fetchall()
            names = [d[0] for d in cursor.description]
            query = build_query(ds, {**k.body, "epsilon": 1.0})
            check_equivalent(k, raw, engine.aggregate(query)[0], names)
            out[k.name] = {"payload": release(k, 0.5), "query": query, "raw": [],
                           "sql": [], "fresh": []}
        for i in range(repeat):
            log(f"  {rows:,} rows: repeat {i + 1}/{repeat}")
            for k in kinds:
                r = out[k.name]
                steps: list[tuple[str, Callable[[], object]]] = [
                    ("raw", lambda s=sqls[k.name]: con.execute(s).fetchall()),
                    ("sql", lambda q=r["query"]: engine.aggregate(q)),
                    ("fresh", lambda k=k, eps=1.0 + (i + 1) / 1000: release(k, eps)),
                ]
                for j in range(3):  # rotate the order so none always runs first
                    name, fn = steps[(i + j) % 3]
                    r[name].append(ms(fn))
        for k in kinds:
            r = out[k.name]
            r["ratio"] = med([f / w for f, w in zip(r["fresh"], r["raw"], strict=True)])
            # the fixed cost of a release: HTTP, noise, the ledger transaction, JSON
            r["fixed"] = med([f - q for f, q in zip(r["fresh"], r["sql"], strict=True)])
            fn = VIEWS[k.name][1]
            # a new Release object each time: its cached properties would hide the work
            r["views"] = med([ms(lambda p=r["payload"], fn=fn: fn(Release.of(p)))
                              for _ in range(max(3, repeat // 2))])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        engine.close()
        con.close()
    return out, start


def bench_peers(data: Path, kinds: list[Kind], repeat: int, peer_runs: int
                ) -> tuple[dict[str, Any], float]:
    loads, df = [], None
    for _ in range(repeat):
        del df
        t = time.perf_counter()
        df = pd.read_parquet(data, columns=PANDAS_COLUMNS)
        loads.append((time.perf_counter() - t) * 1000)
    assert df is not None
    out: dict[str, Any] = {k.name: {"pandas": [], "peer": []} for k in kinds}
    for i in range(repeat):
        log(f"  pandas and peers: repeat {i + 1}/{repeat}")
        for k in kinds:
            out[k.name]["pandas"].append(ms(lambda k=k: k.pandas(df)))
            if k.peer_fn is not None and i < peer_runs:
                out[k.name]["peer"].append(ms(lambda k=k: k.peer_fn(df)))  # type: ignore[misc]
    return out, med(loads)


def bench(rows: int, kinds: list[Kind], repeat: int, peer_repeat: int,
          evidently_python: str | None) -> dict[str, Any]:
    directory = dataset(rows)
    data = directory / "loans.parquet"
    service, start = bench_service(rows, directory, kinds, repeat)
    # Fairlearn and Evidently take ~40 s and ~12 s a run at 1M rows, ten times that at 10M
    peer_runs = max(1, min(peer_repeat, 3_000_000 // rows)) if peer_repeat else 0
    peers, load = (bench_peers(data, kinds, peer_repeat, peer_runs) if peer_repeat else
                   ({k.name: {"pandas": [], "peer": []} for k in kinds}, float("nan")))
    ev: dict[str, Any] = {"error": "not requested (--no-evidently)"}
    if peer_repeat and evidently_python and any(k.name == "drift" for k in kinds):
        log(f"  Evidently: {peer_runs} run(s) in {evidently_python}")
        ev = evidently(evidently_python, data, peer_runs)
    return {"rows": rows, "repeat": repeat, "peer_repeat": peer_repeat, "peer_runs": peer_runs,
            "start_s": start, "service": service, "peers": peers, "load_ms": load,
            "evidently": ev}


# --- --explain: where the SQL gap comes from, one change at a time ---------------------------
def _clip(x: str = "score") -> str:
    return f"CASE WHEN {x} < 0.0 THEN 0.0 WHEN {x} > 1.0 THEN 1.0 ELSE {x} END"


def _grid(expr: str, rounded: bool) -> str:
    """A per-row fixed-point integer, as the service sums it (SCORE_SCALE = 10,000)."""
    return f"CAST(ROUND({expr} * 10000, 0) AS BIGINT)" if rounded else \
        f"CAST({expr} * 10000 AS BIGINT)"


def _chain(bins: int) -> str:
    """The service's bin index: a CASE chain against the edges, NaN first."""
    whens = " ".join(f"WHEN score < {i / bins!r} THEN {i - 1}" for i in range(1, bins))
    return (f"CASE WHEN ISNAN(score) THEN -1 {whens} WHEN score IS NOT NULL THEN {bins - 1} "
            "ELSE -1 END")


def _positives(case: bool) -> str:
    return ('SUM(CASE WHEN "default" = 1 THEN 1 ELSE 0 END)' if case
            else 'SUM(CAST("default" = 1 AS INT))')


def calibration_sql(*, rounded: bool, power: bool, chain: bool, grid: bool = True,
                    case: bool = False) -> str:
    b = _chain(10) if chain else SCORE10
    sex = "CASE WHEN sex = 'female' THEN 0 WHEN sex = 'male' THEN 1 ELSE -1 END"
    sq = f"POWER({_clip()}, 2)" if power else f"{_clip()} * {_clip()}"
    if not grid:  # the bins alone: the hand-written double sums
        return (f'SELECT {b} AS b, {sex} AS g, count(*) AS n, sum("default") AS pos, '
                'sum(score) AS s, sum(score * "default") AS sp, sum(score * score) AS ss '
                "FROM {src} GROUP BY ALL")
    return (f"SELECT {b} AS b, {sex} AS g, count(*) AS n, {_positives(case)} AS pos, "
            f"sum({_grid(_clip(), rounded)}) AS s, "
            f'sum(CASE WHEN "default" = 1 THEN {_grid(_clip(), rounded)} ELSE 0 END) AS sp, '
            f"sum({_grid(sq, rounded)}) AS ss FROM {{src}} GROUP BY ALL")


def performance_sql(*, rounded: bool, chain: bool, grid: bool = True) -> str:
    b = _chain(20) if chain else SCORE20
    s = _grid(_clip(), rounded) if grid else "score"
    return (f"SELECT {b} AS b, count(*) AS n, sum({s}) AS s "
            "FROM {src} WHERE \"window\" = 'current' GROUP BY ALL")


EXPLAIN: dict[str, list[tuple[str, str | None]]] = {  # None: the service's engine itself
    "calibration": [
        ("hand-written: floor bins, double sums", RAW_SQL["calibration"]),
        ("+ CASE-chain bins with ISNAN, CASE for the groups",
         calibration_sql(rounded=False, power=False, chain=True, grid=False)),
        ("+ clip and per-row integer grid CAST(x * 10000 AS BIGINT), x * x (compiled before "
         "the value ranges)",
         calibration_sql(rounded=False, power=False, chain=True)),
        ("the service's compiled SQL (engine.aggregate)", None),
        ("before: + ROUND(..., 0) inside the CAST, POWER(x, 2), CASE for positives",
         calibration_sql(rounded=True, power=True, chain=True, case=True)),
    ],
    "performance_estimate": [
        ("hand-written: floor bins, double sum", RAW_SQL["performance_estimate"]),
        ("+ CASE-chain bins with ISNAN", performance_sql(rounded=False, chain=True, grid=False)),
        ("+ clip and per-row integer grid (compiled before the value ranges)",
         performance_sql(rounded=False, chain=True)),
        ("the service's compiled SQL (engine.aggregate)", None),
        ("before: + ROUND(..., 0) inside the CAST", performance_sql(rounded=True, chain=True)),
    ],
    "drift": [
        ("hand-written: one grouped count per column (4 scans)", RAW_SQL["drift"]),
        ("the service's compiled SQL (engine.aggregate; one shared scan)", None),
        ("one scan: GROUPING SETS over (window, column)",
         f"SELECT \"window\", {AGE} AS a, {INCOME} AS i, region, sex, count(*) AS n "
         f"FROM {{src}} WHERE {IN_WINDOWS} GROUP BY GROUPING SETS ((\"window\", a), "
         "(\"window\", i), (\"window\", region), (\"window\", sex))"),
        ("one scan: the joint (window x 4 columns) cube, margins summed after",
         f"SELECT \"window\", {AGE} AS a, {INCOME} AS i, region, sex, count(*) AS n "
         f"FROM {{src}} WHERE {IN_WINDOWS} GROUP BY ALL"),
    ],
}


def explain(rows: int, kinds: list[Kind], repeat: int) -> list[str]:
    """Time each variant of EXPLAIN's ladders, interleaved; medians, and the ratio to the
    hand-written query of the same ladder."""
    directory = dataset(rows)
    policy = load_policy(directory / "policy.toml")
    engine, con = Engine(policy), duckdb.connect()
    src = f"read_parquet('{directory / 'loans.parquet'}')"
    steps: list[tuple[str, str, Callable[[], object]]] = []
    for k in kinds:
        query = build_query(policy.datasets["loans"], {**k.body, "epsilon": 1.0})
        for label, sql in EXPLAIN.get(k.name, []):
            text = sql.format(src=src) if sql is not None else ""
            fn: Callable[[], object] = (
                (lambda q=query: engine.aggregate(q)) if sql is None
                else (lambda s=text: con.execute(s).fetchall()))
            fn()  # warm up
            steps.append((k.name, label, fn))
    times: list[list[float]] = [[] for _ in steps]
    for i in range(repeat):
        log(f"  explain {rows:,} rows: repeat {i + 1}/{repeat}")
        for step in range(len(steps)):
            j = (step + i) % len(steps)  # rotate the order
            times[j].append(ms(steps[j][2]))
    engine.close()
    con.close()
    lines = [f"**{rows:,} rows, --explain**: medians of {repeat} interleaved runs", "",
             "| kind | variant | ms | vs hand-written |", "| --- | --- | ---: | ---: |"]
    base = 0.0
    for (kind, label, _), t in zip(steps, times, strict=True):
        if label.startswith("hand-written"):
            base = med(t)
        lines.append(f"| {kind} | {label} | {fmt(med(t))} | {med(t) / base:.2f} |")
    return lines


# --- reporting ---------------------------------------------------------------------------------
def fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"


def table(result: dict[str, Any], kinds: list[Kind]) -> list[str]:
    ev = result["evidently"]
    ev_note = (f"Evidently {ev['evidently']} (pandas {ev['pandas']}, own venv): load "
               f"{fmt(ev['load_ms'], 0)} ms, median of {len(ev['runs_ms'])} run(s)"
               if "error" not in ev else f"Evidently not run: {ev['error']}")
    lines = [
        f"**{result['rows']:,} rows**: service and raw medians of {result['repeat']} "
        f"interleaved runs; pandas of {result['peer_repeat']}, Fairlearn of "
        f"{result['peer_runs']}; pandas load "
        f"(7 columns) {fmt(result['load_ms'], 0)} ms, not included below; {ev_note}; service "
        f"start {result['start_s']:.1f} s",
        "",
        "| kind | raw DuckDB ms | service SQL ms (in-process) | fresh release ms | "
        "fresh/raw (target <= 1.3) | fresh - service SQL ms | pandas groupby ms | peer tool | "
        "peer ms | views | views ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for k in kinds:
        s, p = result["service"][k.name], result["peers"][k.name]
        peer_ms = med(p["peer"])
        if k.name == "drift":
            peer_ms = med(ev["runs_ms"]) if "error" not in ev else float("nan")
        ratio = s["ratio"]
        mark = "" if ratio <= 1.3 else " (miss)"
        lines.append(
            f"| {k.name} | {fmt(med(s['raw']))} | {fmt(med(s['sql']))} | {fmt(med(s['fresh']))} "
            f"| {ratio:.2f}{mark} | {fmt(s['fixed'])} | {fmt(med(p['pandas']))} | {k.peer or '-'} | "
            f"{fmt(peer_ms) if k.peer else '-'} | {VIEWS[k.name][0]} | {fmt(s['views'])} |")
    if "drift" in result["service"] and "error" not in ev:
        frame = Release.of(result["service"]["drift"]["payload"]).to_frame()
        ours = ", ".join(f"{r.column} {r.method} {r.statistic:.3f}" for r in frame.itertuples())
        theirs = ", ".join(f"{c} {v:.3f}" for c, v in ev["values"].items())
        lines += ["", f"Same analysis: the release (epsilon 0.5, binned) says {ours}; "
                      f"Evidently (raw rows) says {theirs}."]
    lines.append("")
    lines.append("| kind | raw runs ms | fresh runs ms |")
    lines.append("| --- | --- | --- |")
    for k in kinds:
        s = result["service"][k.name]
        lines.append(f"| {k.name} | {' '.join(f'{x:.0f}' for x in s['raw'])} | "
                     f"{' '.join(f'{x:.0f}' for x in s['fresh'])} |")
    return lines


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (f"machine: {os.cpu_count()} cores ({cpu}), {platform.python_implementation()} "
            f"{platform.python_version()}, duckdb {duckdb.__version__}, pandas {pd.__version__}, "
            f"fairlearn {installed('fairlearn')}, numpy {np.__version__}; load average at start "
            f"{os.getloadavg()[0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, default=11,
                   help="interleaved service/raw runs (halved, at least 5, above 2M rows)")
    p.add_argument("--peer-repeat", type=int, default=3,
                   help="pandas and Fairlearn runs; 0 skips the peers (and Evidently)")
    p.add_argument("--kinds", nargs="+", choices=[k.name for k in KINDS],
                   default=[k.name for k in KINDS])
    p.add_argument("--evidently-python", default=EVIDENTLY_PYTHON,
                   help="an interpreter with evidently installed (its own venv)")
    p.add_argument("--no-evidently", action="store_true")
    p.add_argument("--explain", action="store_true",
                   help="instead: time the SQL variants that show where each gap comes from "
                        "(calibration, performance_estimate, drift)")
    args = p.parse_args()
    kinds = [k for k in KINDS if k.name in args.kinds]
    header = machine()
    t = time.perf_counter()
    lines: list[str] = []
    for n in args.rows:
        repeat = args.repeat if n <= 2_000_000 else max(5, args.repeat // 2)
        if args.explain:
            lines += explain(n, kinds, repeat) + [""]
        else:
            lines += table(bench(n, kinds, repeat, args.peer_repeat,
                                 None if args.no_evidently else args.evidently_python),
                           kinds) + [""]
    lines[:0] = [f"{header}; load average at end {os.getloadavg()[0]:.2f}; whole run "
                 f"{time.perf_counter() - t:.0f} s", ""]
    lines.append("attribution: not measured (the synthetic loans declare no attribution "
                 "columns).")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
