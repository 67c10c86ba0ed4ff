"""Compile a query's cube into one Ibis expression: a grouped aggregate over cell indices.

Each dimension becomes an integer cell index (``-1`` for the ``other`` cell) computed by a
CASE chain against the policy's public edges or categories; each measure is a row count
or a sum of clipped, fixed-point-scaled integers. The engine runs the expression where the
data lives; only the small aggregate table comes back.
"""

from __future__ import annotations

from typing import Any

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from ..query import Cube, Dimension, Measure, Query, Where


def typed_category(label: str, dtype: dt.DataType) -> Any:
    """The policy's category label as a literal of the column's type."""
    if dtype.is_boolean():
        return label.lower() in ("true", "1")
    if dtype.is_integer():
        return int(label)
    if dtype.is_floating():
        return float(label)
    return label


def cell_index(t: ir.Table, dim: Dimension) -> ir.IntegerValue:
    """Cell index of each row along ``dim``; values outside the domain and NULLs give -1.

    Numeric values are clipped to the policy bounds first (rule 3). The clip is folded into
    the CASE chain: below the bounds counts as the lowest edge, above as the highest.
    """
    x = t[dim.column]
    dtype = x.type()
    if not dim.edges:
        return ibis.cases(*[(x == typed_category(c, dtype), i)
                            for i, c in enumerate(dim.categories)], else_=-1)
    assert dim.bounds is not None
    lo, hi = dim.bounds
    edges, last = dim.edges, len(dim.edges) - 2
    cases: list[tuple[ir.BooleanValue, int]] = []
    if dtype.is_floating():
        cases.append((x.isnan(), -1))
    if edges[0] > lo:  # clipped values in [lo, edges[0]) have no bin
        cases.append((x < edges[0], -1))
    cases += [(x < e, i) for i, e in enumerate(edges[1:-1])]
    if edges[-1] < hi:  # clipped values in (edges[-1], hi] have no bin
        cases.append((x <= edges[-1], last))
        return ibis.cases(*cases, else_=-1)
    cases.append((x.notnull(), last))
    return ibis.cases(*cases, else_=-1)


def fixed_point(t: ir.Table, m: Measure) -> ir.IntegerValue:
    """Clip to the bounds, scale onto the integer grid and round: each row adds an integer."""
    assert m.column is not None
    x = t[m.column]
    lo, hi = m.bounds
    clipped = ibis.cases((x < lo, lo), (x > hi, hi), else_=x)
    powered = clipped if m.power == 1 else clipped**m.power
    if m.absolute:
        powered = powered.abs()
    return (powered * m.scale).round().cast("int64")


def matches(t: ir.Table, where: Where) -> ir.BooleanValue:
    """Rows whose columns take one of the listed categories, for every listed column."""
    conds = [t[c].isin([typed_category(v, t[c].type()) for v in values]) for c, values in where]
    out = conds[0]
    for cond in conds[1:]:
        out = out & cond
    return out


def measure(t: ir.Table, m: Measure) -> ir.IntegerValue:
    value = ibis.literal(1, "int64") if m.column is None else fixed_point(t, m)
    if m.misclassified is not None:
        w = m.misclassified
        actual = t[w.label] == typed_category(w.positive, t[w.label].type())
        if w.prediction is not None:
            predicted = t[w.prediction] == typed_category(w.predicted_positive,
                                                          t[w.prediction].type())
        else:
            assert w.score is not None
            predicted = t[w.score] >= w.threshold
        # NULL predictions or labels never count as errors: the comparison is not true
        value = ibis.cases((predicted != actual, value), else_=0)
    if m.when is not None:
        col, category = m.when
        x = t[col]
        value = ibis.cases((x == typed_category(category, x.type()), value), else_=0)
    elif m.column is None and m.misclassified is None:
        return t.count()
    return value.sum().cast("int64")


def cube_expression(t: ir.Table, cube: Cube, index: int, width: int,
                    names: list[str]) -> ir.Table:
    """One cube as columns ``part, d0..d{width-1}``, then ``names`` (0 where not measured)."""
    for d in cube.dims:
        if d.samples:  # rows in none of the samples are not counted
            anywhere = matches(t, d.samples[0][1])
            for _, where in d.samples[1:]:
                anywhere = anywhere | matches(t, where)
            t = t.filter(anywhere)
    keys = {f"d{i}": (cell_index(t, d) if d.edges or d.categories else
                      ibis.cases(*[(matches(t, w), j) for j, (_, w) in enumerate(d.samples)],
                                 else_=-1))
            for i, d in enumerate(cube.dims)}
    mine = {m.name: measure(t, m) for m in cube.measures}
    grouped = t.group_by(**keys).aggregate(**mine) if keys else t.aggregate(**mine)
    zero = ibis.literal(0, "int64")
    return grouped.select(
        part=ibis.literal(index, "int64"),
        **{f"d{i}": grouped[f"d{i}"].cast("int64") if i < len(cube.dims) else zero
           for i in range(width)},
        **{n: grouped[n] if n in mine else zero for n in names})


def query_expression(t: ir.Table, query: Query) -> ir.Table:
    """The one Ibis expression answering ``query``: every cube, stacked with UNION ALL."""
    if query.where:
        t = t.filter(matches(t, query.where))
    width = max(len(c.dims) for c in query.cubes)
    names = list(dict.fromkeys(m.name for c in query.cubes for m in c.measures))
    parts = [cube_expression(t, c, i, width, names) for i, c in enumerate(query.cubes)]
    return parts[0] if len(parts) == 1 else ibis.union(*parts, distinct=False)
