"""``pdebug-jupyter policy lint``: risky settings in a policy file that loading accepts.

:func:`pdebug_jupyter.policy.load_policy` refuses policies that cannot work (a privacy unit
that is not an identifier, a protected column without categories, epsilon_per_user above
epsilon_total, ...). A policy that loads can still be a poor privacy policy: no suppression,
a budget whose guarantee means little, bounds nobody thought about, tokens written into the
file. The lint reads the TOML itself, so it reports every problem of a file at once, and
then loads it (with ``require_tokens=False``: the lint needs no secrets) to add the loader's
own error if it has one.

Each problem is ``file: key.path: severity: message``. Errors make the command fail;
warnings only with ``--strict``.

Thresholds, and why:

* ``min_cohort`` below :data:`MIN_COHORT` (10): counts of a handful of people are released
  with only the noise between them and the reader; above :data:`MAX_COHORT` nearly every
  cell is suppressed;
* ``epsilon_per_user`` above :data:`MAX_EPSILON` (10): at that epsilon the guarantee bounds
  an attacker's odds ratio by e^10 (about 22,000) and says little;
* numeric bounds spanning more than :data:`WIDE_BOUNDS` (1e6): sums are noised at the scale
  of the bounds, and a span like that usually means "no idea" rather than a plausible range;
* ``max_rows_per_unit`` above :data:`MAX_ROWS_PER_UNIT` (10): every count's noise grows with it.

For Spark (``backend = "spark"``, see docs/spark.md): a ``[spark]`` table no dataset uses; on
a cluster master, bounded copies in the service's own cache directory or local-path sources
(its executors read both); the Spark web UI switched on (an open port listing every query);
and a secret-looking ``[spark.conf]`` value written into the file (an error, like a literal
token).
"""

from __future__ import annotations

import math
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .policy import PolicyError, load_policy

__all__ = ["MAX_COHORT", "MAX_EPSILON", "MAX_ROWS_PER_UNIT", "MIN_COHORT", "WIDE_BOUNDS",
           "Problem", "lint_policy"]

MIN_COHORT = 10
MAX_COHORT = 10_000
MAX_EPSILON = 10.0
WIDE_BOUNDS = 1e6
MAX_ROWS_PER_UNIT = 10
#: ``[spark.conf]`` keys whose values are credentials (Spark's own redaction pattern).
SECRET_CONF = re.compile(r"secret|password|token|access[.]?key|credentials?", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """One finding of the lint."""

    file: str
    key: str
    severity: str  # "error" | "warning"
    message: str

    def line(self) -> str:
        return f"{self.file}: {self.key}: {self.severity}: {self.message}"


class _Lint:
    def __init__(self, file: Path) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def error(self, key: str, message: str) -> None:
        self.problems.append(Problem(str(self.file), key, "error", message))

    def warn(self, key: str, message: str) -> None:
        self.problems.append(Problem(str(self.file), key, "warning", message))


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _columns(lint: _Lint, prefix: str, columns: dict[str, Any]) -> None:
    for name, spec in columns.items():
        if not isinstance(spec, dict):
            continue  # the loader says what is wrong with it
        key, kind = f"{prefix}.columns.{name}", spec.get("kind")
        if kind in ("numeric", "attribution") and "bounds" not in spec:
            lint.error(key, f"a {kind} column needs bounds = [low, high]: its values are "
                       "clipped to them and the noise on sums is scaled by them")
        bounds = spec.get("bounds")
        if kind in ("numeric", "score", "attribution") and isinstance(bounds, list) \
                and len(bounds) == 2:
            lo, hi = (_number(b) for b in bounds)
            if lo is not None and hi is not None and hi - lo > WIDE_BOUNDS:
                lint.warn(f"{key}.bounds", f"bounds [{lo:g}, {hi:g}] span {hi - lo:.3g}: sums "
                          "get noise on that scale; declare the plausible range instead")
        if kind == "numeric" and "bins" not in spec:  # a score's 10 bins over [0, 1] are fine
            lint.warn(key, "no bins declared: the domain defaults to 10 equal-width bins over "
                      "the bounds; declare edges that fit the question")
        if kind in ("protected", "categorical", "split") and not spec.get("categories"):
            what = "protected column" if kind == "protected" else f"{kind} column"
            lint.error(key, f"a {what} without declared categories has no public domain "
                       "(output keys must come from the policy, never from the data)")


def _dataset(lint: _Lint, name: str, spec: dict[str, Any]) -> None:
    prefix = f"datasets.{name}"
    columns = spec.get("columns") if isinstance(spec.get("columns"), dict) else {}
    assert isinstance(columns, dict)
    kinds = {c: s.get("kind") for c, s in columns.items() if isinstance(s, dict)}
    if "identifier" not in kinds.values():
        lint.error(f"{prefix}.columns", "no column of kind 'identifier' is declared: the "
                   "privacy unit, whose contribution is bounded, must be one")
    unit = spec.get("privacy_unit")
    if unit is None:
        lint.error(f"{prefix}.privacy_unit", "missing: name the identifier column of the "
                   "person (or account) the guarantee protects")
    elif kinds.get(unit) != "identifier":
        got = "not a declared column" if unit not in kinds else f"of kind {kinds[unit]!r}"
        lint.error(f"{prefix}.privacy_unit", f"{unit!r} is {got}, not an identifier")
    _columns(lint, prefix, columns)
    cohort = spec.get("min_cohort", 0)
    if isinstance(cohort, int) and not isinstance(cohort, bool):
        if cohort < MIN_COHORT:
            lint.warn(f"{prefix}.min_cohort", f"{cohort} is below {MIN_COHORT}: cells of a "
                      "handful of people are released with only the noise to hide them")
        elif cohort > MAX_COHORT:
            lint.warn(f"{prefix}.min_cohort", f"{cohort} is above {MAX_COHORT}: nearly every "
                      "cell will be suppressed")
    rows = spec.get("max_rows_per_unit", 1)
    if isinstance(rows, int) and rows > MAX_ROWS_PER_UNIT:
        lint.warn(f"{prefix}.max_rows_per_unit", f"{rows} rows per unit: the noise on every "
                  "count and sum grows with it")
    per_user, total = _number(spec.get("epsilon_per_user")), _number(spec.get("epsilon_total"))
    per_query = _number(spec.get("max_epsilon_per_query"))
    if per_user is not None and per_user > MAX_EPSILON:
        lint.error(f"{prefix}.epsilon_per_user", f"{per_user:g} is above {MAX_EPSILON:g}: a "
                   "guarantee at that epsilon says little")
    if per_user is not None and total is not None and total < per_user:
        lint.error(f"{prefix}.epsilon_per_user", f"{per_user:g} is above epsilon_total "
                   f"{total:g}, the cap of all users together")
    if per_query is not None and per_user is not None and per_query > per_user:
        lint.warn(f"{prefix}.max_epsilon_per_query", f"{per_query:g} is above "
                  f"epsilon_per_user {per_user:g} and is capped at it")


def _users(lint: _Lint, doc: dict[str, Any]) -> None:
    users = doc.get("users")
    for i, user in enumerate(users if isinstance(users, list) else []):
        token = user.get("token") if isinstance(user, dict) else None
        if isinstance(token, str) and not token.startswith("env:"):
            lint.error(f"users[{i}].token", "a literal token: whoever reads this file can act "
                       "as this user; use token = \"env:VARIABLE\"")


def _ledger(lint: _Lint, doc: dict[str, Any]) -> None:
    service = doc.get("service") if isinstance(doc.get("service"), dict) else {}
    assert isinstance(service, dict)
    raw = service.get("ledger", "ledger.sqlite")
    if not isinstance(raw, str):
        return
    ledger = Path(raw) if Path(raw).is_absolute() else lint.file.parent / raw
    try:
        mode = ledger.stat().st_mode
    except OSError:
        return  # not created yet: the service creates it
    if mode & stat.S_IROTH:
        lint.warn("service.ledger", f"{ledger} is readable by every user of this machine: "
                  "it holds who asked what and the cached releases; chmod o-r")


def _spark(lint: _Lint, doc: dict[str, Any]) -> None:
    spark = doc.get("spark") if isinstance(doc.get("spark"), dict) else None
    datasets = doc.get("datasets") if isinstance(doc.get("datasets"), dict) else {}
    assert isinstance(datasets, dict)
    users = {n: s for n, s in datasets.items() if isinstance(s, dict)
             and s.get("backend") == "spark"}
    if spark is not None and not users:
        lint.warn("spark", "no dataset has backend = \"spark\": the table is unused")
    spark = spark or {}
    master = spark.get("master", "local[*]")
    if users and isinstance(master, str) and not master.startswith("local"):
        if not spark.get("scratch"):
            lint.warn("spark.scratch", f"master {master!r} is a cluster, whose executors "
                      "cannot read bounded copies in the service's cache directory; set "
                      "scratch to a shared URI (hdfs://..., s3a://...)")
        for name, spec in users.items():
            source = spec.get("source")
            if isinstance(source, str) and "://" not in source:
                lint.warn(f"datasets.{name}.source", f"a local path, read by the executors "
                          f"of {master!r}: it must be on a mount every node shares; use an "
                          "hdfs:// or s3a:// URI otherwise")
    conf = spark.get("conf") if isinstance(spark.get("conf"), dict) else {}
    assert isinstance(conf, dict)
    if str(conf.get("spark.ui.enabled", "false")).lower() == "true":
        lint.warn("spark.conf.spark.ui.enabled", "the Spark UI is an open port that lists "
                  "every query and the session's settings; leave it off or firewall it")
    for key, value in conf.items():
        if SECRET_CONF.search(key) and isinstance(value, str) and not value.startswith("env:"):
            lint.error(f"spark.conf.{key}", "a secret written into the policy file: whoever "
                       "reads it has the credential; use \"env:VARIABLE\"")


def _loader_problem(message: str, file: Path) -> tuple[str, str]:
    """``file: key.path: problem`` split into key and problem."""
    rest = message[len(str(file)) + 2:] if message.startswith(f"{file}: ") else message
    match = re.match(r"([\w.\[\]-]+): (.*)", rest, re.DOTALL)
    return (match.group(1), match.group(2)) if match else ("(file)", rest)


def _said(problems: list[Problem], key: str) -> bool:
    """Whether the lint already has an error on ``key`` (or on the column ``key`` is in)."""
    return any(p.severity == "error" and (p.key == key or (
        ".columns." in p.key and key.startswith(p.key + "."))) for p in problems)


def lint_policy(path: str | Path) -> list[Problem]:
    """Every problem of the policy file at ``path``, errors and warnings."""
    file = Path(path).resolve()
    lint = _Lint(file)
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        doc = None  # the loader's message says why
    if isinstance(doc, dict):
        datasets = doc.get("datasets")
        for name, spec in (datasets if isinstance(datasets, dict) else {}).items():
            if isinstance(spec, dict):
                _dataset(lint, str(name), spec)
        _users(lint, doc)
        _ledger(lint, doc)
        _spark(lint, doc)
    try:
        load_policy(file, require_tokens=False)
    except PolicyError as exc:
        key, problem = _loader_problem(str(exc), file)
        if not _said(lint.problems, key):
            lint.error(key, problem)
    return lint.problems

