"""Load benchmark: latency percentiles and throughput of many concurrent clients.

One real service process over the core benchmark's synthetic loans (the same Parquet file as
bench_core.py, with a policy and ledger of its own under benchmarks/data/load-<rows>/, so a
run never touches another benchmark's ledger). Clients are threads in this process, each with
its own :class:`~pdebug_jupyter.client.transport.Transport` (the client a kernel uses) and a
closed loop: send, wait for the answer, send the next. All clients start together at a
barrier. Mixes:

* ``cached``: repeats of releases made beforehand (the cache: a lookup and an audit row),
* ``fresh``: new releases (a new epsilon each, so never cached: query, noise, one fsync'd
  ledger transaction),
* ``mixed``: 80% cached, 20% fresh.

Four query shapes (histogram age x sex, histogram income x region, calibration by sex,
confusion by sex), chosen at random; clients are spread over five users. Reported per mix and
client count: p50/p95/p99 latency of every request, throughput (requests over the wall time
from the barrier to the last answer), errors, the load average (``uptime``) before and after,
and the CPU time over the wall time (1.0 = one core busy) of the service process and of this
one (the clients). The clients share the machine with the service: this measures the pair.

Run: ``python benchmarks/bench_load.py [--rows 1000000] [--clients 1 50]
[--requests cached=1000 fresh=200 mixed=500] [--mixes cached fresh mixed]`` (requests per
run, split over the clients).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from bench_core import HERE, dataset  # the core benchmark's data

from pdebug_jupyter.client.local import _readline
from pdebug_jupyter.client.transport import Transport

USERS = {f"load-bench-token-{i}-00000000": f"bench{i}" for i in range(5)}
SHAPES: tuple[dict[str, Any], ...] = (
    {"kind": "histogram", "column": "age", "by": "sex"},
    {"kind": "histogram", "column": "income", "by": "region"},
    {"kind": "calibration", "by": "sex"},
    {"kind": "confusion", "by": "sex"},
)
CACHED_POOL = 3  # epsilons per shape released beforehand: 12 cached releases to repeat
FRESH_SHARE = {"cached": 0.0, "fresh": 1.0, "mixed": 0.2}


def policy(rows: int) -> Path:
    """A policy of our own over the core benchmark's Parquet file, with a fresh ledger."""
    source = HERE / "data" / f"loans-{rows}" / "loans.parquet"
    if not source.exists():
        dataset(rows)  # generates it (and clears that directory's ledger, unused yet)
    directory = HERE / "data" / f"load-{rows}"
    directory.mkdir(parents=True, exist_ok=True)
    for f in directory.glob("ledger.sqlite*"):
        f.unlink()
    text = (source.parent / "policy.toml").read_text()
    text = text.replace('source = "loans.parquet"', f'source = "{source}"')
    text += "".join(f'\n[[users]]\nname = "{name}"\nrole = "analyst"\ntoken = "{token}"\n'
                    for token, name in USERS.items())
    path = directory / "policy.toml"
    path.write_text(text)
    return path


def uptime() -> str:
    return subprocess.run(["/usr/bin/uptime"], capture_output=True, text=True).stdout.strip()


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> list[float]:
    return [float(v) for v in np.percentile(values, [50, 95, 99])] if values else [np.nan] * 3


class Run:
    """One mix at one client count: every client's latencies and the wall time."""

    def __init__(self, url: str, clients: int, requests: int, fresh_share: float,
                 epsilons: itertools.count[int], service_pid: int) -> None:
        self.url, self.clients, self.requests = url, clients, requests // clients
        self.fresh_share, self.epsilons, self.pid = fresh_share, epsilons, service_pid
        self.lock = threading.Lock()
        self.latencies: dict[bool, list[float]] = {True: [], False: []}  # by "cached"
        self.errors: list[str] = []
        self.barrier = threading.Barrier(clients + 1)

    def body(self, rng: random.Random) -> dict[str, Any]:
        shape = rng.choice(SHAPES)
        if rng.random() < self.fresh_share:
            with self.lock:
                n = next(self.epsilons)
            return {**shape, "epsilon": 1.0 + n / 1_000_000}
        return {**shape, "epsilon": 0.5 + rng.randrange(CACHED_POOL) / 10}

    def client(self, i: int) -> None:
        rng = random.Random(i)
        http = Transport(self.url, list(USERS)[i % len(USERS)], None)
        http.request("GET", "/me")  # the connection is set up before the clock starts
        bodies = [self.body(rng) for _ in range(self.requests)]
        mine: dict[bool, list[float]] = {True: [], False: []}
        self.barrier.wait()
        for body in bodies:
            t = time.perf_counter()
            try:
                reply = http.request("POST", "/datasets/loans/query", body)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with self.lock:
                    self.errors.append(repr(exc))
                continue
            mine[bool(reply["cached"])].append((time.perf_counter() - t) * 1000)
        with self.lock:
            for cached, ms in mine.items():
                self.latencies[cached] += ms
        http.close()

    def measure(self) -> dict[str, Any]:
        threads = [threading.Thread(target=self.client, args=(i,)) for i in range(self.clients)]
        for t in threads:
            t.start()
        before, cpu = load_average(), cpu_seconds(self.pid)
        mine = time.process_time()
        self.barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu, mine = cpu_seconds(self.pid) - cpu, time.process_time() - mine
        every = self.latencies[True] + self.latencies[False]
        p50, p95, p99 = percentiles(every)
        return {"clients": self.clients, "requests": len(every),
                "fresh": len(self.latencies[False]), "cached": len(self.latencies[True]),
                "errors": len(self.errors), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                "cached_p50_ms": percentiles(self.latencies[True])[0],
                "fresh_p50_ms": percentiles(self.latencies[False])[0],
                "throughput_rps": len(every) / wall, "wall_s": wall,
                "service_cpu": cpu / wall, "client_cpu": mine / wall, "load_before": before,
                "load_after": load_average(), "first_errors": self.errors[:3]}


def bench(rows: int, clients: list[int], requests: dict[str, int], mixes: list[str]
          ) -> list[dict[str, Any]]:
    path = policy(rows)
    proc = subprocess.Popen([sys.executable, "-m", "pdebug_jupyter", "serve", "--policy",
                             str(path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    url = json.loads(_readline(proc.stdout, 600))["url"]
    results = []
    try:
        warm = Transport(url, next(iter(USERS)), None)
        for shape in SHAPES:  # the cached pool, and every kind's first-use costs
            for k in range(CACHED_POOL):
                warm.request("POST", "/datasets/loans/query", {**shape, "epsilon": 0.5 + k / 10})
        epsilons = itertools.count()
        for mix in mixes:
            share = FRESH_SHARE[mix]
            for n in clients:
                result = Run(url, n, requests[mix], share, epsilons, proc.pid).measure()
                results.append({"rows": rows, "mix": mix, **result})
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return results


def ms(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 50])
    p.add_argument("--requests", nargs="+", default=["cached=1000", "fresh=200", "mixed=500"],
                   help="requests per run for each mix, as MIX=N (split over the clients)")
    p.add_argument("--mixes", nargs="+", choices=list(FRESH_SHARE), default=list(FRESH_SHARE))
    args = p.parse_args()
    requests = {mix: int(n) for mix, n in (r.split("=") for r in args.requests)}
    print(f"before: {uptime()}")
    results = bench(args.rows, args.clients, requests, args.mixes)
    print(f"after: {uptime()}")
    print(f"machine: {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, duckdb {duckdb.__version__}, {args.rows:,} rows")
    print()
    print("| mix | clients | requests (fresh / cached) | errors | p50 ms | p95 ms | p99 ms "
          "| p50 ms cached / fresh | throughput req/s | service / client CPU | load average "
          "before -> after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        print(f"| {r['mix']} | {r['clients']} | {r['requests']} ({r['fresh']} / {r['cached']}) "
              f"| {r['errors']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} "
              f"| {ms(r['cached_p50_ms'])} / {ms(r['fresh_p50_ms'])} "
              f"| {r['throughput_rps']:.1f} | {r['service_cpu']:.2f} / {r['client_cpu']:.2f} "
              f"| {r['load_before']} -> {r['load_after']} |")


if __name__ == "__main__":
    main()
