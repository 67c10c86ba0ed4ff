"""Query execution where the data lives (DuckDB by default, or Spark: see ``spark.py``),
with contribution bounding.

Only aggregate tables are materialised in Python. Contribution bounding (rule 8) is proven
or enforced once per dataset version, never per query: either the privacy unit is shown to
appear at most ``max_rows_per_unit`` times, or a bounded copy is written once and read from
then on. A DuckDB version also records its numeric columns' value ranges once
(:func:`observed_ranges`), which let the compiler leave out work that cannot change a cell.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import ibis
import numpy as np
from ibis.backends.sql.datatypes import DuckDBType

from ..policy import DatasetPolicy, Policy
from ..query import Query
from .compile import Ranges, plan_scans, query_expression, typed_category


class EngineError(RuntimeError):
    """The data source cannot answer; messages name the dataset, never a data value."""

    def __init__(self, code: str, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class Version:
    """A dataset version: what the fingerprint was computed from and the relation to read."""

    fingerprint: str
    modified: float
    relation: str
    schema: ibis.Schema
    bounded_copy: Path | str | None  # a file for DuckDB, a directory URI for Spark
    ranges: Ranges = field(default_factory=dict)  # see compile.Ranges; kept in the service


class DataSource(Protocol):
    """One dataset where its backend reads it."""

    ds: DatasetPolicy

    def version(self) -> Version: ...

    def run(self, sql: str) -> Mapping[str, Any]:
        """The aggregate table's columns as arrays."""


#: The SQL dialect Ibis compiles each policy backend's queries to.
DIALECTS = {"duckdb": "duckdb", "spark": "pyspark"}


def check_categories(ds: DatasetPolicy, schema: ibis.Schema) -> None:
    """Every declared category must be a literal of its column's type."""
    for name, col in ds.columns.items():
        if not col.categories:
            continue
        try:
            for c in col.categories:
                typed_category(c, schema[name])
        except ValueError:
            raise EngineError("policy_mismatch", f"dataset {ds.name!r}: the categories "
                              f"of {name!r} do not fit its column type") from None


def write_atomically(path: Path, text: str) -> None:
    """A proof file is whole or absent: a kill mid-write must not leave an empty one, which
    would read as "unbounded" from then on (and send every query to a bounded copy)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def declared_columns(ds: DatasetPolicy, present: Mapping[str, Any]) -> list[str]:
    """The queryable columns, after checking that every declared column is in the source."""
    missing = [c for c in ds.columns if c not in present]
    if missing:
        raise EngineError("policy_mismatch", f"dataset {ds.name!r}: declared column(s) "
                          f"{', '.join(missing)} are missing from the source")
    return [c for c, col in ds.columns.items() if col.queryable]


def forget_other_versions(directory: Path, fingerprint: str) -> None:
    """Remove earlier versions' proofs (and bounded copies) from a dataset's cache."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        if not old.name.startswith(fingerprint):
            old.unlink(missing_ok=True)


def unit_bounded(ds: DatasetPolicy, relation: str, unit: str, proof: Path,
                 fetch: Callable[[str], Sequence[Any]]) -> bool:
    """Whether every unit of ``relation`` has at most max_rows_per_unit rows and none is
    NULL; ``relation`` and ``unit`` are quoted for the backend (DuckDB and Spark quote
    names differently), and ``fetch`` runs one statement there and returns its one row.

    The answer is kept next to the ledger per dataset version: proving it scans the whole
    unit column (seconds at 10M rows), so a restart should not pay for it again.
    """
    if proof.exists():
        return proof.read_text() == "bounded"
    worst, nulls = fetch(
        f"SELECT coalesce(max(n), 0), count(*) FILTER (WHERE u IS NULL) FROM "
        f"(SELECT {unit} AS u, count(*) AS n FROM {relation} GROUP BY {unit})")
    bounded = bool(worst <= ds.max_rows_per_unit and not nulls)
    write_atomically(proof, "bounded" if bounded else "unbounded")
    return bounded


def observed_ranges(schema: ibis.Schema, relation: str, path: Path,
                    fetch: Callable[[str], Sequence[Any]]) -> dict[str, tuple[float, float]]:
    """The version's :data:`~.compile.Ranges`, from one scan of the numeric columns: the
    smallest and largest value, and the number of NaNs, of each. A column with a NaN, an
    infinity or no values at all is left out.

    DuckDB answers a query of only ``min`` and ``max`` from a Parquet file's statistics,
    which leave NaN out (``max`` says 0.95 of a column holding NaN): the ``count`` of each
    column, which the statistics cannot answer alongside, makes it read the values.
    Like the bounding proof the answer is kept next to the ledger per version, and it never
    leaves the service: a minimum or maximum is a row's value (rule 1).
    """
    if path.exists():
        return {c: (lo, hi) for c, (lo, hi) in json.loads(path.read_text()).items()}
    numeric = [(c, t.is_floating()) for c, t in schema.items()
               if t.is_integer() or t.is_floating()]
    ranges: dict[str, tuple[float, float]] = {}
    if numeric:
        row = fetch("SELECT " + ", ".join(
            f"min({_quote(c)}), max({_quote(c)}), count({_quote(c)}), "
            + (f"count(*) FILTER (WHERE isnan({_quote(c)}))" if floating else "0")
            for c, floating in numeric) + f" FROM {relation}")
        for i, (c, _) in enumerate(numeric):
            lo, hi, values, nans = row[4 * i:4 * i + 4]
            if values and not nans and all(abs(float(v)) < 2.0**52 for v in (lo, hi)):
                ranges[c] = (float(lo), float(hi))
    write_atomically(path, json.dumps(ranges))
    return ranges


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Source:
    """One dataset's source file on a DuckDB connection."""

    def __init__(self, ds: DatasetPolicy, con: duckdb.DuckDBPyConnection, cache_dir: Path) -> None:
        self.ds, self.con, self.cache_dir = ds, con, cache_dir
        self._lock = threading.Lock()
        self._version: Version | None = None

    def _stat(self) -> os.stat_result:
        try:
            return self.ds.source.stat()
        except OSError:
            raise EngineError("source_unavailable",
                              f"the source of dataset {self.ds.name!r} cannot be read") from None

    def _reader(self) -> str:
        path = _literal(str(self.ds.source))
        suffix = self.ds.source.suffix.lower()
        if suffix in (".duckdb", ".db"):
            assert self.ds.table is not None
            alias = "src_" + hashlib.sha256(str(self.ds.source).encode()).hexdigest()[:12]
            rows = self.con.cursor().execute("SELECT database_name FROM duckdb_databases()")
            attached = {r[0] for r in rows.fetchall()}
            if alias not in attached:
                self.con.cursor().execute(f"ATTACH {path} AS {alias} (READ_ONLY)")
            return f"{alias}.{_quote(self.ds.table)}"
        if suffix == ".csv" or suffix == ".tsv":
            return f"read_csv({path})"
        return f"read_parquet({path})"

    def _fingerprint(self, st: os.stat_result) -> str:
        key = f"{self.ds.digest}|{self.ds.source}|{st.st_size}|{st.st_mtime_ns}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def peek(self) -> Version | None:
        """The version already open if the source has not changed since: one ``stat``, no
        lock, so the service may call it on its event loop. None when it must be (re)read."""
        current = self._version
        return current if current and current.fingerprint == self._fingerprint(
            self._stat()) else None

    def version(self) -> Version:
        """The current version, rebuilding views (and bounding) when the source changed."""
        st = self._stat()
        fingerprint = self._fingerprint(st)
        current = self._version
        if current is not None and current.fingerprint == fingerprint:
            return current
        with self._lock:
            if self._version is None or self._version.fingerprint != fingerprint:
                self._version = self._open(fingerprint, st.st_mtime)
            return self._version

    def _open(self, fingerprint: str, modified: float) -> Version:
        ds, con = self.ds, self.con.cursor()
        # distinct prefixes: no dataset name can make one dataset's view another's source
        raw, view = f"pdebug_source__{ds.name}", f"pdebug_dataset__{ds.name}"
        try:
            # plain (not TEMP) views: they must be visible to every cursor of the database
            con.execute(f"CREATE OR REPLACE VIEW {_quote(raw)} AS SELECT * FROM {self._reader()}")
            present = {r[0]: r[1] for r in con.execute(f"DESCRIBE {_quote(raw)}").fetchall()}
        except duckdb.Error:
            raise EngineError("source_unavailable",
                              f"the source of dataset {ds.name!r} cannot be read") from None
        visible = declared_columns(ds, present)
        schema = ibis.schema({c: DuckDBType.from_string(present[c]) for c in visible})
        check_categories(ds, schema)
        cols = ", ".join(_quote(c) for c in visible) or "1 AS one"
        cache = self.cache_dir / "datasets" / ds.name
        forget_other_versions(cache, fingerprint)

        def fetch(sql: str) -> Sequence[Any]:
            return con.execute(sql).fetchall()[0]

        copy: Path | None = None
        if unit_bounded(ds, _quote(raw), _quote(ds.privacy_unit), cache / f"{fingerprint}.proof",
                        fetch):
            select = f"SELECT {cols} FROM {_quote(raw)}"
        else:
            # Keep at most max_rows_per_unit rows per unit, chosen at random, and drop rows
            # without a unit: written once per version so no query pays for the window.
            unit = _quote(ds.privacy_unit)
            copy = cache / f"{fingerprint}.parquet"
            if not copy.exists():
                tmp = copy.with_suffix(".tmp")
                con.execute(
                    f"COPY (SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {unit} "
                    f"ORDER BY pdebug_r) AS pdebug_rn FROM (SELECT *, random() AS pdebug_r "
                    f"FROM {_quote(raw)} WHERE {unit} IS NOT NULL)) WHERE pdebug_rn <= "
                    f"{ds.max_rows_per_unit}) TO {_literal(str(tmp))} (FORMAT parquet)")
                tmp.rename(copy)
            select = f"SELECT * FROM read_parquet({_literal(str(copy))})"
        con.execute(f"CREATE OR REPLACE VIEW {_quote(view)} AS {select}")
        ranges = observed_ranges(schema, _quote(view), cache / f"{fingerprint}.ranges", fetch)
        return Version(fingerprint, modified, view, schema, copy, ranges)

    def run(self, sql: str) -> Mapping[str, Any]:
        try:
            return self.con.cursor().execute(sql).fetchnumpy()
        except duckdb.Error:
            raise EngineError("engine_failed",
                              f"the query on dataset {self.ds.name!r} failed to run") from None


class Engine:
    """Runs cube queries for every dataset of a policy: on one DuckDB database, and on one
    SparkSession (started here, stopped by :meth:`close`) if a dataset's backend is Spark."""

    def __init__(self, policy: Policy) -> None:
        cache = policy.ledger.parent / ".pdebug-cache"
        (cache / "spill").mkdir(parents=True, exist_ok=True)  # datasets live in cache/datasets
        # A memory cap makes big one-off work (the bounding proof) spill to disk instead of
        # growing the service; queries over public bins stay far below it.
        self.con = duckdb.connect(":memory:", config={
            "memory_limit": policy.memory_limit, "temp_directory": str(cache / "spill")})
        self.sources: dict[str, DataSource] = {
            n: Source(ds, self.con, cache) for n, ds in policy.datasets.items()
            if ds.backend == "duckdb"}
        self.spark: Any = None  # a SparkSession, when a dataset's backend is Spark
        if len(self.sources) < len(policy.datasets):
            from .spark import SparkSource, open_session
            try:
                self.spark = open_session(policy.spark, cache)
            except BaseException:
                self.con.close()
                raise
            for n, ds in policy.datasets.items():
                if ds.backend == "spark":
                    self.sources[n] = SparkSource(ds, self.spark, cache, policy.spark.scratch)
        self._compiled: dict[tuple[str, str, str], str] = {}

    def version(self, dataset: str) -> Version:
        return self.sources[dataset].version()

    def peek(self, dataset: str) -> Version | None:
        """:meth:`Source.peek` for a DuckDB dataset; None for others (listing a Spark
        directory's files may be slow, so that stays off the event loop)."""
        source = self.sources[dataset]
        return source.peek() if isinstance(source, Source) else None

    def _sql(self, query: Query, version: Version, backend: str = "duckdb") -> str:
        """The query's SQL. Compiling with Ibis costs ~15 ms and epsilon does not change the
        SQL, so it is kept per (dataset version, kind, canonical parameters); a version's
        fingerprint belongs to one dataset, so to one backend."""
        key = (version.fingerprint, query.kind, json.dumps(query.params, sort_keys=True))
        sql = self._compiled.get(key)
        if sql is None:
            table = ibis.table(version.schema, name=version.relation)
            sql = str(ibis.to_sql(query_expression(table, query, backend, version.ranges),
                                  dialect=DIALECTS[backend]))
            if len(self._compiled) >= 1024:
                self._compiled.clear()
            self._compiled[key] = sql
        return sql

    def aggregate(self, query: Query) -> tuple[list[np.ndarray], Version]:
        """True cell values per cube, each of shape ``cube.shape + (len(cube.measures),)``
        with ``other`` last on each axis, and the dataset version read."""
        source = self.sources[query.dataset]
        for _ in range(3):
            version = source.version()
            result = source.run(self._sql(query, version, source.ds.backend))
            # The SQL fits the version it was compiled for (its ranges may have left a clip
            # out): a source replaced while the query ran is read again, as the new version.
            if not isinstance(source, Source) or source.peek() is version:
                break
        else:
            raise EngineError("source_unavailable", f"the source of dataset {query.dataset!r} "
                              "kept changing while it was read")
        part = np.asarray(result["part"], dtype=np.int64)
        cubes: list[np.ndarray] = [np.empty(0)] * len(query.cubes)
        for p, scan in enumerate(plan_scans(query)):
            rows = part == p
            keys = [np.asarray(result[f"d{i}"], dtype=np.int64)[rows]
                    for i in range(len(scan.dims))]
            # a sum over only NULLs is NULL: it adds nothing
            columns = {m.name: np.ma.filled(result[m.name], 0).astype(np.int64)[rows]
                       for m in scan.measures}
            for c in scan.cubes:
                cube = query.cubes[c]
                values = np.zeros(cube.shape + (len(cube.measures),), dtype=np.int64)
                # index -1 (other) wraps to the last cell, where the labels put "other"
                index = tuple(keys[scan.dims.index(d)] for d in cube.dims)
                for j, m in enumerate(cube.measures):
                    column = columns[m.name]
                    if index:  # the scan's cells that fall in one of the cube's add up
                        np.add.at(values, (*index, j), column)
                    else:  # a cube without dimensions is one cell
                        values[j] = column.sum()
                cubes[c] = values
        return cubes, version

    def close(self) -> None:
        self.con.close()
        if self.spark is not None:
            from .spark import close_session
            self.spark = None
            close_session()
