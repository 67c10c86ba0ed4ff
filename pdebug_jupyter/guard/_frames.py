"""Table-like objects, described by their schema only: kind, row count, column names and types.

pandas (frames, series, indexes, stylers), polars (frames, series), pyarrow (tables, record
batches) and numpy structured arrays and records. polars and pyarrow are looked up in
``sys.modules`` and never imported: an object of theirs can only exist once they are.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DEFERRED_TYPES", "Column", "Table", "describe"]

MAX_LABELS = 1_000  # row labels looked at, and categories kept, per object

DEFERRED_TYPES: tuple[tuple[str, str], ...] = (
    ("pandas", "DataFrame"),
    ("pandas", "Series"),
    ("pandas", "Index"),
    ("pandas.io.formats.style", "Styler"),
    # polars' classes may name their defining module or the package: both are registered
    ("polars", "DataFrame"),
    ("polars", "Series"),
    ("polars.dataframe.frame", "DataFrame"),
    ("polars.series.series", "Series"),
    ("pyarrow.lib", "Table"),
    ("pyarrow.lib", "RecordBatch"),
    ("numpy", "ndarray"),
    ("numpy", "void"),
)
"""(module, class) of every type the display guard registers a formatter for, by name, so
registering imports nothing."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    role: str = "column"  # or "index"
    categories: tuple[str, ...] | None = None  # a categorical's declared categories

    @property
    def parts(self) -> tuple[str, ...]:
        """A multi-level label's levels, each checked on its own."""
        return tuple(self.name.split("\x1f"))


@dataclass(frozen=True)
class Table:
    kind: str
    rows: int | None
    columns: tuple[Column, ...]
    labels: tuple[str, ...] = ()  # row labels that may be column names (a row, a transpose)

    @property
    def shown_columns(self) -> int:
        return sum(c.role == "column" for c in self.columns)


def _label(value: Any) -> str:
    if isinstance(value, tuple):
        return "\x1f".join(str(v) for v in value)
    return str(value)


def _pandas_column(name: Any, dtype: Any, role: str = "column") -> Column:
    cats = None
    if isinstance(dtype, pd.CategoricalDtype) and len(dtype.categories) <= MAX_LABELS:
        cats = tuple(str(c) for c in dtype.categories)
    return Column(_label(name), str(dtype), role, cats)


def _texty(dtype: Any) -> bool:
    return dtype == np.dtype(object) or isinstance(dtype, pd.StringDtype | pd.CategoricalDtype)


def _pandas_index(index: pd.Index, records: bool = False
                  ) -> tuple[tuple[Column, ...], tuple[str, ...]]:
    """Named index levels as columns, and the labels of a text index when the values may be
    records (``records``): a row ``df.loc[i]`` or ``df.T`` is labelled by column names.

    Only text-bearing values count as records: names, emails and ids are text, while
    per-column numbers (``df.isna().sum()``, ``df.describe().T``) hold no one's data.
    """
    cols: list[Column] = []
    if isinstance(index, pd.MultiIndex):
        cols = [_pandas_column(n, lvl.dtype, "index")
                for n, lvl in zip(index.names, index.levels, strict=True) if n is not None]
    elif index.name is not None:
        cols = [_pandas_column(index.name, index.dtype, "index")]
    labels: tuple[str, ...] = ()
    if records and _texty(index.dtype):
        labels = tuple(_label(v) for v in index[:MAX_LABELS])
    return tuple(cols), labels


def _pandas(obj: Any) -> Table | None:
    style = sys.modules.get("pandas.io.formats.style")  # imports jinja2: only if already used
    if style is not None and isinstance(obj, style.Styler):
        obj = obj.data
    if isinstance(obj, pd.DataFrame):
        index_cols, labels = _pandas_index(obj.index, any(_texty(t) for t in obj.dtypes))
        cols = tuple(_pandas_column(n, t) for n, t in obj.dtypes.items())
        return Table("pandas.DataFrame", len(obj), cols + index_cols, labels)
    if isinstance(obj, pd.Series):
        index_cols, labels = _pandas_index(obj.index, _texty(obj.dtype))
        own = () if obj.name is None else (_pandas_column(obj.name, obj.dtype),)
        return Table("pandas.Series", len(obj), own + index_cols, labels)
    if isinstance(obj, pd.Index):
        index_cols, labels = _pandas_index(obj)
        return Table(f"pandas.{type(obj).__name__}", len(obj), index_cols, labels)
    return None


def _polars(obj: Any) -> Table | None:
    pl = sys.modules.get("polars")
    if pl is None:
        return None
    if isinstance(obj, pl.DataFrame):
        return Table("polars.DataFrame", obj.height,
                     tuple(Column(str(n), str(t)) for n, t in obj.schema.items()))
    if isinstance(obj, pl.Series):
        return Table("polars.Series", len(obj), (Column(str(obj.name), str(obj.dtype)),))
    return None


def _arrow(obj: Any) -> Table | None:
    pa = sys.modules.get("pyarrow")
    if pa is None or not isinstance(obj, pa.Table | pa.RecordBatch):
        return None
    return Table(f"pyarrow.{type(obj).__name__}", obj.num_rows,
                 tuple(Column(f.name, str(f.type)) for f in obj.schema))


def _numpy(obj: Any) -> Table | None:
    if not isinstance(obj, np.ndarray | np.void) or obj.dtype.names is None:
        return None
    fields = obj.dtype.fields or {}
    cols = tuple(Column(n, str(fields[n][0])) for n in obj.dtype.names)
    rows = 1 if isinstance(obj, np.void) else int(obj.size)
    return Table(f"numpy.{type(obj).__name__} (structured)", rows, cols)


def describe(obj: Any) -> Table | None:
    """The schema of a table-like object, or ``None`` for anything else."""
    for probe in (_pandas, _numpy, _polars, _arrow):
        table = probe(obj)
        if table is not None:
            return table
    return None
