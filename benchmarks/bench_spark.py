"""The Spark backend against DuckDB, in the engine (no service, no noise): Spark's start,
each dataset's first version (schema, bounding proof), then every query kind on the same
Parquet file through both backends, interleaved.

``python benchmarks/bench_spark.py [--rows 20000 1000000] [--repeat 5] [--master local[2]]
[--conf KEY=VALUE ...]``

Data comes from the project's ``make_loans`` under ``benchmarks/data/``. Medians of the
repeats after one warm-up run per kind (Spark compiles each new query's code on its first
run). Spark in local mode on 2 shared cores is a functional stand-in for a cluster, not a
performance claim about one.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from pdebug_jupyter.engine import Engine
from pdebug_jupyter.policy import load_policy
from pdebug_jupyter.query import build_query
from pdebug_jupyter.synth import make_loans

DATA = Path(__file__).parent / "data"
KINDS = {
    "histogram": {"column": "age", "by": "sex"},
    "calibration": {"score": "score", "label": "default", "by": "sex"},
    "confusion": {"score": "score", "label": "default", "by": "sex"},
    "drift": {"reference": {"window": "reference"}, "current": {"window": "current"}},
    "cohort_errors": {"features": ["sex", "region"], "label": "default", "score": "score"},
    "performance_estimate": {"score": "score"},
}


def policy_for(rows: int, master: str, conf: list[str]) -> Path:
    where = DATA / f"spark-loans-{rows}"
    if not (where / "loans.parquet").exists():
        make_loans(rows, seed=11, path=where)
    shutil.rmtree(where / ".pdebug-cache", ignore_errors=True)  # measure the first proof
    text = (where / "policy.toml").read_text()
    text = text.replace('source = "loans.parquet"', f'source = "{where / "loans.parquet"}"')
    twin = text[text.index("[datasets.loans]"):].replace("[datasets.loans", "[datasets.twin")
    twin = twin.replace('backend = "duckdb"', 'backend = "spark"')
    settings = "\n".join(f'"{k}" = "{v}"' for k, v in (c.split("=", 1) for c in conf))
    path = where / "bench-spark.toml"
    path.write_text(f'{text}\n{twin}\n[spark]\nmaster = "{master}"\n[spark.conf]\n{settings}\n')
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--conf", nargs="*", default=[], help="extra [spark.conf] KEY=VALUE")
    args = parser.parse_args()
    for rows in args.rows:
        policy = load_policy(policy_for(rows, args.master, args.conf), require_tokens=False)
        t = time.perf_counter()
        engine = Engine(policy)
        start = time.perf_counter() - t
        first = {}
        for name in ("loans", "twin"):
            t = time.perf_counter()
            engine.version(name)
            first[name] = time.perf_counter() - t
        print(f"{rows:,} rows: Spark start {start:.1f} s; first version (schema, proof) "
              f"DuckDB {first['loans']:.2f} s, Spark {first['twin']:.1f} s")
        print(f"{'kind':<22}{'DuckDB ms':>11}{'Spark ms':>11}{'ratio':>8}")
        for kind, body in KINDS.items():
            queries = [build_query(policy.datasets[n], {"kind": kind, "epsilon": 1.0, **body})
                       for n in ("loans", "twin")]
            times: list[list[float]] = [[], []]
            for i in range(args.repeat + 1):
                for q, out in zip(queries, times, strict=True):
                    t = time.perf_counter()
                    engine.aggregate(q)
                    if i:  # the first run of each is a warm-up
                        out.append(time.perf_counter() - t)
            duck, spark = (1000 * statistics.median(x) for x in times)
            print(f"{kind:<22}{duck:>11.1f}{spark:>11.1f}{spark / duck:>8.1f}")
        engine.close()


if __name__ == "__main__":
    main()
