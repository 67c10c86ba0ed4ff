"""Each query kind in each peer tool, one process per tool, kind and size: latency, peak
memory, and how the cost grows with the rows.

For each size (100k, 1M, 10M rows of ``make_loans``, the same Parquet files as the other
benchmarks, under benchmarks/data/) and each kind, it runs every tool that can express the
kind in a process of its own (``peer_workers.py`` in that tool's interpreter):

* ``duckdb``: the hand-written aggregate of ``cubes.RAW_SQL`` (no privacy; the floor);
* ``service``: a fresh release over HTTP through the client a kernel uses (a new epsilon
  each run, so nothing is cached), from a service process started for this kind alone;
  its peak is the service process's ``VmHWM``;
* ``pandas``: a pandas groupby computing the same cube (no privacy);
* ``smartnoise-duckdb``: SmartNoise SQL over a DuckDB connection, the customer as privacy
  unit (``private_id``, ``max_ids`` 1); ``smartnoise-duckdb-rows``: the same with each row
  its own unit (``row_privacy``); ``smartnoise-pandas``: its own pandas reader (which copies
  the frame into SQLite first; 100k and 1M rows only, every kind in one process);
* ``opendp``: OpenDP's Polars measurements over a lazy Parquet scan, public keys joined;
* ``evidently``: Evidently's ``DataDriftPreset`` on the drift columns (``drift`` only).

Every DP tool spends the same epsilon per kind as the service (``--epsilon``, 1 by default),
split over the same measures. Latency is the median of the timed runs; peak is the process's
``VmHWM``. Results go to a JSON-lines file, then a Markdown summary is printed (``--report``
prints it again from a file). The peers live in their own virtual environments: SmartNoise
SQL pins pandas below 3 and an older OpenDP, Evidently fails to import with pandas 3::

    python3 -m venv /tmp/snvenv && /tmp/snvenv/bin/pip install "smartnoise-sql==1.0.10" \\
        "pandas<3" pyarrow duckdb
    python3 -m venv /tmp/odpvenv && /tmp/odpvenv/bin/pip install "opendp[polars]==0.16.*" pyarrow
    python3 -m venv /tmp/evvenv && /tmp/evvenv/bin/pip install evidently "pandas<3" pyarrow

Run: ``python benchmarks/bench_peers.py [--rows 100000 1000000 10000000] [--repeat 5]
[--tools ...] [--kinds ...]`` (at most 3 runs at 10M, and each tool stops repeating after
``--budget`` seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench_core import TOKEN, dataset, peak_rss_mib  # the same data and token
from cubes import KINDS, MEASURES

from pdebug_jupyter.client.local import _readline
from pdebug_jupyter.client.transport import Transport
from pdebug_jupyter.policy import load_policy
from pdebug_jupyter.privacy import plan_noise
from pdebug_jupyter.query import build_query

HERE = Path(__file__).parent
WORKER = HERE / "peer_workers.py"
VENVS = {  # interpreter -> how to create it
    "/tmp/snvenv/bin/python": 'python3 -m venv /tmp/snvenv && /tmp/snvenv/bin/pip install '  # noqa: S108
                              '"smartnoise-sql==1.0.10" "pandas<3" pyarrow duckdb',
    "/tmp/odpvenv/bin/python": 'python3 -m venv /tmp/odpvenv && /tmp/odpvenv/bin/pip install '  # noqa: S108
                               '"opendp[polars]==0.16.*" pyarrow',
    "/tmp/evvenv/bin/python": 'python3 -m venv /tmp/evvenv && /tmp/evvenv/bin/pip install '  # noqa: S108
                              'evidently "pandas<3" pyarrow',
}
SN, ODP, EV = list(VENVS)
PYTHON = {"duckdb": sys.executable, "service": sys.executable, "pandas": sys.executable,
          "smartnoise-duckdb": SN, "smartnoise-duckdb-rows": SN, "smartnoise-pandas": SN,
          "opendp": ODP, "evidently": EV}
TOOLS = list(PYTHON)
LABELS = {"duckdb": "raw DuckDB", "service": "service (fresh release)", "pandas": "pandas groupby",
          "smartnoise-duckdb": "SmartNoise (DuckDB, per-unit)",
          "smartnoise-duckdb-rows": "SmartNoise (DuckDB, row unit)",
          "smartnoise-pandas": "SmartNoise (pandas reader)", "opendp": "OpenDP (Polars)",
          "evidently": "Evidently drift"}
ONLY = {"evidently": {"drift"}}
MAX_ROWS = {"smartnoise-pandas": 1_000_000}  # its reader copies every row into SQLite
ONE_PROCESS = {"smartnoise-pandas"}  # that copy dwarfs a query: one setup for every kind
BODIES = {"histogram": {"kind": "histogram", "column": "age", "by": "sex"},
          "calibration": {"kind": "calibration", "by": "sex"},
          "confusion": {"kind": "confusion", "by": "sex"},
          "drift": {"kind": "drift", "columns": ["age", "income", "region", "sex"],
                    "reference": {"window": "reference"}, "current": {"window": "current"}},
          "cohort_errors": {"kind": "cohort_errors", "features": ["region", "age"]},
          "performance_estimate": {"kind": "performance_estimate",
                                   "where": {"window": "current"}}}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def check_venvs(tools: Iterable[str]) -> None:
    for tool in tools:
        python = PYTHON[tool]
        if python in VENVS and not Path(python).exists():
            raise SystemExit(f"{tool}: {python} is missing; create it with: {VENVS[python]}")


def check_split(directory: Path, epsilon: float) -> None:
    """The peers' epsilon split (cubes.MEASURES) is the service's own (privacy.plan_noise)."""
    ds = load_policy(directory / "policy.toml").datasets["loans"]
    for kind, body in BODIES.items():
        plan = plan_noise(build_query(ds, {**body, "epsilon": epsilon}), 1)
        shares = [n.epsilon for cube in plan for n in cube]
        if len(shares) != MEASURES[kind] or not math.isclose(sum(shares), epsilon):
            raise SystemExit(f"{kind}: the service splits epsilon over {len(shares)} measures, "
                             f"cubes.MEASURES says {MEASURES[kind]}")


def run_worker(tool: str, kinds: list[str], data: Path, rows: int, repeat: int,
               epsilon: float, budget: float) -> list[dict[str, Any]]:
    argv = [PYTHON[tool], str(WORKER), tool, ",".join(kinds), str(data), str(rows), str(repeat),
            str(epsilon), str(budget)]
    env = {**os.environ, "DO_NOT_TRACK": "1", "ITERATIVE_DO_NOT_TRACK": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=7200,
                          check=False, cwd=HERE)
    out = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or len(out) != len(kinds):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        out += [{"tool": tool, "kind": k, "rows": rows, "error": f"exit {proc.returncode}: "
                 f"{tail}"} for k in kinds[len(out):]]
    return out


def start_service(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "pdebug_jupyter", "serve", "--policy",
                             str(directory / "policy.toml"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    return proc, json.loads(_readline(proc.stdout, 900))["url"]


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def run_service(kind: str, directory: Path, rows: int, repeat: int, epsilon: float,
                budget: float) -> dict[str, Any]:
    """Fresh releases of one kind from a service process started for it (the per-version
    bounding proof is already cached by the size's first start), and that process's peak."""
    t = time.perf_counter()
    proc, url = start_service(directory)
    start_ms = (time.perf_counter() - t) * 1000
    http = Transport(url, TOKEN, None)  # the client a kernel uses
    calls = [0]

    def release() -> dict[str, Any]:
        calls[0] += 1  # a new epsilon each time (1e-4 apart), so nothing is cached
        body = dict(http.request("POST", "/datasets/loans/query",
                                 {**BODIES[kind], "epsilon": epsilon + calls[0] / 10_000}))
        assert body["cached"] is False
        return body

    try:
        t = time.perf_counter()
        first = release()
        first_ms = (time.perf_counter() - t) * 1000
        runs: list[float] = []
        started = time.perf_counter()
        while len(runs) < repeat and (not runs or time.perf_counter() - started < budget):
            t = time.perf_counter()
            release()
            runs.append((time.perf_counter() - t) * 1000)
        peak = peak_rss_mib(proc.pid)
    finally:
        http.close()
        stop_service(proc)
    return {"tool": "service", "kind": kind, "rows": rows, "start_ms": start_ms,
            "first_ms": first_ms, "runs_ms": runs, "peak_mib": peak, "epsilon": epsilon,
            "result": {"cells": len(first["cells"]), "suppressed": len(first.get("suppressed", []))}}


def bench_size(rows: int, tools: list[str], kinds: list[str], repeat: int, epsilon: float,
               budget: float, out: Any) -> None:
    directory = dataset(rows)
    data = directory / "loans.parquet"
    check_split(directory, epsilon)
    if "service" in tools:  # the first start proves one row per customer and caches it
        t = time.perf_counter()
        proc, _ = start_service(directory)
        stop_service(proc)
        log(f"{rows:,} rows: first service start {time.perf_counter() - t:.1f} s")

    def record(batch: list[dict[str, Any]], load: float) -> None:
        for r in batch:
            r["load_average"] = [load, os.getloadavg()[0]]  # 1-minute, before and after
            out.write(json.dumps(r) + "\n")
            out.flush()
            if "error" in r:
                log(f"  {r['tool']} {r['kind']}: {r['error']}")

    for tool in (t for t in tools if t in ONE_PROCESS and rows <= MAX_ROWS.get(t, rows)):
        log(f"{rows:,} rows: {tool}, every kind in one process")
        load = os.getloadavg()[0]
        record(run_worker(tool, [k for k in kinds if k in ONLY.get(tool, KINDS)], data, rows,
                          repeat, epsilon, budget), load)
    for kind in kinds:
        for tool in tools:
            if (tool in ONE_PROCESS or kind not in ONLY.get(tool, KINDS)
                    or rows > MAX_ROWS.get(tool, rows)):
                continue
            load = os.getloadavg()[0]
            log(f"{rows:,} rows: {kind} / {tool} (load average {load:.1f})")
            if tool == "service":
                record([run_service(kind, directory, rows, repeat, epsilon, budget)], load)
            else:
                record(run_worker(tool, [kind], data, rows, repeat, epsilon, budget), load)


# --- the summary ---------------------------------------------------------------------------------
def med(r: dict[str, Any] | None) -> float:
    if not r or "error" in r or not r.get("runs_ms"):
        return float("nan")
    return float(statistics.median(r["runs_ms"]))


def ms(x: float) -> str:
    if x != x:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def growth(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares exponent b of ms = a * rows^b, and ms per million rows from 1M to 10M."""
    pts = [(n, t) for n, t in points if t == t and t > 0]
    if len(pts) < 2:
        return float("nan"), float("nan")
    xs, ys = [math.log(n) for n, _ in pts], [math.log(t) for _, t in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)
    by = dict(pts)
    per_m = ((by[10_000_000] - by[1_000_000]) / 9 if {1_000_000, 10_000_000} <= by.keys()
             else float("nan"))
    return b, per_m


def report(results: list[dict[str, Any]]) -> str:
    index = {(r["tool"], r["kind"], r["rows"]): r for r in results}
    sizes = sorted({r["rows"] for r in results})
    tools = [t for t in TOOLS if any(r["tool"] == t for r in results)]
    kinds = [k for k in KINDS if any(r["kind"] == k for r in results)]
    lines: list[str] = []
    for rows in (s for s in sizes if s >= 1_000_000):
        present = [t for t in tools if any((t, k, rows) in index for k in kinds)]
        lines += [f"**{rows:,} rows**: median ms of the timed runs / peak resident MiB of the "
                  "tool's process (n = runs)", "",
                  "| kind | " + " | ".join(LABELS[t] for t in present) + " |",
                  "| --- |" + " ---: |" * len(present)]
        for kind in kinds:
            cells = []
            for t in present:
                r = index.get((t, kind, rows))
                if r is None:
                    cells.append("-")
                elif "error" in r:
                    cells.append("error")
                else:
                    cells.append(f"{ms(med(r))} / {r['peak_mib']:.0f} (n={len(r['runs_ms'])})")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Growth with rows**: median ms at each size; exponent b of a least-squares fit "
              "of ms = a * rows^b over the sizes; ms per million rows from 1M to 10M", "",
              "| tool | kind | " + " | ".join(f"{s:,}" for s in sizes)
              + " | b | ms per 1M rows |", "| --- | --- |" + " ---: |" * (len(sizes) + 2)]
    for t in tools:
        for kind in kinds:
            points = [(s, med(index.get((t, kind, s)))) for s in sizes]
            if all(p != p for _, p in points):
                continue
            b, per_m = growth(points)
            lines.append(f"| {LABELS[t]} | {kind} | " + " | ".join(ms(p) for _, p in points)
                         + f" | {'-' if b != b else f'{b:.2f}'} | {ms(per_m)} |")
    lines += ["", "**One-off costs** (medians over kinds): import s / resident MiB after "
              "import; setup s (load, reader); prepare ms (query or measurement, epsilon fit)",
              "", "| tool | rows | import s | MiB after import | setup s | prepare ms |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for t in tools:
        for rows in sizes:
            rs = [r for r in results if r["tool"] == t and r["rows"] == rows and "error" not in r]
            if not rs:
                continue

            def mid(key: str, rs: list[dict[str, Any]] = rs) -> float:
                values = [r[key] for r in rs if key in r]
                return statistics.median(values) if values else float("nan")
            setup = mid("start_ms") if t == "service" else mid("setup_ms")
            lines.append(f"| {LABELS[t]} | {rows:,} | {ms(mid('import_ms') / 1000)} | "
                         f"{ms(mid('import_mib'))} | {ms(setup / 1000)} | "
                         f"{ms(mid('prepare_ms'))} |")
    resolve = [r["context_resolve_ms"] for r in results if "context_resolve_ms" in r]
    if resolve:
        lines += ["", f"OpenDP's Context API resolving the histogram query (a binary search "
                  f"for the noise scale): {ms(statistics.median(resolve))} ms median over "
                  f"{len(resolve)} size(s); the measurements above fit the scale directly."]
    for rows in sizes:
        loads = [x for r in results if r["rows"] == rows for x in r.get("load_average", [])]
        if loads:
            lines.append(f"Load average (1 min) before and after each process, {rows:,} rows: "
                         f"{min(loads):.1f} to {max(loads):.1f}, median "
                         f"{statistics.median(loads):.1f}.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, default=5, help="timed runs (at most 3 above 2M rows)")
    p.add_argument("--budget", type=float, default=60.0,
                   help="seconds after which a tool stops repeating (it runs at least once)")
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--tools", nargs="+", choices=TOOLS, default=TOOLS)
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--out", type=Path, help="JSON lines (default: benchmarks/data/peers-<time>"
                   ".jsonl; appended to)")
    p.add_argument("--report", type=Path, nargs="+",
                   help="print the summary of these JSON-lines files and exit")
    args = p.parse_args()
    if args.report:
        results = [json.loads(line) for f in args.report for line in f.read_text().splitlines()
                   if line.strip()]
        print(report(results))
        return
    check_venvs(args.tools)
    out_path = args.out or HERE / "data" / f"peers-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    log(f"results: {out_path}")
    with out_path.open("a") as out:
        for rows in args.rows:
            repeat = args.repeat if rows <= 2_000_000 else min(3, args.repeat)
            bench_size(rows, args.tools, args.kinds, repeat, args.epsilon, args.budget, out)
    results = [json.loads(line) for line in out_path.read_text().splitlines() if line.strip()]
    print(f"{os.cpu_count()} cores; whole run {time.perf_counter() - t:.0f} s; results in "
          f"{out_path}\n")
    print(report(results))


if __name__ == "__main__":
    main()
