"""The masked schema summary shown in place of a table that holds sensitive columns.

A table with any sensitive column shows no cell values at all, not even of its other
columns: the safe reading of "this frame holds personal data" is that its rows are a
person's record, and the quasi-identifiers beside a name (age, zip, dates) identify on their
own. The summary names each column, its type and why it is masked, and says how to see the
rest (drop the masked columns), so the guard explains itself instead of just refusing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from ._columns import SensitiveColumns
from ._frames import Column, Table, describe

__all__ = ["Masked", "masking"]

MAX_ROWS_SHOWN = 60  # columns listed in the summary; the rest are counted
LABELS = "(row labels)"


@dataclass(frozen=True)
class Masked:
    """A table to show as a summary: its schema and why each masked column is masked."""

    table: Table
    reasons: dict[str, str]

    def text(self) -> str:
        t = self.table
        lines = [f"{t.kind}: {_shape(t)}; values hidden by the pdebug guard "
                 f"({len(self.reasons)} sensitive)"]
        rows = [(_name(c), c.dtype, self.reasons.get(c.name, "")) for c in t.columns]
        shown = rows[:MAX_ROWS_SHOWN]
        widths = [max([len(h)] + [len(r[i]) for r in shown]) for i, h in enumerate(_HEAD)]
        for row in [_HEAD, *shown]:
            lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
                         .rstrip())
        if len(rows) > len(shown):
            lines.append(f"  ... and {len(rows) - len(shown)} more columns")
        if LABELS in self.reasons:
            lines.append(f"  row labels: {self.reasons[LABELS]}")
        lines.append(self.hint())
        return "\n".join(lines)

    def html(self) -> str:
        t = self.table
        esc = html.escape
        body = "".join(
            f"<tr><td><code>{esc(_name(c))}</code></td><td>{esc(c.dtype)}</td>"
            f"<td>{esc(self.reasons.get(c.name, ''))}</td></tr>"
            for c in t.columns[:MAX_ROWS_SHOWN])
        more = len(t.columns) - MAX_ROWS_SHOWN
        if more > 0:
            body += f'<tr><td colspan="3">... and {more} more columns</td></tr>'
        labels = ""
        if LABELS in self.reasons:
            labels = f"<p>row labels: {esc(self.reasons[LABELS])}</p>"
        return (
            '<div class="pdebug-guard-masked">'
            f"<p><b>{esc(t.kind)}</b>: {esc(_shape(t))}; values hidden by the pdebug guard "
            f"({len(self.reasons)} sensitive)</p>"
            "<table><thead><tr><th>column</th><th>dtype</th><th>masked because</th></tr>"
            f"</thead><tbody>{body}</tbody></table>{labels}<p>{esc(self.hint())}</p></div>")

    def hint(self) -> str:
        cols = [n for n, _ in self.reasons.items() if n != LABELS and not _is_index(self, n)]
        if cols:
            names = ", ".join(repr(_name_of(n)) for n in cols[:8])
            return f"To see the other columns, display it without them: .drop(columns=[{names}])"
        return "Rows of personal data stay in the privacy service; query aggregates instead."

    def bundle(self) -> dict[str, Any]:
        return {"text/plain": self.text(), "text/html": self.html()}


_HEAD = ("column", "dtype", "masked because")


def _name_of(label: str) -> str:
    return label.replace("\x1f", " / ")


def _name(c: Column) -> str:
    return f"{_name_of(c.name)} (index)" if c.role == "index" else _name_of(c.name)


def _is_index(masked: Masked, name: str) -> bool:
    return any(c.name == name and c.role == "index" for c in masked.table.columns)


def _shape(t: Table) -> str:
    rows = "? rows" if t.rows is None else f"{t.rows:,} rows"
    return f"{rows} x {t.shown_columns} columns"


def masking(obj: Any, columns: SensitiveColumns) -> Masked | None:
    """The summary to show instead of ``obj``, or ``None`` to show ``obj`` as it is."""
    table = describe(obj)
    if table is None:
        return None
    reasons: dict[str, str] = {}
    for col in table.columns:
        for part in col.parts:
            why = columns.reason(part, col.categories)
            if why is not None:
                reasons.setdefault(col.name, why)
    # A row of a record (df.loc[i]) or a transposed frame has the column names as labels.
    for label in table.labels:
        why = next((w for p in label.split("\x1f") if (w := columns.reason(p)) is not None), None)
        if why is not None:
            reasons[LABELS] = f"{_name_of(label)!r}: {why}"
            break
    return Masked(table, reasons) if reasons else None
