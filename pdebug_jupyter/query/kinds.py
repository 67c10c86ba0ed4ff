"""Query kinds: each turns checked parameters into the cubes it releases.

=================  ==================================================  ==================
kind               cubes (all integer measures)                        epsilon split
=================  ==================================================  ==================
``histogram``      counts over (column bins) x (by groups)             one measure
``calibration``    per (score bin, by): count, positives, and          five measures
                   fixed-point sums of score, score over positives
                   and score squared (for the Brier score)
``confusion``      counts over (score bin, label, by)                  one measure
``drift``          per column: counts over (sample, column bins)       one cube per column
``cohort_errors``  per (feature combination): count, misclassified     two measures
                   (score >= threshold disagrees with the label)
``attribution``    per (by group): count, then per attribution         1 + one per column
                   column the fixed-point sum of |attribution|
``performance_``   per score bin (20 by default): count, score sum     two measures
``estimate``       (unlabelled data: no label is read)
``marginals``      counts over each column's cells, and over every     one cube per column
                   pair of columns' cells (for the synthetic twin)     and per pair
=================  ==================================================  ==================

A cohort's prediction is ``score >= threshold`` or a binary ``prediction`` column (declared
with kind "label"); rows with a NULL prediction or label are never counted as misclassified.

``marginals`` takes 1 to ``MAX_MARGINAL_COLUMNS`` columns (default: every non-identifier
column) in policy order, numeric ones over their policy bins and attributions over
``ATTRIBUTION_BINS`` equal-width cells of their bounds. One row lands in one cell of each
of the ``c + c (c - 1) / 2`` cubes, so each cube's count has sensitivity ``k`` and gets an
equal share of epsilon (7 columns: 28 cubes, each at epsilon / 28).

Score bins are left-closed ``[a, b)``, the last one closed; empty bins are kept. The score
sum is fixed point: each score is clipped to its bounds, multiplied by ``SCORE_SCALE`` and
rounded before summing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..policy import CATEGORICAL_KINDS, DatasetPolicy, equal_width_edges
from .spec import (
    MAX_CELLS,
    MAX_DIMENSIONS,
    Cube,
    Dimension,
    Measure,
    Misclassified,
    Query,
    QueryError,
    Where,
    column,
    dimension,
    epsilon_value,
    shown,
    where_clause,
)

ATTRIBUTION_STEPS = 10_000
SCORE_SCALE = 10_000  # the noise in score units is ~1/epsilon whatever the scale
DRIFT_KINDS = ("numeric", "score", "categorical", "protected", "label")
MARGINAL_KINDS = ("numeric", "score", "attribution", *CATEGORICAL_KINDS)
MAX_MARGINAL_COLUMNS = 12  # 78 cubes; the epsilon per cube shrinks with the square
ATTRIBUTION_BINS = 10
MAX_CUBES = 100  # the engine runs one grouped scan per cube

Built = tuple[tuple[Cube, ...], dict[str, Any]]


def _by(raw: Any) -> list[Any]:
    if raw is None:
        return []
    return raw if isinstance(raw, list) else [raw]


def _only(ds: DatasetPolicy, raw: Any, role: str, kind: str) -> str:
    """The named column of ``kind``, or the dataset's only one when none is named."""
    if raw is None:
        found = [c.name for c in ds.columns.values() if c.kind == kind]
        if len(found) != 1:
            raise QueryError("invalid_parameter", f"name the {role} column (the policy "
                             f"declares {len(found)} of kind {kind!r})")
        raw = found[0]
    return column(ds, raw, role, (kind,))


def _dim_key(d: Dimension) -> Any:
    return {"column": d.column, "bins": list(d.edges)} if d.edges else d.column


def _histogram(ds: DatasetPolicy, p: dict[str, Any]) -> Built:
    main = dimension(ds, p.pop("column", None), "column", p.pop("bins", None))
    by = tuple(dimension(ds, b, "by") for b in _by(p.pop("by", None)))
    dims = (main, *by)
    return (Cube("histogram", dims, (Measure("count"),)),), {"dims": [_dim_key(d) for d in dims]}


def _scored(ds: DatasetPolicy, p: dict[str, Any]) -> tuple[Dimension, str, tuple[Dimension, ...]]:
    score = dimension(ds, _only(ds, p.pop("score", None), "score", "score"), "score",
                      p.pop("bins", None))
    label = _only(ds, p.pop("label", None), "label", "label")
    by = tuple(dimension(ds, b, "by") for b in _by(p.pop("by", None)))
    return score, label, by


def _calibration(ds: DatasetPolicy, p: dict[str, Any]) -> Built:
    score, label, by = _scored(ds, p)
    assert score.bounds is not None
    positive = (label, ds.columns[label].categories[1])
    s = {"column": score.column, "bounds": score.bounds, "scale": SCORE_SCALE}
    measures = (Measure("count"), Measure("positives", when=positive),
                Measure("score_sum", **s),  # type: ignore[arg-type]
                Measure("score_pos_sum", when=positive, **s),  # type: ignore[arg-type]
                Measure("score_sq_sum", power=2, **s))  # type: ignore[arg-type]
    dims = (score, *by)
    return ((Cube("calibration", dims, measures),),
            {"dims": [_dim_key(d) for d in dims], "label": label, "scale": SCORE_SCALE})


def _confusion(ds: DatasetPolicy, p: dict[str, Any]) -> Built:
    score, label, by = _scored(ds, p)
    dims = (score, dimension(ds, label, "label"), *by)
    return (Cube("confusion", dims, (Measure("count"),)),), {"dims": [_dim_key(d) for d in dims]}


def _disjoint(a: Where, b: Where) -> bool:
    """True when some column is filtered in both on non-overlapping values."""
    other = dict(b)
    return any(c in other and not set(v) & set(other[c]) for c, v in a)


def _drift(ds: DatasetPolicy, p: dict[str, Any]) -> Built:
    reference = where_clause(ds, p.pop("reference", None), "reference")
    current = where_clause(ds, p.pop("current", None), "current")
    if not reference or not current or not _disjoint(reference, current):
        raise QueryError("invalid_parameter", "reference and current must be disjoint filters: "
                         "filter one column on different values, e.g. {'window': 'reference'} "
                         "and {'window': 'current'}")
    raw = p.pop("columns", None)
    if raw is None:
        raw = [c.name for c in ds.columns.values() if c.kind in ("numeric", "categorical",
                                                                 "protected")]
    if not isinstance(raw, list) or not raw:
        raise QueryError("invalid_parameter", "columns must be a non-empty list of column names")
    bins = p.pop("bins", None)
    sample = Dimension("sample", samples=(("reference", reference), ("current", current)))
    cubes = []
    for name in raw:
        col = ds.columns[column(ds, name, "columns", DRIFT_KINDS)]
        if col.name == sample.column:
            raise QueryError("invalid_parameter", "a drift column cannot be named 'sample'")
        cubes.append(Cube(col.name, (sample, dimension(ds, col.name, "columns",
                                                       bins if col.binned else None)),
                          (Measure("count"),)))
    canonical = {"columns": [_dim_key(c.dims[1]) for c in cubes],
                 "reference": {c: list(v) for c, v in reference},
                 "current": {c: list(v) for c, v in current}}
    return tuple(cubes), canonical


def _threshold(ds: DatasetPolicy, score: str, raw: Any) -> float:
    lo, hi = ds.columns[score].bounds or (0.0, 1.0)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not lo < raw <= hi:
        raise QueryError("invalid_parameter", f"threshold must be a number in ({lo:g}, {hi:g}]")
    return float(raw)


def _cohort_errors(ds: DatasetPolicy, p: dict[str, Any]) -> Built:
    raw = p.pop("features", None)
    if not isinstance(raw, list) or not 1 <= len(raw) <= 3:
        raise QueryError("invalid_parameter", "features must be a list of 1 to 3 column names")
    features = tuple(dimension(ds, f, "features") for f in raw)
    label = _only(ds, p.pop("label", None), "label", "label")
    positive = ds.columns[label].categories[1]
    prediction = p.pop("prediction", None)
    if prediction is not None:  # a binary prediction column, declared like a label
        if "score" in p or "threshold" in p:
            raise QueryError("invalid_parameter", "give a prediction column or a score and "
                             "threshold, not both")
        pred = column(ds, prediction, "prediction", ("label",))
        if pred == label:
            raise QueryError("invalid_parameter", "the prediction and the label are one column")
        rule = Misclassified(label, positive, prediction=pred,
                             predicted_positive=ds.columns[pred].categories[1])
        how: dict[str, Any] = {"prediction": pred}
    else:
        score = _only(ds, p.pop("score", None), "score", "score")
        threshold = _threshold(ds, score, p.pop("threshold", 0.5))
        rule = Misclassified(label, positive, score=score, threshold=threshold)
        how = {"score": score, "threshold": threshold}
    return ((Cube("cohort_errors", features, (Measure("count"),
                                              Measure("errors", misclassified=rule))),),
            {"dims": [_dim_key(d) for d in features], "label": label, **how})


def _attribution(ds: DatasetPolicy, p: dict[str, Any]) -> Built:
    raw = p.pop("columns", None)
    if raw is None:
        raw = [c.name for c in ds.columns.values() if c.kind == "attribution"]
    if not isinstance(raw, list) or not raw:
        raise QueryError("invalid_parameter", "columns must be a non-empty list of attribution "
                         "columns (the policy declares them with kind = 'attribution')")
    by = tuple(dimension(ds, b, "by") for b in _by(p.pop("by", None)))
    measures = [Measure("count")]
    scales, bounds = {}, {}
    for name in raw:
        col = ds.columns[column(ds, name, "columns", ("attribution",))]
        assert col.bounds is not None
        # map the largest magnitude onto 10,000 grid steps; the noise in attribution units
        # is ~ bound / epsilon whatever the scale
        bounds[col.name] = max(abs(b) for b in col.bounds)
        scale = scales[col.name] = max(1, round(ATTRIBUTION_STEPS / bounds[col.name]))
        measures.append(Measure(col.name, column=col.name, bounds=col.bounds, scale=scale,
                                absolute=True))
    if len({m.name for m in measures}) != len(measures):
        raise QueryError("invalid_parameter", "a column appears twice")
    return ((Cube("attribution", by, tuple(measures)),),
            {"dims": [_dim_key(d) for d in by], "columns": list(raw), "scales": scales,
             "bounds": bounds})


def _performance_estimate(ds: DatasetPolicy, p: dict[str, Any]) -> Built:
    score = dimension(ds, _only(ds, p.pop("score", None), "score", "score"), "score",
                      p.pop("bins", 20))
    assert score.bounds is not None
    measures = (Measure("count"), Measure("score_sum", column=score.column, bounds=score.bounds,
                                          scale=SCORE_SCALE))
    return ((Cube("performance_estimate", (score,), measures),),
            {"dims": [_dim_key(score)], "scale": SCORE_SCALE})


def _marginal_dimension(ds: DatasetPolicy, name: Any) -> Dimension:
    col = ds.columns[column(ds, name, "columns", MARGINAL_KINDS)]
    if col.kind == "attribution":  # only summed elsewhere, so the policy gives it no bins
        assert col.bounds is not None
        return Dimension(col.name, edges=equal_width_edges(col.bounds, ATTRIBUTION_BINS),
                         bounds=col.bounds)
    return dimension(ds, col.name, "columns")


def _marginals(ds: DatasetPolicy, p: dict[str, Any]) -> Built:
    raw = p.pop("columns", None)
    if raw is None:
        raw = [c.name for c in ds.columns.values() if c.kind in MARGINAL_KINDS]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_MARGINAL_COLUMNS:
        raise QueryError("invalid_parameter", "columns must be a list of 1 to "
                         f"{MAX_MARGINAL_COLUMNS} column names")
    dims = [_marginal_dimension(ds, name) for name in raw]
    if len({d.column for d in dims}) != len(dims):
        raise QueryError("invalid_parameter", "a column appears twice")
    order = list(ds.columns)  # policy order: a reordered list is the same (cached) query
    dims.sort(key=lambda d: order.index(d.column))
    count = (Measure("count"),)
    cubes = [Cube(d.column, (d,), count) for d in dims]
    cubes += [Cube(f"{a.column} x {b.column}", (a, b), count)
              for i, a in enumerate(dims) for b in dims[i + 1:]]
    return tuple(cubes), {"columns": [_dim_key(d) for d in dims]}


class Params(dict[str, Any]):
    """A body's parameters, where ``null`` means the default (so it has the canonical form,
    and the cached release, of an absent key): ``pop`` gives the default for it and ``in``
    does not see it. An unknown key is left over, and refused, either way."""

    def pop(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = super().pop(key, None)
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None


Builder = Callable[[DatasetPolicy, dict[str, Any]], Built]
#: Query kinds: each builds its cubes from the parameters it pops; leftovers are errors.
BUILDERS: dict[str, Builder] = {
    "histogram": _histogram,
    "calibration": _calibration,
    "confusion": _confusion,
    "drift": _drift,
    "cohort_errors": _cohort_errors,
    "attribution": _attribution,
    "performance_estimate": _performance_estimate,
    "marginals": _marginals,
}


def _check(cubes: tuple[Cube, ...]) -> None:
    names = [c.name for c in cubes]
    if len(cubes) > MAX_CUBES:
        raise QueryError("invalid_parameter", f"the query would release more than {MAX_CUBES} "
                         "tables; use fewer columns")
    if len(set(names)) != len(names):
        raise QueryError("invalid_parameter", "a column appears twice")
    for cube in cubes:
        cols = [d.column for d in cube.dims]
        if len(set(cols)) != len(cols):
            raise QueryError("invalid_parameter", "a column appears twice among the dimensions")
        if len(cube.dims) > MAX_DIMENSIONS:
            raise QueryError("invalid_parameter", f"at most {MAX_DIMENSIONS} dimensions per cube")
    if sum(math.prod(c.shape) for c in cubes) > MAX_CELLS:
        raise QueryError("invalid_parameter", f"the query would release more than {MAX_CELLS} "
                         "cells; use fewer bins, columns or groups")


def build_query(ds: DatasetPolicy, body: Mapping[str, Any]) -> Query:
    """Validate a request body against the dataset's policy and return its canonical query."""
    params = Params(body)
    kind = params.pop("kind", None)
    if not isinstance(kind, str) or kind not in BUILDERS:
        raise QueryError("unknown_kind", f"unknown query kind {shown(kind)} "
                         f"(one of {', '.join(sorted(BUILDERS))})")
    if "epsilon" not in params:
        raise QueryError("invalid_epsilon", "epsilon is required")
    epsilon = epsilon_value(ds, params.pop("epsilon"))
    where = where_clause(ds, params.pop("where", None))
    cubes, canonical = BUILDERS[kind](ds, params)
    if params:
        raise QueryError("invalid_parameter", f"unknown parameter(s) for {kind}: "
                         f"{', '.join(sorted(params))[:200]}")
    _check(cubes)
    canonical["where"] = {c: list(v) for c, v in where}
    return Query(kind, ds.name, epsilon, cubes, where, canonical)
