"""Tables in notebook output that look like raw rows rather than released aggregates.

Two shapes are recognised, the two pandas produces in a notebook (and most table libraries
copy):

* HTML tables (``<table class="dataframe">`` from ``to_html`` / ``_repr_html_``, but any
  ``<table>``): the header cells of ``<thead>`` (or of leading all-``<th>`` rows) are the
  column names, every other row is a data row, and pandas' ``<p>5000 rows × 12 columns</p>``
  footer after a truncated table gives the true row count;
* text tables (pandas' ``repr`` / ``to_string``): a block of consecutive lines of one length
  (pandas pads every line of a frame to the same width), whose header line starts with
  blanks (the index column has no header) and whose data lines start with an index label,
  and whose header names end where the data columns end (pandas right-aligns them). The
  ``[5000 rows x 12 columns]`` footer gives the true row count.

A table is flagged when a column name looks like personal data (the guard's name patterns:
``name``, ``email``, ``customer_id``, ...; any row count) or when it has more than
``max_rows`` rows. Two shapes are never flagged: a release of this project (its frame has a
``suppressed`` column and ``<measure>_ci95`` columns: one row per cell of a declared public
domain) and the guard's masked schema summary (columns ``column, dtype, masked because``).

Limits, said plainly: a raw table of at most ``max_rows`` rows with innocuous column names
(``age, income``) is not flagged, though its values may still hit the personal-data patterns
or canaries; a large aggregate that is not a release (a ``groupby`` over many keys) is
flagged, raise ``max_rows`` for such notebooks; text tables that are not aligned the pandas
way (polars' box drawing, ``tabulate``, left-aligned columns) and tables nested in tables are
not recognised as tables; a frame wrapped into several column blocks is reported per block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from ..guard._columns import SensitiveColumns

__all__ = ["DEFAULT_MAX_ROWS", "Table", "html_tables", "raw_row_problem", "text_tables"]

DEFAULT_MAX_ROWS = 20
_COLUMNS = SensitiveColumns()  # the guard's personal-data name patterns, no policy
_MASKED_SUMMARY = ("column", "dtype", "masked because")


@dataclass(frozen=True)
class Table:
    """A table found in output: its form, column names and (true, if a footer says) rows."""

    form: str  # "html" | "text" | "json"
    columns: tuple[str, ...]
    rows: int

    @property
    def is_release(self) -> bool:
        """A frame of a pdebug release: one row per cell of a declared domain."""
        return "suppressed" in self.columns and any(c.endswith("_ci95") for c in self.columns)

    def sensitive_columns(self) -> list[str]:
        return [c for c in dict.fromkeys(self.columns) if _COLUMNS.reason(c) is not None]


def raw_row_problem(table: Table, max_rows: int = DEFAULT_MAX_ROWS) -> str | None:
    """What makes ``table`` look like raw rows, as a finding's text, or ``None``."""
    if table.is_release or table.columns == _MASKED_SUMMARY or table.rows == 0:
        return None
    rows = f"{table.rows} row{'s' if table.rows != 1 else ''}"
    sensitive = table.sensitive_columns()
    if sensitive:
        return (f"{table.form} table with {rows} and identifier-like columns "
                f"{', '.join(sensitive)}")
    if table.rows > max_rows:
        return (f"{table.form} table with {rows} (more than {max_rows}) that is not a "
                "release: raw rows?")
    return None


# --- HTML -----------------------------------------------------------------------------------

_TABLE = re.compile(r"<table\b.*?</table\s*>", re.IGNORECASE | re.DOTALL)
_HTML_FOOTER = re.compile(r"\s*(?:</div>\s*)?<p>\s*([\d,]+)\s+rows\s+(?:×|x|&times;)\s+\d+",
                          re.IGNORECASE)


class _TableParser(HTMLParser):
    """Rows of one ``<table>`` fragment as (cell texts, all cells are ``<th>``, in thead)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[list[str], bool, bool]] = []
        self._in_head = False
        self._cell: list[str] | None = None
        self._all_th = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self.rows.append(([], False, self._in_head))
            self._all_th = True
        elif tag in ("th", "td"):
            self._close_cell()
            self._cell = []
            self._all_th &= tag == "th"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td", "tr"):
            self._close_cell()
        if tag == "thead":
            self._in_head = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def _close_cell(self) -> None:
        if self._cell is None or not self.rows:
            self._cell = None
            return
        cells, _, head = self.rows[-1]
        cells.append(" ".join("".join(self._cell).split()))
        self.rows[-1] = (cells, self._all_th, head)
        self._cell = None


def html_tables(text: str) -> list[Table]:
    """Every ``<table>`` in an HTML string."""
    if "<table" not in text.lower():
        return []
    found = []
    for match in _TABLE.finditer(text):
        parser = _TableParser()
        parser.feed(match.group())
        parser.close()
        rows = [r for r in parser.rows if r[0]]
        has_head = any(head for _, _, head in rows)
        head_rows = [r for r in rows if r[2]] if has_head else _leading(rows)
        body = len(rows) - len(head_rows)
        columns = tuple(c for cells, _, _ in head_rows for c in cells if c)
        footer = _HTML_FOOTER.match(text, match.end())
        if footer:
            body = max(body, int(footer.group(1).replace(",", "")))
        found.append(Table("html", columns, body))
    return found


def _leading(rows: list[tuple[list[str], bool, bool]]) -> list[tuple[list[str], bool, bool]]:
    head = []
    for row in rows:
        if not row[1]:
            break
        head.append(row)
    return head


# --- text -----------------------------------------------------------------------------------

_TEXT_FOOTER = re.compile(r"\[([\d,]+) rows x \d+ columns\]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def text_tables(text: str) -> list[Table]:
    """Pandas-style aligned text tables in plain text (``repr``, ``print(frame)``)."""
    lines = _ANSI.sub("", text).split("\n")
    found = []
    i = 0
    while i < len(lines):
        j = i + 1
        while j < len(lines) and len(lines[j]) == len(lines[i]) and lines[j].strip():
            j += 1
        table = _text_table(lines[i:j]) if j - i >= 2 else None
        if table is not None:
            footer = _TEXT_FOOTER.search("\n".join(lines[j:j + 3]))
            rows = int(footer.group(1).replace(",", "")) if footer else table.rows
            found.append(Table("text", table.columns, max(rows, table.rows)))
        i = j
    return found


def _text_table(block: list[str]) -> Table | None:
    header, *data = block
    # the index column has no header: the header starts with blanks, data lines with a label
    if not header.startswith(" ") or not header.strip() or \
            any(line.startswith(" ") for line in data[:1]):
        return None
    names = [(m.group(), m.end()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [(n, end) for n, end in names if n != "\\"]  # a wrapped frame's continuation mark
    if not names:
        return None
    # a named index puts its name on a line of its own under the header
    index_name = data[0].strip() if len(data[0].split()) == 1 else None
    if index_name is not None:
        data = data[1:]
    if not data:
        return None
    # pandas right-aligns: most header names end exactly where their column's values end
    aligned = sum(
        sum(_ends_at(line, end) for line in data) >= 0.8 * len(data) for _, end in names)
    if aligned < max(1, 0.6 * len(names)):
        return None
    rows = [line for line in data if not re.fullmatch(r"[.\s\\]*", line)]
    columns = tuple(n for n, _ in names if n != "...") + ((index_name,) if index_name else ())
    return Table("text", columns, len(rows))


def _ends_at(line: str, end: int) -> bool:
    return line[end - 1:end].strip() != "" and line[end:end + 1].strip() == ""
