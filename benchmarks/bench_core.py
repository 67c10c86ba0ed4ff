"""Service core benchmark: fresh and cached histogram releases against raw DuckDB.

For each size it writes synthetic loans (once, under benchmarks/data/), starts the real
service process, and measures over HTTP:

* a fresh grouped histogram release (age bins x sex; a new epsilon each time so nothing is
  cached) against the same grouped count run directly in DuckDB on the same Parquet file,
* a cached release (the same query again),
* the service process's peak resident memory (VmHWM).

Targets (ARCHITECTURE.md): fresh/raw at most 1.3, cached under 20 ms, peak under 1 GiB at
10M rows. Run: ``python benchmarks/bench_core.py [--rows 1000000 10000000] [--repeat 7]``.
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
from pathlib import Path

import duckdb

from pdebug_jupyter.client.local import _readline
from pdebug_jupyter.client.transport import Transport
from pdebug_jupyter.synth import make_loans

HERE = Path(__file__).parent
TOKEN = "bench-token-000000000000"  # noqa: S105 (a throwaway local benchmark token)
RAW_SQL = """
SELECT CASE WHEN age < 25 THEN 0 WHEN age < 35 THEN 1 WHEN age < 45 THEN 2 WHEN age < 55 THEN 3
            WHEN age < 65 THEN 4 WHEN age IS NOT NULL THEN 5 ELSE -1 END AS a,
       CASE WHEN sex = 'female' THEN 0 WHEN sex = 'male' THEN 1 ELSE -1 END AS s,
       count(*) AS n
FROM read_parquet('{path}') GROUP BY ALL
"""


def dataset(rows: int) -> Path:
    directory = HERE / "data" / f"loans-{rows}"
    if not (directory / "policy.toml").exists():
        t = time.perf_counter()
        make_loans(rows, seed=1, path=directory,
                   users=[{"name": "bench", "role": "analyst", "token": TOKEN}],
                   epsilon_per_user=1e6, epsilon_total=1e6)
        print(f"  generated {rows:,} rows in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    ledger = directory / "ledger.sqlite"
    for f in directory.glob("ledger.sqlite*"):
        f.unlink()
    assert not ledger.exists()
    return directory


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench(rows: int, repeat: int) -> dict[str, float]:
    directory = dataset(rows)
    data = directory / "loans.parquet"
    con = duckdb.connect()
    sql = RAW_SQL.format(path=data)
    con.execute(sql).fetchall()  # warm the OS page cache like the service's start does
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pdebug_jupyter", "serve", "--policy",
                             str(directory / "policy.toml"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    url = json.loads(_readline(proc.stdout, 600))["url"]
    start = time.perf_counter() - t
    http = Transport(url, TOKEN, None)  # the client a kernel uses

    def release(eps: float) -> dict[str, object]:
        return dict(http.request("POST", "/datasets/loans/query", {
            "kind": "histogram", "column": "age", "by": "sex", "epsilon": eps}))

    release(0.5)  # first request: connection set-up, imports on first use
    # interleave raw and fresh runs so drift in the machine's speed hits both alike
    raw, fresh = [], []
    for i in range(repeat):
        raw += timed(lambda _: con.execute(sql).fetchall(), 1)
        fresh += timed(lambda _, eps=1.0 + i / 100: release(eps), 1)
    assert release(1.0)["cached"] is True
    cached = timed(lambda i: release(1.0), repeat * 3)
    peak = peak_rss_mib(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    med_raw, med_fresh = statistics.median(raw), statistics.median(fresh)
    ratios = [f / r for f, r in zip(fresh, raw, strict=True)]
    return {"rows": rows, "raw_ms": med_raw, "fresh_ms": med_fresh,
            "ratio": statistics.median(ratios), "cached_ms": statistics.median(cached),
            "peak_mib": peak, "start_s": start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()
    results = [bench(n, args.repeat) for n in args.rows]
    lines = [
        f"machine: {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, duckdb {duckdb.__version__}; medians of "
        f"{args.repeat} runs (cached: {args.repeat * 3})",
        "",
        "| rows | raw DuckDB ms | fresh release ms | median ratio (target <= 1.3) | cached ms "
        "(target < 20) | service peak MiB (target < 1024) | service start s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['raw_ms']:.1f} | {r['fresh_ms']:.1f} | "
                     f"{r['ratio']:.2f} | {r['cached_ms']:.1f} | {r['peak_mib']:.0f} | "
                     f"{r['start_s']:.1f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
