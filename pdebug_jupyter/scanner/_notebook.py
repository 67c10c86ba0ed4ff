"""Walk a notebook's outputs, output metadata and widget state; strip what leaks.

Where a leak can sit in a saved ``.ipynb``:

* a code cell's outputs: display data and execute results (every mime type but base64
  images), streams (``print``), errors (the exception's value and traceback);
* each output's metadata (a release's provenance, a library's extras);
* the notebook's saved widget state (``metadata.widgets``): every widget model's state,
  strings nested at any depth (an ``HTML`` widget holding ``frame.to_html()``, a text box).

Cell sources are not scanned: they are code the user wrote, and ``--fix`` would have nothing
to strip from them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ._tables import DEFAULT_MAX_ROWS, Table, html_tables, raw_row_problem, text_tables
from ._text import KIND_LABELS, Canaries, pattern_counts

__all__ = ["WIDGET_STATE", "Finding", "NotebookScan", "scan_notebook", "strip"]

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# base64 payloads: a pattern could only hit them by chance
_BINARY_PREFIXES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")
_TABLE_SCHEMA = "application/vnd.dataresource+json"  # pandas' table schema: rows as JSON


@dataclass(frozen=True)
class Finding:
    """One leak: where it is and what it is (never the value itself)."""

    path: str
    what: str  # "table" | "email" | "phone" | "ssn" | "card" | "iban" | "canary"
    detail: str
    cell: int | None = None
    cell_id: str | None = None
    output: int | None = None
    model: str | None = None  # widget model id, for widget state
    fields: tuple[str, ...] = ()  # mime types or keys the finding was seen in

    @property
    def where(self) -> str:
        if self.model is not None:
            return f"widget state, model {self.model}"
        cell = f"cell {self.cell}" + (f" (id {self.cell_id})" if self.cell_id else "")
        return f"{cell}, output {self.output}"

    def line(self) -> str:
        seen = f" [{', '.join(self.fields)}]" if self.fields else ""
        return f"{self.path}: {self.where}: {self.detail}{seen}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["fields"] = list(self.fields)
        return out


@dataclass
class NotebookScan:
    """The findings of one notebook, and which outputs and widget models hold them."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    outputs: set[tuple[int, int]] = field(default_factory=set)  # (cell, output) to strip
    models: set[str] = field(default_factory=set)  # widget model ids to strip


class _Texts:
    """The texts of one place (an output, a widget model), checked together so that one
    email shown as both HTML and plain text is one finding, not two."""

    def __init__(self, canaries: Canaries | None, max_rows: int) -> None:
        self.canaries, self.max_rows = canaries, max_rows
        self.kinds: Counter[str] = Counter()
        self.kind_fields: dict[str, list[str]] = {}
        self.canary_values: set[str] = set()
        self.canary_fields: list[str] = []
        self.tables: list[tuple[str, str]] = []  # (problem, field)

    def add(self, where: str, text: str, *, html: bool = False, tables: bool = True) -> None:
        for kind, n in pattern_counts(text, is_html=html).items():
            self.kinds[kind] += n
            self.kind_fields.setdefault(kind, []).append(where)
        if self.canaries is not None:
            found = self.canaries.found(text, is_html=html)
            if found:
                self.canary_values |= found
                self.canary_fields.append(where)
        if tables:
            for table in html_tables(text) + text_tables(text):
                problem = raw_row_problem(table, self.max_rows)
                if problem is not None:
                    self.tables.append((problem, where))

    def add_table(self, where: str, columns: tuple[str, ...], rows: int) -> None:
        problem = raw_row_problem(Table("json", columns, rows), self.max_rows)
        if problem is not None:
            self.tables.append((problem, where))

    def findings(self, path: str, **at: Any) -> list[Finding]:
        out = [Finding(path, "table", problem, fields=(where,), **at)
               for problem, where in dict.fromkeys(self.tables)]
        for kind in KIND_LABELS:
            n = self.kinds.get(kind, 0)
            if n:
                label = KIND_LABELS[kind] + ("" if n == 1 else f" ({n} matches)")
                out.append(Finding(path, kind, label,
                                   fields=tuple(dict.fromkeys(self.kind_fields[kind])), **at))
        if self.canary_values:
            n = len(self.canary_values)
            label = "canary value" + ("" if n == 1 else f" ({n} distinct)")
            out.append(Finding(path, "canary", label,
                               fields=tuple(dict.fromkeys(self.canary_fields)), **at))
        return out


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string nested in a JSON value, with the key path it sits at."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}.{k}" if key else str(k))


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _scan_output(texts: _Texts, output: Any) -> None:
    kind = output.get("output_type")
    if kind == "stream":
        texts.add(f"stream {output.get('name', 'stdout')}", _text(output.get("text", "")))
    elif kind == "error":
        body = "\n".join([str(output.get("ename", "")), str(output.get("evalue", "")),
                          *map(str, output.get("traceback", []))])
        texts.add("traceback", body, tables=False)
    for mime, value in (output.get("data") or {}).items():
        if mime.startswith(_BINARY_PREFIXES):
            continue
        if mime == _TABLE_SCHEMA and isinstance(value, dict):
            cols = tuple(str(f.get("name", "")) for f in value.get("schema", {}).get("fields", [])
                         if isinstance(f, dict))
            texts.add_table(mime, cols, len(value.get("data") or []))
        if isinstance(value, str) or (isinstance(value, list) and
                                      all(isinstance(v, str) for v in value)):
            texts.add(mime, _text(value), html="html" in mime or mime.endswith("svg+xml"))
        else:
            for key, s in _strings(value):
                texts.add(f"{mime} {key}".rstrip(), s, tables=False)
    for key, s in _strings(output.get("metadata") or {}):
        texts.add(f"metadata {key}", s, tables=False)


def scan_notebook(nb: Any, path: str, *, canaries: Canaries | None = None,
                  max_rows: int = DEFAULT_MAX_ROWS) -> NotebookScan:
    """Scan a notebook (an ``nbformat`` node or a plain dict of the v4 format)."""
    result = NotebookScan(path)
    for i, cell in enumerate(nb.get("cells", [])):
        for j, output in enumerate(cell.get("outputs", []) or []):
            texts = _Texts(canaries, max_rows)
            _scan_output(texts, output)
            found = texts.findings(path, cell=i, cell_id=cell.get("id"), output=j)
            if found:
                result.findings += found
                result.outputs.add((i, j))
    state = ((nb.get("metadata") or {}).get("widgets") or {}).get(WIDGET_STATE) or {}
    for model_id, model in (state.get("state") or {}).items():
        texts = _Texts(canaries, max_rows)
        for key, s in _strings(model.get("state", {}) if isinstance(model, dict) else {}):
            texts.add(key, s)
        found = texts.findings(path, model=str(model_id))
        if found:
            result.findings += found
            result.models.add(str(model_id))
    return result


def strip(nb: Any, scan: NotebookScan) -> None:
    """Remove the outputs and widget models ``scan`` found leaks in, in place."""
    for i, cell in enumerate(nb.get("cells", [])):
        if "outputs" in cell:
            cell["outputs"] = [o for j, o in enumerate(cell["outputs"])
                               if (i, j) not in scan.outputs]
    state = ((nb.get("metadata") or {}).get("widgets") or {}).get(WIDGET_STATE) or {}
    models = state.get("state") or {}
    for model_id in scan.models:
        models.pop(model_id, None)
