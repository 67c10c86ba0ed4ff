"""``pdebug-jupyter scan``: find personal data and raw rows saved in notebooks.

The guard keeps personal data off the screen while a kernel runs; a notebook saved before
the guard was loaded, or with it switched off, can still carry rows in its outputs. The
scanner is the check at the door (a pre-commit hook, a CI step): it reads ``.ipynb`` files
and reports

* raw-row tables in outputs: HTML and pandas text tables with identifier-like columns, or
  with more than ``max_rows`` rows, that are not a release's frame (see ``_tables``);
* personal-data patterns (emails, phones, SSNs, card numbers, IBANs: the guard's detectors)
  in outputs, tracebacks, output metadata and saved widget state;
* canary values (``canaries.txt`` from ``pdebug-jupyter synth``, or your own list).

``fix=True`` strips each offending output (and each offending widget model from the saved
widget state) and rewrites the notebook, keeping everything else; the result is validated
against the notebook schema before it is written.

``nbformat`` (installed with JupyterLab, nbclient or nbconvert) reads and writes the files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._notebook import WIDGET_STATE, Finding, NotebookScan, scan_notebook, strip
from ._tables import DEFAULT_MAX_ROWS, Table, html_tables, raw_row_problem, text_tables
from ._text import Canaries, pattern_counts

__all__ = [
    "DEFAULT_MAX_ROWS", "WIDGET_STATE", "Canaries", "Finding", "NotebookScan", "ScanReport",
    "Table", "html_tables", "notebook_paths", "pattern_counts", "raw_row_problem",
    "scan_notebook", "scan_paths", "text_tables",
]


@dataclass
class ScanReport:
    """The findings over many notebooks, the notebooks rewritten and those unreadable."""

    files: int = 0
    findings: list[Finding] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def notebook_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """The given files, and every ``.ipynb`` under the given directories (hidden directories
    such as ``.ipynb_checkpoints`` and ``.git`` skipped), each once, in order."""
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        found = [path] if not path.is_dir() else sorted(
            p for p in path.rglob("*.ipynb")
            if not any(part.startswith(".") for part in p.relative_to(path).parts[:-1]))
        for p in found:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                yield p


def scan_paths(paths: Iterable[str | os.PathLike[str]], *, canaries: Canaries | None = None,
               max_rows: int = DEFAULT_MAX_ROWS, fix: bool = False) -> ScanReport:
    """Scan notebook files and directories; with ``fix``, strip what leaks in place."""
    try:
        import nbformat
    except ImportError:  # an install without Jupyter
        raise ImportError("pdebug-jupyter scan needs nbformat: pip install nbformat") from None
    report = ScanReport()
    for path in notebook_paths(paths):
        try:
            nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
        except (OSError, ValueError) as exc:  # unreadable, not JSON, not a notebook
            report.errors.append(f"{path}: cannot read notebook: {exc}".splitlines()[0])
            continue
        report.files += 1
        scan = scan_notebook(nb, str(path), canaries=canaries, max_rows=max_rows)
        report.findings += scan.findings
        if fix and scan.findings:
            strip(nb, scan)
            nbformat.validate(nb)  # raises before writing: never leave a broken notebook
            nbformat.write(nb, path)  # type: ignore[no-untyped-call]
            report.fixed.append(str(path))
    return report
