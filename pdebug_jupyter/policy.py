"""The policy file: which datasets exist, which columns are visible, their public domains,
privacy parameters and budgets, and who may do what.

The policy is the only source of output keys and numeric bounds (privacy rules 2 and 3):
nothing about a domain is ever derived from the data. Columns not declared are invisible.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KINDS = ("identifier", "numeric", "protected", "categorical", "label", "score", "split",
         "attribution")
#: Column kinds with a categorical domain: they can be grouped on and filtered with ``where``.
CATEGORICAL_KINDS = ("protected", "categorical", "split", "label")
#: Column kinds that can be an axis of a cube (attributions are only summed).
DIMENSION_KINDS = ("numeric", "score", *CATEGORICAL_KINDS)
ROLES = ("owner", "analyst", "viewer", "auditor")
BACKENDS = ("duckdb", "spark")
#: Spark masters the service can drive: it needs the driver's JVM (file listings, bounded
#: copies), so Spark Connect (``sc://``) is not one of them.
SPARK_MASTER = re.compile(r"local(\[(\d+|\*)(,\d+)?\])?|yarn|spark://[^\s/]+|k8s://https?://\S+")
#: Spark settings the ``[spark]`` table names itself, and so does not take under ``conf``.
SPARK_OWN_CONF = {"spark.master": "master", "spark.app.name": "app_name"}
OTHER = "other"
MAX_BINS = 500
MAX_CATEGORIES = 1000


class PolicyError(ValueError):
    """The policy file is invalid; the message names the file, the key and the problem."""

    code = "invalid_policy"


@dataclass(frozen=True)
class Column:
    """A declared column and its public domain."""

    name: str
    kind: str
    bounds: tuple[float, float] | None = None
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def queryable(self) -> bool:
        return self.kind != "identifier"

    @property
    def binned(self) -> bool:
        return self.kind in ("numeric", "score")

    def labels(self, edges: tuple[float, ...] | None = None) -> tuple[str, ...]:
        """Public cell labels of this column's domain, without the ``other`` cell."""
        if self.binned:
            return bin_labels(edges or self.edges)
        return self.categories

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.bounds is not None:
            out["bounds"] = list(self.bounds)
        if self.edges:
            out["bins"] = list(self.edges)
        if self.categories:
            out["categories"] = list(self.categories)
        return out


@dataclass(frozen=True)
class DatasetPolicy:
    name: str
    source: Path
    backend: str
    privacy_unit: str
    max_rows_per_unit: int
    epsilon_per_user: float
    epsilon_total: float
    min_cohort: int
    columns: Mapping[str, Column]
    table: str | None = None
    model_version: str = ""
    preprocessing: str = ""
    description: str = ""
    synthetic: bool = False
    max_epsilon_per_query: float = 0.0
    digest: str = ""
    #: a Spark source given as a URI (``hdfs://``, ``s3a://``, ...): read as written, while
    #: ``source`` keeps only its path for display
    uri: str = ""

    def column(self, name: str) -> Column:
        return self.columns[name]

    @property
    def location(self) -> str:
        """Where the engine reads the source: a local path, or a Spark source's URI."""
        return self.uri or str(self.source)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class SparkSettings:
    """The ``[spark]`` table: one Spark session per service, used by every Spark dataset."""

    master: str = "local[*]"
    app_name: str = "pdebug-jupyter"
    #: ``spark.*`` settings passed to the session as strings (``env:VAR`` values resolved)
    conf: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: the URI (a local path becomes ``file://``) of a directory every executor can read
    #: and write, for bounded copies; empty: the service's cache directory, which only a
    #: local master's executors share
    scratch: str = ""

    @property
    def local(self) -> bool:
        return self.master.startswith("local")


@dataclass(frozen=True)
class Policy:
    path: Path
    ledger: Path
    retention_days: int
    users: tuple[User, ...]
    datasets: Mapping[str, DatasetPolicy]
    digest: str
    local_role: str = "owner"
    memory_limit: str = "1GB"
    #: fractions of a budget at which a release carries a budget alert (fires once each)
    alerts: tuple[float, ...] = ()
    alert_webhook: str | None = None
    spark: SparkSettings = SparkSettings()


def bin_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    """Labels of left-closed bins ``[a, b)``; the last bin is closed ``[a, b]``."""
    fmt = [f"{e:g}" for e in edges]
    out = [f"[{a}, {b})" for a, b in zip(fmt[:-1], fmt[1:], strict=True)]
    out[-1] = out[-1][:-1] + "]"
    return tuple(out)


def equal_width_edges(bounds: tuple[float, float], bins: int) -> tuple[float, ...]:
    lo, hi = bounds
    return tuple(lo + (hi - lo) * i / bins for i in range(bins)) + (hi,)


class _Reader:
    """Reads one table of the TOML file and reports errors as ``file: key: problem``."""

    def __init__(self, file: Path, prefix: str, table: Mapping[str, Any]) -> None:
        self.file, self.prefix, self.table = file, prefix, table

    def fail(self, key: str, problem: str) -> PolicyError:
        where = f"{self.prefix}.{key}" if self.prefix else key
        return PolicyError(f"{self.file}: {where}: {problem}")

    def get(self, key: str, types: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail(key, f"expected {_type_names(types)}, got a boolean")
        if not isinstance(value, types):
            raise self.fail(key, f"expected {_type_names(types)}, got {type(value).__name__}")
        return value

    def positive(self, key: str, default: Any = ...) -> float:
        value = self.get(key, (int, float), default)
        if not (math.isfinite(value) and value > 0):
            raise self.fail(key, f"must be a positive finite number, got {value!r}")
        return float(value)

    def unknown(self, allowed: tuple[str, ...]) -> None:
        for key in self.table:
            if key not in allowed:
                raise self.fail(key, f"unknown key (allowed: {', '.join(allowed)})")


def _type_names(types: type | tuple[type, ...]) -> str:
    seq = types if isinstance(types, tuple) else (types,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number",
                        "list": "an array", "dict": "a table", "bool": "a boolean"}
                       .get(t.__name__, t.__name__) for t in seq)


def _resolve_token(reader: _Reader, value: str, required: bool) -> str | None:
    if value.startswith("env:"):
        var = value[4:]
        token = os.environ.get(var, "")
        if not token and required:
            raise reader.fail("token", f"environment variable {var} is not set")
        return token or None
    if len(value) < 16:
        raise reader.fail("token", "a literal token must be at least 16 characters")
    return value


def _column(file: Path, prefix: str, name: str, spec: Any) -> Column:
    if not isinstance(spec, dict):
        raise PolicyError(f"{file}: {prefix}.{name}: expected a table like {{ kind = \"numeric\" }}")
    r = _Reader(file, f"{prefix}.{name}", spec)
    r.unknown(("kind", "bounds", "bins", "categories"))
    kind = r.get("kind", str)
    if kind not in KINDS:
        raise r.fail("kind", f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if kind in ("numeric", "score", "attribution"):
        default_bounds = [0, 1] if kind == "score" else ...
        raw = r.get("bounds", list, default_bounds)
        if len(raw) != 2 or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                    and math.isfinite(x) for x in raw) or raw[0] >= raw[1]:
            raise r.fail("bounds", "expected [low, high] with finite numbers and low < high")
        bounds = (float(raw[0]), float(raw[1]))
        if kind == "score" and not (bounds[0] >= 0 and bounds[1] <= 1):
            raise r.fail("bounds", "a score lies in [0, 1]")
        if kind == "attribution":  # per-row feature attributions (SHAP values, say): summed only
            if "bins" in spec:
                raise r.fail("bins", "attribution columns are summed, not binned")
            return Column(name, kind, bounds=bounds)
        bins = r.get("bins", (int, list), 10)
        if isinstance(bins, int):
            if not 1 <= bins <= MAX_BINS:
                raise r.fail("bins", f"bin count must be between 1 and {MAX_BINS}")
            edges = equal_width_edges(bounds, bins)
        else:
            if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                       for x in bins):
                raise r.fail("bins", "bin edges must be finite numbers")
            edges = tuple(float(x) for x in bins)
            if (len(edges) < 2 or len(edges) > MAX_BINS + 1
                    or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True))):
                raise r.fail("bins", "bin edges must be 2 or more strictly increasing numbers")
            if edges[0] < bounds[0] or edges[-1] > bounds[1]:
                raise r.fail("bins", f"bin edges must lie within bounds {list(raw)}")
        return Column(name, kind, bounds=bounds, edges=edges)
    if kind == "label":
        # (negative, positive); the default fits 0/1 integer and boolean labels
        cats = tuple(str(c).lower() if isinstance(c, bool) else str(c)
                     for c in r.get("categories", list, [0, 1]))
        if len(cats) != 2 or cats[0] == cats[1]:
            raise r.fail("categories", "a label declares exactly two categories [negative, positive]")
        return Column(name, kind, categories=cats)
    if kind in ("protected", "categorical", "split"):
        cats = r.get("categories", list)
        if not cats or len(cats) > MAX_CATEGORIES:
            raise r.fail("categories", f"declare between 1 and {MAX_CATEGORIES} categories")
        labels = tuple(str(c) for c in cats)
        if len(set(labels)) != len(labels) or OTHER in labels:
            raise r.fail("categories", f"categories must be distinct and not {OTHER!r}")
        return Column(name, kind, categories=labels)
    return Column(name, kind)


_DATASET_KEYS = ("source", "backend", "table", "privacy_unit", "max_rows_per_unit",
                 "epsilon_per_user", "epsilon_total", "min_cohort", "max_epsilon_per_query",
                 "model_version", "preprocessing", "description", "synthetic", "columns")


def _dataset(file: Path, name: str, spec: Any) -> DatasetPolicy:
    prefix = f"datasets.{name}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise PolicyError(f"{file}: {prefix}: a dataset name is 1-64 letters, digits, '_', '.' "
                          "or '-', starting with a letter or digit")
    if not isinstance(spec, dict):
        raise PolicyError(f"{file}: {prefix}: expected a table")
    r = _Reader(file, prefix, spec)
    r.unknown(_DATASET_KEYS)
    source = Path(r.get("source", str))
    source = source if source.is_absolute() else file.parent / source
    backend = r.get("backend", str, "duckdb")
    if backend not in BACKENDS:
        raise r.fail("backend", f"unsupported backend {backend!r} (supported: {', '.join(BACKENDS)})")
    table = r.get("table", str, None)
    uri = ""
    if backend == "spark":
        uri = _spark_source(r, r.get("source", str), source, table)
        source = Path(urlsplit(uri).path) if uri else source
    elif source.suffix.lower() in (".duckdb", ".db") and not table:
        raise r.fail("table", "a DuckDB database source needs the table to read")
    cols_spec = r.get("columns", dict)
    columns = {c: _column(file, f"{prefix}.columns", c, s) for c, s in cols_spec.items()}
    unit = r.get("privacy_unit", str)
    if unit not in columns or columns[unit].kind != "identifier":
        raise r.fail("privacy_unit", f"{unit!r} must be a declared column of kind 'identifier'")
    max_rows = r.get("max_rows_per_unit", int, 1)
    if not 1 <= max_rows <= 1000:
        raise r.fail("max_rows_per_unit", "must be between 1 and 1000")
    per_user, total = r.positive("epsilon_per_user"), r.positive("epsilon_total")
    if per_user > total:
        raise r.fail("epsilon_per_user", "must not exceed epsilon_total")
    min_cohort = r.get("min_cohort", int, 0)
    if min_cohort < 0:
        raise r.fail("min_cohort", "must be zero or positive")
    max_query = r.positive("max_epsilon_per_query", per_user)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    return DatasetPolicy(
        name=name, source=source if uri else source.resolve(), backend=backend, uri=uri,
        privacy_unit=unit,
        max_rows_per_unit=max_rows, epsilon_per_user=per_user, epsilon_total=total,
        min_cohort=min_cohort, columns=columns, table=table,
        model_version=r.get("model_version", str, ""), preprocessing=r.get("preprocessing", str, ""),
        description=r.get("description", str, ""), synthetic=r.get("synthetic", bool, False),
        max_epsilon_per_query=min(max_query, per_user), digest=digest)


def load_policy(path: str | os.PathLike[str], *, require_tokens: bool = True) -> Policy:
    """Read and validate a policy file; raises :class:`PolicyError` naming file, key and problem.

    With ``require_tokens=False`` (a local service, whose only user is the session's), users
    whose ``env:`` token variable is unset are left out instead of failing the load.
    """
    file = Path(path).resolve()
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{file}: cannot read policy file ({exc.strerror})") from None
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{file}: not valid TOML: {exc}") from None
    top = _Reader(file, "", doc)
    top.unknown(("service", "users", "datasets", "spark"))
    svc = _Reader(file, "service", top.get("service", dict, {}))
    svc.unknown(("ledger", "retention_days", "local_role", "memory_limit", "alerts",
                 "alert_webhook"))
    ledger = Path(svc.get("ledger", str, "ledger.sqlite"))
    retention = svc.get("retention_days", int, 365)
    if retention < 1:
        raise svc.fail("retention_days", "must be at least 1")
    local_role = svc.get("local_role", str, "owner")
    if local_role not in ROLES:
        raise svc.fail("local_role", f"unknown role {local_role!r} (one of {', '.join(ROLES)})")
    memory = svc.get("memory_limit", str, "1GB")
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", memory):
        raise svc.fail("memory_limit", f"expected a size like '512MB' or '2GiB', got {memory!r}")
    alerts, webhook = _alerts(svc)
    users = []
    for i, spec in enumerate(top.get("users", list, [])):
        if not isinstance(spec, dict):
            raise PolicyError(f"{file}: users[{i}]: expected a table")
        r = _Reader(file, f"users[{i}]", spec)
        r.unknown(("name", "role", "token"))
        role = r.get("role", str)
        if role not in ROLES:
            raise r.fail("role", f"unknown role {role!r} (one of {', '.join(ROLES)})")
        token = _resolve_token(r, r.get("token", str), require_tokens)
        if token is not None:  # a user whose token is not set here cannot log in here
            users.append(User(r.get("name", str), role, token))
    if len({u.name for u in users}) != len(users):
        raise PolicyError(f"{file}: users: user names must be distinct")
    datasets = {n: _dataset(file, n, s) for n, s in top.get("datasets", dict, {}).items()}
    if not datasets:
        raise PolicyError(f"{file}: datasets: declare at least one dataset")
    return Policy(
        path=file, ledger=(ledger if ledger.is_absolute() else file.parent / ledger).resolve(),
        retention_days=retention, users=tuple(users), datasets=datasets,
        digest=hashlib.sha256(raw).hexdigest(), local_role=local_role, memory_limit=memory,
        alerts=alerts, alert_webhook=webhook,
        spark=_spark(_Reader(file, "spark", top.get("spark", dict, {})), file.parent,
                     require_tokens))


def _alerts(svc: _Reader) -> tuple[tuple[float, ...], str | None]:
    """``[service] alerts``: increasing fractions in (0, 1]; ``alert_webhook``: an http(s)
    URL that receives each alert as JSON."""
    raw = svc.get("alerts", list, [])
    if len(raw) > 20 or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                and 0 < x <= 1 for x in raw):
        raise svc.fail("alerts", "expected at most 20 fractions of a budget in (0, 1], "
                       "like [0.5, 0.8, 1.0]")
    if any(b <= a for a, b in zip(raw[:-1], raw[1:], strict=True)):
        raise svc.fail("alerts", "fractions must be strictly increasing")
    webhook = svc.get("alert_webhook", str, None)
    if webhook is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", webhook):
        raise svc.fail("alert_webhook", f"expected an http:// or https:// URL, got {webhook!r}")
    return tuple(float(x) for x in raw), webhook


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def _spark_source(r: _Reader, raw: str, source: Path, table: str | None) -> str:
    """A Spark dataset reads Parquet: a file, a directory of files, or a URI (returned)."""
    if table is not None:
        raise r.fail("table", "a Spark dataset reads Parquet files; table is for DuckDB "
                     "database sources")
    if _URI.fullmatch(raw):
        return raw
    if source.suffix.lower() in (".csv", ".tsv", ".duckdb", ".db"):
        raise r.fail("source", "a Spark dataset reads Parquet: a .parquet file, a directory "
                     "of them, or a URI such as hdfs://... or s3a://...")
    return ""


def _spark(r: _Reader, base: Path, require_secrets: bool) -> SparkSettings:
    """``[spark]``: ``master``, ``app_name``, ``scratch`` and a ``conf`` table of ``spark.*``
    settings (strings, numbers or booleans; ``"env:VAR"`` reads a secret from the
    environment instead of the file, and is left out, like a user's token, where
    ``require_secrets`` is false and VAR is unset)."""
    r.unknown(("master", "app_name", "scratch", "conf"))
    master = r.get("master", str, SparkSettings.master)
    if master.startswith("sc://"):
        raise r.fail("master", "Spark Connect (sc://) is not supported: the service needs "
                     "the driver's JVM; use spark://, yarn, k8s:// or local[N]")
    if not SPARK_MASTER.fullmatch(master):
        raise r.fail("master", f"expected local, local[N], local[*], spark://host:port, yarn "
                     f"or k8s://https://host:port, got {master!r}")
    app = r.get("app_name", str, SparkSettings.app_name)
    scratch = r.get("scratch", str, "")
    if scratch and not _URI.fullmatch(scratch):
        path = Path(scratch)
        scratch = (path if path.is_absolute() else base / path).resolve().as_uri()
    conf = []
    table = _Reader(r.file, "spark.conf", r.get("conf", dict, {}))
    for key, value in table.table.items():
        if key in SPARK_OWN_CONF:
            raise table.fail(key, f"set it as [spark] {SPARK_OWN_CONF[key]}")
        if not re.fullmatch(r"spark\.[A-Za-z0-9_.-]+", key):
            raise table.fail(key, "a Spark setting's name starts with 'spark.' (quote dotted "
                             "names: \"spark.executor.memory\" = \"4g\")")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float | str):
            text = str(value)
        else:
            raise table.fail(key, f"expected a string, number or boolean, got "
                             f"{type(value).__name__}")
        if text.startswith("env:"):
            text = os.environ.get(text[4:], "")
            if not text and require_secrets:
                raise table.fail(key, f"environment variable {value[4:]} is not set")
            if not text:
                continue
        conf.append((key, text))
    return SparkSettings(master=master, app_name=app, conf=tuple(conf), scratch=scratch)
