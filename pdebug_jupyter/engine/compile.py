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

from ..query import Dimension, Measure, Query


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
    return (clipped * m.scale).round().cast("int64")


def cube_expression(t: ir.Table, query: Query) -> ir.Table:
    """The one Ibis expression answering ``query``: columns ``d0..dk`` then one per measure."""
    for col, values in query.where:
        t = t.filter(t[col].isin([typed_category(v, t[col].type()) for v in values]))
    keys = {f"d{i}": cell_index(t, d) for i, d in enumerate(query.dims)}
    aggs = {m.name: (t.count() if m.column is None else fixed_point(t, m).sum().cast("int64"))
            for m in query.measures}
    return t.group_by(**keys).aggregate(**aggs)
