"""Query specs: the types every query kind builds, and the checks against the policy.

A query releases one or more *cubes*: grouped integer measures over dimensions whose cells
come from the policy's public domains (never from the data), plus one ``other`` cell per
column dimension for values outside the domain. Two bodies that mean the same thing (keys
reordered, a scalar ``where`` value versus a one-element list, default bins spelled out)
have the same canonical form, so the ledger can answer the second from its cache.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..policy import (
    CATEGORICAL_KINDS,
    DIMENSION_KINDS,
    MAX_BINS,
    OTHER,
    DatasetPolicy,
    bin_labels,
    equal_width_edges,
)

MAX_DIMENSIONS = 4
MAX_CELLS = 100_000


class QueryError(ValueError):
    """A query the policy does not allow or cannot be understood; maps to a 4xx response."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


Where = tuple[tuple[str, tuple[str, ...]], ...]  # ((column, (values...)), ...), sorted


@dataclass(frozen=True)
class Dimension:
    """One axis of a cube: a column cut into public cells; ``other`` is always the last cell.

    A *sample* dimension instead splits rows by disjoint ``where`` filters (reference and
    current windows, say); rows in none of them are not counted, so it has no ``other``.
    """

    column: str
    edges: tuple[float, ...] = ()  # binned columns: left-closed bins, last one closed
    bounds: tuple[float, float] | None = None  # values are clipped to these before binning
    categories: tuple[str, ...] = ()  # categorical columns
    samples: tuple[tuple[str, Where], ...] = ()  # sample dimensions: (label, filter)

    @property
    def labels(self) -> tuple[str, ...]:
        if self.samples:
            return tuple(label for label, _ in self.samples)
        return (bin_labels(self.edges) if self.edges else self.categories) + (OTHER,)


@dataclass(frozen=True)
class Misclassified:
    """A row is misclassified when its prediction disagrees with ``label == positive``. The
    prediction is ``score >= threshold``, or ``prediction == predicted_positive`` for a
    declared binary prediction column."""

    label: str
    positive: str
    score: str | None = None
    threshold: float = 0.5
    prediction: str | None = None
    predicted_positive: str = ""


@dataclass(frozen=True)
class Measure:
    """An integer aggregate per cell: a row count, or a fixed-point sum of a clipped column.

    A fixed-point sum clips each value to ``bounds``, raises it to ``power``, scales it by
    ``scale`` and rounds it to an integer before summing, so the released number lives on an
    integer grid (privacy rule 4); ``absolute`` sums magnitudes. ``when`` restricts either to
    rows whose categorical column equals a category: ``Measure("positives", when=("default",
    "1"))`` counts positives. ``misclassified`` counts rows whose prediction disagrees with
    their label (see :class:`Misclassified`).
    """

    name: str
    column: str | None = None
    bounds: tuple[float, float] = (0.0, 0.0)
    scale: int = 1
    weight: float = 1.0  # share of the query's epsilon spent on this measure
    when: tuple[str, str] | None = None
    power: int = 1
    absolute: bool = False
    misclassified: Misclassified | None = None

    @property
    def row_sensitivity(self) -> int:
        """Largest change one row can make to this measure's cells (L1)."""
        if self.column is None:
            return 1
        return int(max(abs(round(b ** self.power * self.scale)) for b in self.bounds))


@dataclass(frozen=True)
class Cube:
    """One released table: measures over the product of the dimensions' cells.

    The first measure is always the row count; suppression is decided on it.
    """

    name: str
    dims: tuple[Dimension, ...]
    measures: tuple[Measure, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(d.labels) for d in self.dims)


@dataclass(frozen=True)
class Query:
    kind: str
    dataset: str
    epsilon: float
    cubes: tuple[Cube, ...]
    where: Where
    params: Mapping[str, Any]  # canonical parameters, without kind, dataset and epsilon

    def canonical(self) -> str:
        body = {"kind": self.kind, "dataset": self.dataset, "epsilon": self.epsilon, **self.params}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


def shown(value: Any, limit: int = 80) -> str:
    """The caller's own input, quoted for an error message and cut short: a message never
    grows with the request."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _reject_constant(name: str) -> float:
    raise QueryError("malformed", f"{name} is not a valid JSON number", status=400)


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object strictly: NaN and Infinity are not numbers here."""
    try:
        body = json.loads(raw or b"null", parse_constant=_reject_constant)
    except QueryError:
        raise
    # ValueError: also an integer past Python's 4300-digit limit; RecursionError: deep nesting
    except (ValueError, RecursionError):
        raise QueryError("malformed", "request body is not valid JSON", status=400) from None
    if not isinstance(body, dict):
        raise QueryError("malformed", "request body must be a JSON object", status=400)
    return body


def epsilon_value(ds: DatasetPolicy, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError("invalid_epsilon", "epsilon must be a number")
    try:
        eps = float(value)
    except OverflowError:  # an integer too large for a float
        eps = math.inf
    if not math.isfinite(eps) or eps <= 0:
        raise QueryError("invalid_epsilon", "epsilon must be a positive finite number")
    if eps > ds.max_epsilon_per_query:
        raise QueryError("invalid_epsilon", f"epsilon {eps:g} exceeds the per-query limit "
                         f"{ds.max_epsilon_per_query:g} for dataset {ds.name!r}")
    if eps < 1e-6:
        raise QueryError("invalid_epsilon", "epsilon below 1e-6 would release pure noise")
    return eps


def column(ds: DatasetPolicy, name: Any, role: str, kinds: tuple[str, ...] | None = None) -> str:
    """Check that ``name`` is a declared, queryable column of an allowed kind for ``role``."""
    if not isinstance(name, str):
        raise QueryError("invalid_parameter", f"{role} must be a column name")
    col = ds.columns.get(name)
    if col is None:
        raise QueryError("unknown_column", f"unknown column {shown(name)} in {role} "
                         f"(dataset {ds.name!r} declares: {', '.join(ds.columns)})")
    if not col.queryable:
        raise QueryError("forbidden_column", f"column {name!r} is an identifier: it cannot be "
                         f"queried, grouped or filtered on", status=403)
    if kinds is not None and col.kind not in kinds:
        raise QueryError("invalid_parameter", f"{role} {name!r} is of kind {col.kind!r}; "
                         f"expected one of {', '.join(kinds)}")
    return name


def dimension(ds: DatasetPolicy, name: Any, role: str, bins: Any = None) -> Dimension:
    col = ds.columns[column(ds, name, role, DIMENSION_KINDS)]
    if not col.binned:
        if bins is not None:
            raise QueryError("invalid_parameter", f"bins apply to numeric columns, not {name!r}")
        return Dimension(col.name, categories=col.categories)
    assert col.bounds is not None
    edges = col.edges
    if bins is not None:
        if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS:
            raise QueryError("invalid_parameter", f"bins must be an integer from 1 to {MAX_BINS}")
        edges = equal_width_edges(col.bounds, bins)
    return Dimension(col.name, edges=edges, bounds=col.bounds)


def where_clause(ds: DatasetPolicy, raw: Any, role: str = "where") -> Where:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise QueryError("invalid_parameter", f"{role} must be an object {{column: value or "
                         "[values]}")
    out = []
    for name, values in sorted(raw.items()):
        col = ds.columns[column(ds, name, role, CATEGORICAL_KINDS)]
        vals = values if isinstance(values, list) else [values]
        labels = set()
        for v in vals:
            label = str(v).lower() if isinstance(v, bool) else str(v)
            if not isinstance(v, str | int | bool) or label not in col.categories:
                raise QueryError("invalid_parameter", f"{role} {name!r}: each value must be one "
                                 f"of the declared categories {list(col.categories)}")
            labels.add(label)
        if not labels:
            raise QueryError("invalid_parameter", f"{role} {name!r}: give at least one value")
        out.append((name, tuple(sorted(labels))))
    return tuple(out)


