"""The Spark backend: one dataset declared twice, ``backend = "duckdb"`` and ``"spark"``,
gives exactly the same true cube for every query kind, bounds contributions on Spark too,
and releases through the real service statistically like the DuckDB truth.

Spark runs in local mode (``local[2]``): one JVM here for the exact cubes and one in the
service process.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ALICE, ServiceProcess

from pdebug_jupyter.engine import Engine, EngineError
from pdebug_jupyter.policy import PolicyError, load_policy
from pdebug_jupyter.policy_lint import lint_policy
from pdebug_jupyter.privacy import plan_noise
from pdebug_jupyter.query import Query, build_query
from pdebug_jupyter.synth.loans import loans_frame

#: a small JVM for short runs: no optimising compiler, one garbage-collector thread
SPARK = ('[spark]\nmaster = "local[2]"\napp_name = "pdebug-test"\n[spark.conf]\n'
         '"spark.driver.extraJavaOptions" = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"\n')
COLUMNS = """customer_id = { kind = "identifier" }
sex = { kind = "protected", categories = ["female", "male"] }
region = { kind = "categorical", categories = ["north", "south", "east", "west"] }
default = { kind = "label" }
score = { kind = "score" }
window = { kind = "split", categories = ["reference", "current"] }
"""
AGE = 'age = { kind = "numeric", bounds = [18, 90], bins = [18, 25, 35, 45, 55, 65, 90] }\n'
X = 'x = { kind = "attribution", bounds = [-10, 10] }\n'
#: one query of every kind over the demo loans (no attribution columns there: see crowd)
KINDS = {
    "histogram": {"column": "age", "by": ["sex", "region"]},
    "calibration": {"score": "score", "label": "default", "by": "sex"},
    "confusion": {"score": "score", "label": "default", "by": "region", "bins": 20},
    "drift": {"reference": {"window": "reference"}, "current": {"window": "current"}},
    "cohort_errors": {"features": ["sex", "region"], "label": "default", "score": "score",
                      "threshold": 0.3},
    "performance_estimate": {"score": "score", "where": {"window": "current"}},
}
CROWD_KINDS = {
    "attribution": {"columns": ["x"], "by": "sex"},
    "calibration": {"score": "score", "label": "default", "by": "window"},
}


def section(name: str, source: Path | str, backend: str, columns: str,
            rows_per_unit: int = 1) -> str:
    return (f'[datasets.{name}]\nsource = "{source}"\nbackend = "{backend}"\n'
            f'privacy_unit = "customer_id"\nmax_rows_per_unit = {rows_per_unit}\n'
            "epsilon_per_user = 100.0\nepsilon_total = 400.0\nmin_cohort = 0\n"
            f"[datasets.{name}.columns]\n{columns}\n")


def crowd_table(n: int = 400) -> pa.Table:
    """Loans where every fifth customer has four identical rows (two are kept), three rows
    have no customer, and an attribution ``x`` holds ties on its grid (k/16 * 1000 steps),
    values beyond its bounds, NaN and NULL; a few scores are NULL."""
    f = loans_frame(n, seed=5).reset_index(drop=True)
    x: list[float | None] = [((i * 37) % 361 - 180) / 16 for i in range(n)]
    score: list[float | None] = list(f["score"])
    for i in range(0, n, 50):
        x[i], x[i + 1], score[i + 2] = math.nan, None, None
    ids: list[str | None] = list(f["customer_id"])
    ids[3] = ids[4] = ids[7] = None
    copies = [4 if i % 5 == 0 else 1 for i in range(n)]
    rows = [i for i in range(n) for _ in range(copies[i])]
    cols = {"customer_id": pa.array([ids[i] for i in rows], pa.string()),
            **{c: pa.array([f[c][i] for i in rows]) for c in ("sex", "region", "window")},
            "default": pa.array([int(f["default"][i]) for i in rows], pa.int64()),
            "score": pa.array([score[i] for i in rows], pa.float64()),
            "x": pa.array([x[i] for i in rows], pa.float64())}
    return pa.table(cols)


@pytest.fixture(scope="module")
def twins(loans: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy with the demo loans and the crowd, each declared for DuckDB and Spark."""
    here = tmp_path_factory.mktemp("spark")
    pq.write_table(crowd_table(), here / "crowd.parquet")
    policy = here / "policy.toml"
    policy.write_text(
        f'[service]\nledger = "ledger.sqlite"\n\n[[users]]\nname = "alice"\nrole = "analyst"\n'
        f'token = "env:PDEBUG_TOKEN_ALICE"\n\n{SPARK}\n'
        + "".join(section(f"loans{s}", loans.data, b, COLUMNS + AGE) +
                  section(f"crowd{s}", here / "crowd.parquet", b, COLUMNS + X, 2)
                  for s, b in (("", "duckdb"), ("_spark", "spark"))))
    return policy


@pytest.fixture(scope="module")
def engine(twins: Path) -> Iterator[Engine]:
    engine = Engine(load_policy(twins))
    yield engine
    engine.close()


def queries(twins: Path, name: str, kind: str, body: dict[str, Any]) -> tuple[Query, Query]:
    policy = load_policy(twins)
    full = {"kind": kind, "epsilon": 1.0, **body}
    return (build_query(policy.datasets[name], full),
            build_query(policy.datasets[f"{name}_spark"], full))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_gives_the_same_true_cube_on_duckdb_and_spark(
        engine: Engine, twins: Path, kind: str) -> None:
    on_duckdb, on_spark = queries(twins, "loans", kind, KINDS[kind])
    duck, _ = engine.aggregate(on_duckdb)
    spark, version = engine.aggregate(on_spark)
    assert version.relation.startswith("pdebug_dataset_") and version.bounded_copy is None
    assert len(spark) == len(duck) == len(on_spark.cubes)
    for d, s in zip(duck, spark, strict=True):
        assert s.dtype == np.int64 and s.shape == d.shape
        np.testing.assert_array_equal(s, d)
    assert duck[0][..., 0].sum() > 0


@pytest.mark.parametrize("kind", CROWD_KINDS)
def test_bounded_contributions_ties_nan_and_null_agree_on_spark(
        engine: Engine, twins: Path, kind: str) -> None:
    on_duckdb, on_spark = queries(twins, "crowd", kind, CROWD_KINDS[kind])
    (duck,), _ = engine.aggregate(on_duckdb)
    (spark,), version = engine.aggregate(on_spark)
    np.testing.assert_array_equal(spark, duck)
    # every unit keeps at most two of its identical rows; rows without a unit are dropped
    assert spark[..., 0].sum() == 397 + 80
    assert isinstance(version.bounded_copy, str)
    assert os.path.exists(version.bounded_copy.removeprefix("file://") + "/_SUCCESS")
    if kind == "attribution":
        assert spark[..., 1].sum() == expected_attribution(crowd_table())


def expected_attribution(table: pa.Table) -> int:
    """The sum of |x| clipped to 10 (NaN too: it sorts above every number) on a grid of
    1000 steps, ties to even, over at most two rows per unit; a NULL adds nothing."""
    seen: Counter[str] = Counter()
    total = ties = 0
    for unit, x in zip(table["customer_id"].to_pylist(), table["x"].to_pylist(), strict=True):
        if unit is None:
            continue
        seen[unit] += 1
        if seen[unit] <= 2 and x is not None:
            v = abs(10.0 if math.isnan(x) else min(max(x, -10.0), 10.0)) * 1000
            total, ties = total + round(v), ties + (v % 1 == 0.5)
    assert ties > 20  # so half-to-even on both backends is what is compared
    return total


def test_the_spark_schema_is_the_duckdb_schema(engine: Engine) -> None:
    assert engine.version("loans_spark").schema == engine.version("loans").schema
    assert engine.version("crowd_spark").schema == engine.version("crowd").schema


def test_the_fingerprint_follows_the_file_and_errors_name_only_the_dataset(
        engine: Engine, tmp_path: Path) -> None:
    plain = pa.Table.from_pandas(loans_frame(40, seed=3)[["customer_id", "sex", "region",
                                                          "default", "score", "window"]],
                                 preserve_index=False)
    source = tmp_path / "plain.parquet"
    pq.write_table(plain, source)
    wrong = COLUMNS.replace('default = { kind = "label" }',
                            'default = { kind = "categorical", categories = ["yes", "no"] }')
    path = tmp_path / "policy.toml"
    path.write_text(f'[service]\nledger = "ledger.sqlite"\n{SPARK}\n'
                    + section("plain", source, "spark", COLUMNS)
                    + section("gone", tmp_path / "gone.parquet", "spark", COLUMNS)
                    + section("typed", source, "spark", wrong))
    other = Engine(load_policy(path))  # shares this process's Spark session
    try:
        query = build_query(load_policy(path).datasets["plain"],
                            {"kind": "histogram", "column": "sex", "epsilon": 1.0})
        (cube,), first = other.aggregate(query)
        assert cube.sum() == 40 and first.fingerprint == other.version("plain").fingerprint
        pq.write_table(plain.slice(0, 30), source)
        (cube,), second = other.aggregate(query)
        assert cube.sum() == 30 and second.fingerprint != first.fingerprint
        errors = []
        for name in ("gone", "typed"):
            with pytest.raises(EngineError) as caught:
                other.version(name)
            errors.append((caught.value.code, caught.value.message))
        assert errors == [
            ("source_unavailable", "the source of dataset 'gone' cannot be read"),
            ("policy_mismatch", "dataset 'typed': the categories of 'default' do not fit "
                                "its column type")]
        # unreadable bytes of the same size and time: the version stands, and Spark fails
        stat = source.stat()
        source.write_bytes(b"\0" * stat.st_size)
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        with pytest.raises(EngineError) as caught:
            other.aggregate(query)
        assert (caught.value.code, caught.value.message) == (
            "engine_failed", "the query on dataset 'plain' failed to run")
    finally:
        other.close()
    assert engine.spark is not None  # the module's engine still has its session


@pytest.fixture(scope="module")
def service(twins: Path) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(twins)
    yield svc
    assert svc.stop() == 0


def released(release: dict[str, Any], query: Query) -> list[np.ndarray]:
    """The release's cells as cubes shaped like the engine's (measures last)."""
    out, cells = [], iter(release["cells"])
    for cube in query.cubes:
        rows = [next(cells) for _ in range(math.prod(cube.shape))]
        values = [[cell[m.name] for m in cube.measures] for cell in rows]
        out.append(np.array(values, dtype=np.int64).reshape(cube.shape + (-1,)))
    return out


@pytest.mark.parametrize(("name", "kind"), [("loans", "calibration"), ("crowd", "attribution")])
def test_spark_releases_are_within_the_noise_of_the_duckdb_truth(
        engine: Engine, service: ServiceProcess, twins: Path, name: str, kind: str) -> None:
    body = (CROWD_KINDS if name == "crowd" else KINDS)[kind]
    on_duckdb, on_spark = queries(twins, name, kind, body)
    truth, _ = engine.aggregate(on_duckdb)
    r = service.query({"kind": kind, "epsilon": 1.0, **body}, ALICE, f"{name}_spark")
    assert r.status_code == 200, r.text
    release = r.json()
    assert release["provenance"]["fingerprint"] == engine.version(f"{name}_spark").fingerprint
    k = load_policy(twins).datasets[name].max_rows_per_unit
    plan = plan_noise(on_spark, k)
    cells = sum(math.prod(c.shape) * len(c.measures) for c in on_spark.cubes)
    for noisy, true, noise in zip(released(release, on_spark), truth, plan, strict=True):
        for j, n in enumerate(noise):  # all cells at once: a 1e-4 chance to miss
            error = np.abs(noisy[..., j] - true[..., j]).max()
            assert error <= n.half_width(1 - 1e-4 / cells), (n.measure, error)


# -- the policy's Spark settings (no Spark needed) -------------------------------------------

def write(tmp_path: Path, spark: str, backend: str = "spark", source: str = "x.parquet") -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(f"{spark}\n" + section("d", source, backend, COLUMNS))
    return path


def test_spark_settings_load_with_local_defaults_and_env_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDEBUG_TEST_S3_SECRET", "s3-secret-value")
    policy = load_policy(write(tmp_path, '[spark]\nmaster = "spark://head:7077"\n'
                               'scratch = "hdfs:///tmp/pdebug"\n[spark.conf]\n'
                               '"spark.executor.memory" = "4g"\n"spark.executor.cores" = 2\n'
                               '"spark.hadoop.fs.s3a.secret.key" = "env:PDEBUG_TEST_S3_SECRET"\n',
                               source="s3a://bucket/loans/"))
    s, ds = policy.spark, policy.datasets["d"]
    assert (s.master, s.scratch, s.local) == ("spark://head:7077", "hdfs:///tmp/pdebug", False)
    assert s.conf == (("spark.executor.memory", "4g"), ("spark.executor.cores", "2"),
                      ("spark.hadoop.fs.s3a.secret.key", "s3-secret-value"))
    assert "s3-secret-value" not in repr(policy)
    assert (ds.backend, ds.location, ds.source.name) == ("spark", "s3a://bucket/loans/", "loans")
    plain = load_policy(write(tmp_path, "", source="data"))
    assert (plain.spark.master, plain.spark.local, plain.datasets["d"].uri) == (
        "local[*]", True, "")


@pytest.mark.parametrize(("spark", "source", "key", "problem"), [
    ('[spark]\nmaster = "sc://head:15002"', "x.parquet", "spark.master", "Spark Connect"),
    ('[spark]\nmaster = "mesos://head"', "x.parquet", "spark.master", "expected local"),
    ('[spark]\n[spark.conf]\n"executor.memory" = "4g"', "x.parquet",
     "spark.conf.executor.memory", "starts with 'spark.'"),
    ('[spark]\n[spark.conf]\n"spark.master" = "yarn"', "x.parquet", "spark.conf.spark.master",
     "set it as [spark] master"),
    ('[spark]\n[spark.conf]\n"spark.x" = ["a"]', "x.parquet", "spark.conf.spark.x",
     "got list"),
    ('[spark]\n[spark.conf]\n"spark.x" = "env:PDEBUG_TEST_UNSET_X"', "x.parquet",
     "spark.conf.spark.x", "PDEBUG_TEST_UNSET_X is not set"),
    ('[spark]\ncores = 2', "x.parquet", "spark.cores", "unknown key"),
    ("", "x.csv", "datasets.d.source", "reads Parquet"),
], ids=["connect", "mesos", "conf name", "own setting", "conf type", "unset env", "unknown",
        "csv"])
def test_bad_spark_settings_name_the_key(tmp_path: Path, spark: str, source: str, key: str,
                                         problem: str) -> None:
    path = write(tmp_path, spark, source=source)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path.resolve()}: {key}: "), caught.value
    assert problem in str(caught.value)


def test_lint_warns_about_cluster_paths_the_ui_and_literal_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, '[spark]\nmaster = "yarn"\n[spark.conf]\n"spark.ui.enabled" = true\n'
                 '"spark.hadoop.fs.s3a.secret.key" = "abc"\n')
    found = sorted((p.key, p.severity) for p in lint_policy(path)
                   if p.key.startswith(("spark", "datasets.d.source")))
    assert found == [("datasets.d.source", "warning"),
                     ("spark.conf.spark.hadoop.fs.s3a.secret.key", "error"),
                     ("spark.conf.spark.ui.enabled", "warning"), ("spark.scratch", "warning")]
    unused = write(tmp_path, '[spark]\nmaster = "local[2]"', backend="duckdb")
    assert [(p.key, p.severity) for p in lint_policy(unused) if p.key == "spark"] == [
        ("spark", "warning")]
