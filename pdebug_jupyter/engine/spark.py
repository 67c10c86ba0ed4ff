"""The Spark backend: the same Ibis cube expressions, compiled for Spark SQL, run on one
SparkSession per service (a local master or a cluster's), reading the dataset's Parquet.

Contribution bounding follows the DuckDB source's rule (rule 8): the unit column is proven
to hold at most ``max_rows_per_unit`` rows per unit once per dataset version (the answer is
kept next to the ledger), or a bounded copy is written once to the ``[spark] scratch``
directory and read from then on. Every error message names the dataset only: whatever Spark
or its JVM raises can quote a row, so none of it is passed on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ibis
import numpy as np

from ..policy import DatasetPolicy, SparkSettings
from . import (
    EngineError,
    Version,
    check_categories,
    declared_columns,
    forget_other_versions,
    unit_bounded,
)

#: Settings a service's session gets unless the policy's ``[spark] conf`` says otherwise:
#: no web UI (an open port listing every query) and no progress bar in the service log;
#: the warehouse directory goes under the service's cache, not the working directory.
DEFAULTS = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
#: A local master listens on loopback only; few shuffle partitions suit a handful of cores
#: and aggregates of at most a few thousand cells.
LOCAL_DEFAULTS = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                  "spark.sql.shuffle.partitions": "4"}


log = logging.getLogger(__name__)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class _Shared:
    """The process's one SparkSession: Spark allows a single active context per process, so
    engines in one process share it and the last one to close shuts the JVM down."""

    lock = threading.Lock()
    session: Any = None
    gateway: Any = None
    settings: SparkSettings | None = None
    users = 0


def open_session(settings: SparkSettings, cache: Path) -> Any:
    """The SparkSession for ``settings``, started on first use (a JVM: seconds)."""
    with _Shared.lock:
        if _Shared.session is not None:
            if _Shared.settings != settings:
                raise EngineError("engine_unavailable", "a Spark session with other settings "
                                  "is already running in this process")
        else:
            with warnings.catch_warnings():
                # PySpark warns about pandas 3 as it loads its pandas support; the service's
                # queries are SQL and never convert to pandas
                warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas",
                                        FutureWarning)
                _Shared.session, _Shared.gateway = _start(settings, cache)
            _Shared.settings = settings
        _Shared.users += 1
        return _Shared.session


def _start(settings: SparkSettings, cache: Path) -> tuple[Any, Any]:
    try:
        from ibis.backends.pyspark import Backend
        from pyspark import SparkConf, SparkContext
        from pyspark.java_gateway import launch_gateway
        from pyspark.sql import SparkSession
    except ImportError as exc:  # the cause is kept: a broken install is not a missing one
        raise ImportError(f"the Spark backend needs pyspark ({exc}): "
                          "pip install 'pdebug-jupyter[spark]'") from exc
    conf = SparkConf().setMaster(settings.master).setAppName(settings.app_name)
    defaults = {**DEFAULTS, "spark.sql.warehouse.dir": str(cache / "spark-warehouse"),
                **(LOCAL_DEFAULTS if settings.local else {})}
    conf.setAll([*defaults.items(), *settings.conf])
    gateway = None
    try:
        # The JVM's stdout goes to our stderr: the service's stdout carries one JSON line to
        # whoever started it, and a pipe nobody reads would block the JVM once full.
        gateway = launch_gateway(conf, popen_kwargs={"stdout": 2})  # type: ignore[no-untyped-call]
        context = SparkContext(conf=conf, gateway=gateway)
    except Exception:  # no Java, a bad setting, an unreachable master: no data yet
        log.exception("Spark did not start")
        if gateway is not None:
            _stop_jvm(gateway)
        raise EngineError("engine_unavailable", f"Spark could not start with master "
                          f"{settings.master!r}; see the service log") from None
    if getattr(ibis.options, "pyspark", None) is None:
        Backend.register_options()  # the Spark SQL compiler reads them
    return SparkSession(context), gateway


def close_session() -> None:
    """Release one engine's use; the last one stops Spark and its JVM."""
    with _Shared.lock:
        _Shared.users -= 1
        if _Shared.users > 0 or _Shared.session is None:
            return
        session, gateway = _Shared.session, _Shared.gateway
        _Shared.session = _Shared.gateway = _Shared.settings = None
        try:
            session.stop()
        finally:
            _stop_jvm(gateway)


def _stop_jvm(gateway: Any) -> None:
    from pyspark import SparkContext
    gateway.shutdown()
    SparkContext._gateway = SparkContext._jvm = None  # the next start launches a new JVM
    if gateway.proc is not None:  # the JVM exits when its stdin closes
        gateway.proc.stdin.close()
        gateway.proc.wait(timeout=60)


class SparkSource:
    """One dataset's Parquet source (a file, a directory or a URI) on the SparkSession."""

    def __init__(self, ds: DatasetPolicy, spark: Any, cache_dir: Path, scratch: str) -> None:
        self.ds, self.spark, self.cache_dir = ds, spark, cache_dir
        # a local path is a local file even where Spark's default filesystem is HDFS
        self.uri = ds.uri or Path(ds.location).as_uri()
        self.scratch = f"{(scratch or (cache_dir / 'spark').as_uri()).rstrip('/')}/{ds.name}"
        # temp view names are parsed as identifiers: a dataset name may hold '.' or '-'
        tag = hashlib.sha256(ds.name.encode()).hexdigest()[:16]
        self.raw, self.view = f"pdebug_source_{tag}", f"pdebug_dataset_{tag}"
        self._lock = threading.Lock()
        self._version: Version | None = None

    def _unavailable(self) -> EngineError:
        return EngineError("source_unavailable",
                           f"the source of dataset {self.ds.name!r} cannot be read")

    def _files(self) -> Iterator[tuple[str, int, int]]:
        """(path, size, modification time) of every file of the source."""
        if self.ds.uri:  # through Hadoop's filesystem API: one JVM call per step
            jvm = self.spark.sparkContext._jvm
            path = jvm.org.apache.hadoop.fs.Path(self.uri)
            fs = path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
            listing = fs.listFiles(path, True)
            while listing.hasNext():
                f = listing.next()
                yield f.getPath().toString(), f.getLen(), f.getModificationTime()
            return
        root = Path(self.ds.location)
        if root.is_dir():
            for parent, _, names in os.walk(root):
                for name in names:
                    st = os.stat(os.path.join(parent, name))
                    yield os.path.join(parent, name), st.st_size, st.st_mtime_ns
        else:
            st = root.stat()
            yield str(root), st.st_size, st.st_mtime_ns

    def version(self) -> Version:
        """The current version: the fingerprint covers every file's size and time, so a
        rewritten or added file is a new version (re-proven, or bounded again)."""
        try:
            files = sorted(self._files())
        except Exception:  # OSError locally; anything the JVM raises for a URI
            raise self._unavailable() from None
        if not files:
            raise self._unavailable()
        key = f"{self.ds.digest}|{self.uri}|" + "|".join(f"{p},{n},{t}" for p, n, t in files)
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:32]
        current = self._version
        if current is not None and current.fingerprint == fingerprint:
            return current
        with self._lock:
            if self._version is None or self._version.fingerprint != fingerprint:
                # modification times are ns locally, ms through Hadoop
                latest = max(t for _, _, t in files)
                self._version = self._open(fingerprint, latest / (1e3 if self.ds.uri else 1e9))
            return self._version

    def _open(self, fingerprint: str, modified: float) -> Version:
        ds, spark = self.ds, self.spark
        try:
            frame = spark.read.parquet(self.uri)
            present = {f.name: f for f in frame.schema.fields}
            frame.createOrReplaceTempView(self.raw)
        except Exception:
            raise self._unavailable() from None
        visible = declared_columns(ds, present)
        from ibis.backends.pyspark.datatypes import PySparkType
        try:
            schema = ibis.schema({c: PySparkType.to_ibis(present[c].dataType, present[c].nullable)
                                  for c in visible})
        except NotImplementedError:
            raise EngineError("policy_mismatch", f"dataset {ds.name!r}: a declared column has "
                              "a type the engine cannot read") from None
        check_categories(ds, schema)
        cols = ", ".join(_quote(c) for c in visible) or "1 AS one"
        proofs = self.cache_dir / "datasets" / ds.name
        forget_other_versions(proofs, fingerprint)
        copy: str | None = None
        try:
            if unit_bounded(ds, self.raw, _quote(ds.privacy_unit), proofs / f"{fingerprint}.proof",
                            lambda sql: spark.sql(sql).collect()[0]):
                select = f"SELECT {cols} FROM {self.raw}"
            else:
                copy = f"{self.scratch}/{fingerprint}"
                self._write_bounded_copy(cols, copy)
                spark.read.parquet(copy).createOrReplaceTempView(self.raw + "_bounded")
                select = f"SELECT * FROM {self.raw}_bounded"
            spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {self.view} AS {select}")
        except EngineError:
            raise
        except Exception:
            raise EngineError("engine_failed", f"bounding the contributions to dataset "
                              f"{ds.name!r} failed") from None
        return Version(fingerprint, modified, self.view, schema, copy)

    def _write_bounded_copy(self, cols: str, target: str) -> None:
        """At most max_rows_per_unit rows per unit, chosen at random, without NULL units;
        written once per version (``_SUCCESS`` marks a finished copy), older ones removed.
        The seed comes from the OS: each unit's row choice is not predictable."""
        jvm = self.spark.sparkContext._jvm
        hadoop = self.spark.sparkContext._jsc.hadoopConfiguration()
        here = jvm.org.apache.hadoop.fs.Path(self.scratch)
        fs = here.getFileSystem(hadoop)
        if fs.exists(here):
            for status in fs.listStatus(here):
                if status.getPath().getName() != target.rsplit("/", 1)[1]:
                    fs.delete(status.getPath(), True)
        if fs.exists(jvm.org.apache.hadoop.fs.Path(f"{target}/_SUCCESS")):
            return
        unit = _quote(self.ds.privacy_unit)
        self.spark.sql(
            f"SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {unit} ORDER BY "
            f"pdebug_r) AS pdebug_rn FROM (SELECT *, rand({secrets.randbits(63)}) AS pdebug_r "
            f"FROM {self.raw} WHERE {unit} IS NOT NULL)) WHERE pdebug_rn <= "
            f"{self.ds.max_rows_per_unit}").write.mode("overwrite").parquet(target)

    def run(self, sql: str) -> Mapping[str, Any]:
        """The aggregate table as integer columns (a NULL sum, over no value, adds 0)."""
        try:
            frame = self.spark.sql(sql)
            rows, names = frame.collect(), frame.columns
        except Exception:
            raise EngineError("engine_failed",
                              f"the query on dataset {self.ds.name!r} failed to run") from None
        return {n: np.fromiter((0 if r[i] is None else r[i] for r in rows), np.int64, len(rows))
                for i, n in enumerate(names)}
