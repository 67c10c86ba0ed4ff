"""Compile a query's cube into one Ibis expression: a grouped aggregate over cell indices.

Each dimension becomes an integer cell index (``-1`` for the ``other`` cell) computed by a
CASE chain against the policy's public edges or categories; each measure is a row count
or a sum of clipped, fixed-point-scaled integers. The engine runs the expression where the
data lives; only the small aggregate table comes back.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from ..query import Dimension, Measure, Query, Where

#: What the engine has seen of a dataset version: per numeric column, the smallest and largest
#: value, recorded only when every non-NULL value is a finite number (no NaN, no infinity).
#: It never changes an answer (the policy's bounds and edges alone do, rules 2 and 3); it
#: lets the compiler leave out steps this version's values cannot reach: a clip with nothing
#: to clip, a NaN test with no NaN, and a CASE chain that a floor can stand for.
Ranges = Mapping[str, tuple[float, float]]


def typed_category(label: str, dtype: dt.DataType) -> Any:
    """The policy's category label as a literal of the column's type."""
    if dtype.is_boolean():
        return label.lower() in ("true", "1")
    if dtype.is_integer():
        return int(label)
    if dtype.is_floating():
        return float(label)
    return label


@dataclass(frozen=True)
class FloorForm:
    """A bin index as arithmetic: ``floor((x - offset) * factor)`` (``/ factor`` when
    ``divide``), clamped to ``0..n-1`` where the floors at the ends of the values seen show a
    clamp is needed; in each of ``fixes``' windows ``low <= x < high`` the index is ``value``
    instead."""

    offset: float
    factor: float
    divide: bool
    fixes: tuple[tuple[int, float, float], ...]  # (value, low, high)

    def floor(self, v: float) -> int:
        d = v - self.offset if self.offset else v
        return math.floor(d / self.factor if self.divide else d * self.factor)


def _ordered(v: float) -> int:
    """Doubles as integers in the same order (adjacent doubles differ by 1)."""
    bits: int = struct.unpack("<q", struct.pack("<d", v))[0]
    return bits if bits >= 0 else -(bits & 0x7FFF_FFFF_FFFF_FFFF)


def _double(k: int) -> float:
    bits = struct.pack("<q", k) if k >= 0 else struct.pack("<Q", -k | (1 << 63))
    return float(struct.unpack("<d", bits)[0])


def floor_form(edges: tuple[float, ...], bounds: tuple[float, float],
               seen: tuple[float, float]) -> FloorForm | None:
    """A :class:`FloorForm` that gives, for every value in ``seen``, the bin the CASE
    chain of :func:`cell_index` gives; None when there is none with few enough fixes.

    The proof: on the values seen, the chain's index is the number of inner edges ``e_i``
    with ``x >= e_i``. ``x - offset``, the product or quotient and ``floor`` are each
    monotone in ``x`` (IEEE rounding is), so the clamped floor is the number of inner edges
    whose *jump* ``j_i`` (the least double seen with ``floor >= i``, found by bisection) has
    ``x >= j_i``. The two differ only between ``e_i`` and ``j_i``, for edges whose jump is
    not at the edge itself: a window a few doubles wide where a decimal edge such as 0.9 is
    off the floor's grid. Each window gets a fix, the chain's index there, when that index
    is one number across it and the windows are apart. Python's floats are the engine's
    doubles, and the literals are Python's shortest round-trip decimals, which the engine
    reads back exactly. Values below the first or above the last edge that the chain counts
    as ``-1`` must not be seen, and the form must stay far from the integer cast's limits.
    """
    (lo, hi), (x_lo, x_hi), n = bounds, seen, len(edges) - 1
    if (edges[0] > lo and x_lo < edges[0]) or (edges[-1] < hi and x_hi > edges[-1]):
        return None
    first, after = _ordered(x_lo), _ordered(x_hi) + 1  # seen values: first .. after - 1
    inner = [_ordered(e) for e in edges[1:-1]]

    def chain(k: int) -> int:  # the chain's index of the double k (given k is seen)
        return bisect.bisect_right(inner, k)

    best: FloorForm | None = None
    offset, width = edges[0], edges[-1] - edges[0]
    for divide, factor in ((False, n / width), (True, width / n)):
        if not (math.isfinite(factor) and factor > 0):
            continue
        form = FloorForm(offset, factor, divide, ())
        if max(abs(form.floor(x_lo)), abs(form.floor(x_hi))) >= 2**52:
            continue
        fixes: list[tuple[int, float, float]] = []
        for i, e in enumerate(edges[1:-1], 1):
            a, b = first, after  # bisection: the least seen double with floor >= i
            while a < b:
                mid = (a + b) // 2
                a, b = (a, mid) if form.floor(_double(mid)) >= i else (mid + 1, b)
            jump, edge = a, min(max(_ordered(e), first), after)
            if jump != edge:
                start, end = min(edge, jump), max(edge, jump)
                if chain(start) != chain(end - 1) or (fixes and _ordered(fixes[-1][2]) > start):
                    break
                fixes.append((chain(start), _double(start), _double(end)))
        else:
            if best is not None and len(fixes) >= len(best.fixes):
                continue
            best = FloorForm(offset, factor, divide, tuple(fixes))
    return best if best is not None and len(best.fixes) <= max(2, n // 4) else None


def cell_index(t: ir.Table, dim: Dimension, seen: tuple[float, float] | None = None
               ) -> ir.IntegerValue:
    """Cell index of each row along ``dim``; values outside the domain and NULLs give -1.

    Numeric values are clipped to the policy bounds first (rule 3). The clip is folded into
    the CASE chain: below the bounds counts as the lowest edge, above as the highest. When
    the version's values are all finite (``seen``, their range), the NaN test is left out,
    and a floor of one product stands for the chain where :func:`floor_form` proves it the
    same; NULLs then give a NULL cell, which :func:`scan_expression` makes -1.
    """
    x = t[dim.column]
    dtype = x.type()
    if not dim.edges:
        return ibis.cases(*[(x == typed_category(c, dtype), i)
                            for i, c in enumerate(dim.categories)], else_=-1)
    assert dim.bounds is not None
    lo, hi = dim.bounds
    edges, last = dim.edges, len(dim.edges) - 2
    form = floor_form(edges, dim.bounds, seen) if seen is not None else None
    if form is not None and seen is not None:
        xf = x if dtype.is_floating() else x.cast("float64")  # exact: |x| < 2**52
        v = xf - form.offset if form.offset else xf
        index = (v / form.factor if form.divide else v * form.factor).floor()
        # a CASE keeps the index's range known to DuckDB, which then aggregates into a
        # perfect hash table; "index - (low <= x AND x < high)" cost 0.4x of a raw scan more
        if form.floor(seen[0]) < 0:
            index = ibis.greatest(index, 0)
        if form.floor(seen[1]) > last:
            index = ibis.least(index, last)
        # a window of one double, where the chain is one off the floor, is an equality test;
        # those one below (or above) share one IN list (performance_estimate's SQL at 1M:
        # 19.2 ms against 20.7 with a range test per window)
        fixes: list[tuple[ir.BooleanValue, ir.IntegerValue | int]] = []
        alone: dict[int, list[float]] = {-1: [], 1: []}
        for value, low, high in form.fixes:
            off = value - form.floor(low)
            if math.nextafter(low, math.inf) == high and off in alone:
                alone[off].append(low)
            else:
                fixes.append(((xf >= low) & (xf < high), value))
        fixes += [(xf.isin(doubles), index + off) for off, doubles in alone.items() if doubles]
        return ibis.cases(*fixes, else_=index) if fixes else index
    cases: list[tuple[ir.BooleanValue, int]] = []
    if dtype.is_floating() and seen is None:
        cases.append((x.isnan(), -1))
    if edges[0] > lo:  # clipped values in [lo, edges[0]) have no bin
        cases.append((x < edges[0], -1))
    cases += [(x < e, i) for i, e in enumerate(edges[1:-1])]
    if edges[-1] < hi:  # clipped values in (edges[-1], hi] have no bin
        cases.append((x <= edges[-1], last))
        return ibis.cases(*cases, else_=-1)
    cases.append((x.notnull(), last))
    return ibis.cases(*cases, else_=-1)


#: Backends whose ``CAST(DOUBLE AS BIGINT)`` rounds to the nearest integer with ties to even
#: (2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -0.5 -> 0): the rule of Python's ``round``, which
#: ``Measure.row_sensitivity`` applies to the bounds. For these the cast is the rounding; a
#: ``ROUND`` before it would only cost time (0.35-0.55x of a raw DuckDB scan). Any other
#: backend (Spark's cast truncates towards zero) gets an explicit ``ROUND``, half away from
#: zero, before its cast.
CAST_ROUNDS_HALF_EVEN = frozenset({"duckdb"})
#: Backends with ``BROUND(x, 0)``, rounding half to even: Spark's. It rounds the double's
#: shortest decimal form, which is a tie exactly when the double is one, so its integers are
#: DuckDB's cast's to the last row and the two backends' cubes are equal.
BROUND_HALF_EVEN = frozenset({"spark"})


@ibis.udf.scalar.builtin  # type: ignore[untyped-decorator]
def bround(x: float, d: int) -> float:  # type: ignore[empty-body]
    """Spark's half-to-even rounding, called by name in the SQL."""


def _round_half_even(v: float) -> int:
    return round(v)


def _round_half_away(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def _grid_value(b: float, m: Measure) -> float:
    """A bound on the grid, computed with the float operations the SQL applies to a row."""
    v = b
    for _ in range(m.power - 1):
        v = v * b
    return abs(v) * m.scale if m.absolute else v * m.scale


def fixed_point(t: ir.Table, m: Measure, backend: str = "duckdb",
                ranges: Ranges | None = None) -> ir.IntegerValue:
    """Clip to the bounds, scale onto the integer grid and round: each row adds an integer.

    The privacy layer assumes every row adds an integer of magnitude at most
    ``m.row_sensitivity``, the larger magnitude of the two bounds scaled and rounded. Each
    step here (clip, repeated product, abs, scale, round) is monotone in the value (its
    magnitude, for even powers and ``absolute``), so no row goes further than a bound itself;
    the bounds are put through the same float steps and the backend's rounding at compile
    time, and in the rare case one lands outside (a tie at a bound that ``ROUND`` takes away
    from zero where Python's ``round`` goes to even), the integers are clamped as well. The
    clip is left out when the version's values all lie within the bounds (``ranges``): it
    would return every value unchanged.
    """
    assert m.column is not None
    x = t[m.column]
    if not x.type().is_floating():
        x = x.cast("float64")  # a DECIMAL cast would round ties away from zero
    lo, hi = m.bounds
    seen = (ranges or {}).get(m.column)
    # NaN sorts above every number in DuckDB: it is clipped to ``hi``
    clipped = (x if seen is not None and lo <= seen[0] and seen[1] <= hi
               else ibis.cases((x < lo, lo), (x > hi, hi), else_=x))
    powered = clipped
    for _ in range(m.power - 1):  # a product: POWER(x, 2) cost about 0.4x of a raw scan
        powered = powered * clipped
    if m.absolute:
        powered = powered.abs()
    scaled = powered * m.scale
    if backend in CAST_ROUNDS_HALF_EVEN:
        value, rounding = scaled.cast("int64"), _round_half_even
    elif backend in BROUND_HALF_EVEN:
        value, rounding = bround(scaled, 0).cast("int64"), _round_half_even
    else:
        value, rounding = scaled.round().cast("int64"), _round_half_away
    r = m.row_sensitivity
    if max(abs(rounding(_grid_value(b, m))) for b in m.bounds) > r:
        value = ibis.cases((value > r, r), (value < -r, -r), else_=value)
    return value


def matches(t: ir.Table, where: Where) -> ir.BooleanValue:
    """Rows whose columns take one of the listed categories, for every listed column."""
    conds = [t[c].isin([typed_category(v, t[c].type()) for v in values]) for c, values in where]
    out = conds[0]
    for cond in conds[1:]:
        out = out & cond
    return out


def measure(t: ir.Table, m: Measure, backend: str = "duckdb",
            ranges: Ranges | None = None) -> ir.IntegerValue:
    conds: list[ir.BooleanValue] = []
    if m.misclassified is not None:
        w = m.misclassified
        actual = t[w.label] == typed_category(w.positive, t[w.label].type())
        if w.prediction is not None:
            predicted = t[w.prediction] == typed_category(w.predicted_positive,
                                                          t[w.prediction].type())
        else:
            assert w.score is not None
            predicted = t[w.score] >= w.threshold
        conds.append(predicted != actual)
    if m.when is not None:
        col, category = m.when
        conds.append(t[col] == typed_category(category, t[col].type()))
    # NULL predictions, labels or categories never count: a NULL condition is not true
    hit = conds[0] if conds else None
    for cond in conds[1:]:
        hit = hit & cond
    if m.column is None:
        # an indicator's sum, SUM(CAST(cond AS INT)), runs ~8% faster than SUM(CASE ...)
        return t.count() if hit is None else hit.sum().cast("int64")
    value = fixed_point(t, m, backend, ranges)
    if hit is not None:
        value = ibis.cases((hit, value), else_=0)
    return value.sum().cast("int64")


#: A scan groups by every dimension of the cubes it answers, which together may have at most
#: this many cells: drift's four columns (2,310 cells) took one scan at 0.84x the time of
#: four grouped counts, where UNION ALL of one scan per cube took 1.25x.
SCAN_CELLS = 1 << 16


@dataclass(frozen=True)
class Scan:
    """One grouped aggregate over the rows, answering the query's cubes ``cubes``: each is
    the scan's sum over the dimensions it lacks (counts and fixed-point sums add up)."""

    dims: tuple[Dimension, ...]
    measures: tuple[Measure, ...]
    cubes: tuple[int, ...]


def plan_scans(query: Query) -> tuple[Scan, ...]:
    """Cubes share a scan when they count the same rows (the same sample dimensions, which
    filter rows out), their measures of one name are one measure, and their dimensions have
    at most :data:`SCAN_CELLS` cells together; the others get scans of their own."""
    scans: list[Scan] = []
    for i, cube in enumerate(query.cubes):
        samples = [d for d in cube.dims if d.samples]
        for k, scan in enumerate(scans):
            dims = scan.dims + tuple(d for d in cube.dims if d not in scan.dims)
            named = {m.name: m for m in scan.measures}
            if ([d for d in scan.dims if d.samples] == samples
                    and all(named.get(m.name, m) == m for m in cube.measures)
                    and math.prod(len(d.labels) for d in dims) <= SCAN_CELLS):
                more = tuple(m for m in cube.measures if m.name not in named)
                scans[k] = Scan(dims, scan.measures + more, (*scan.cubes, i))
                break
        else:
            scans.append(Scan(cube.dims, cube.measures, (i,)))
    return tuple(scans)


def scan_expression(t: ir.Table, scan: Scan, index: int, width: int, names: list[str],
                    backend: str = "duckdb", ranges: Ranges | None = None) -> ir.Table:
    """One scan as columns ``part, d0..d{width-1}``, then ``names`` (0 where not measured);
    a NULL cell index (a floor form's, for a NULL value) is -1."""
    ranges = ranges or {}
    for d in scan.dims:
        if d.samples:  # rows in none of the samples are not counted
            anywhere = matches(t, d.samples[0][1])
            for _, where in d.samples[1:]:
                anywhere = anywhere | matches(t, where)
            t = t.filter(anywhere)
    keys = {f"d{i}": (cell_index(t, d, ranges.get(d.column)) if d.edges or d.categories else
                      ibis.cases(*[(matches(t, w), j) for j, (_, w) in enumerate(d.samples)],
                                 else_=-1))
            for i, d in enumerate(scan.dims)}
    mine = {m.name: measure(t, m, backend, ranges) for m in scan.measures}
    grouped = t.group_by(**keys).aggregate(**mine) if keys else t.aggregate(**mine)
    zero = ibis.literal(0, "int64")
    return grouped.select(
        part=ibis.literal(index, "int64"),
        **{f"d{i}": grouped[f"d{i}"].fill_null(-1).cast("int64") if i < len(scan.dims) else zero
           for i in range(width)},
        **{n: grouped[n] if n in mine else zero for n in names})


def query_expression(t: ir.Table, query: Query, backend: str = "duckdb",
                     ranges: Ranges | None = None) -> ir.Table:
    """The one Ibis expression answering ``query``: every scan of :func:`plan_scans`, in
    order (column ``part``), stacked with UNION ALL.

    ``backend`` names the engine that will run it (see :data:`CAST_ROUNDS_HALF_EVEN` and
    :data:`BROUND_HALF_EVEN`): a dataset's policy ``backend``, ``duckdb`` or ``spark``;
    ``ranges``, the version's value ranges (see :data:`Ranges`), only make it faster.
    """
    if query.where:
        t = t.filter(matches(t, query.where))
    scans = plan_scans(query)
    width = max(len(s.dims) for s in scans)
    names = list(dict.fromkeys(m.name for s in scans for m in s.measures))
    parts = [scan_expression(t, s, i, width, names, backend, ranges)
             for i, s in enumerate(scans)]
    return parts[0] if len(parts) == 1 else ibis.union(*parts, distinct=False)
