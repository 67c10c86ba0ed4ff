"""The notebook scanner finds every planted leak in executed notebooks, strips them with
``--fix`` and passes clean notebooks, the executed demo tour among them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pandas as pd
import pytest

from pdebug_jupyter.cli import main
from pdebug_jupyter.demo import prepare
from pdebug_jupyter.scanner import (
    WIDGET_STATE,
    Canaries,
    Table,
    html_tables,
    raw_row_problem,
    scan_paths,
    text_tables,
)
from pdebug_jupyter.synth import loans_frame, make_loans

ROWS, SEED = 200, 7  # make_loans samples 200 rows for canaries: here, every row is one

LEAKY_CELLS = [
    # 0: a raw frame as HTML and text: identifier-like columns, emails, SSNs, phones, canaries
    "from pdebug_jupyter.synth import loans_frame\n"
    f"df = loans_frame({ROWS}, {SEED})\ndisplay(df.head(60))",
    # 1: innocuous columns, but 60 rows of them
    'df[["age", "income"]].head(60)',
    # 2: printed as text
    'print(df[["age", "score"]].head(30).to_string())',
    # 3: clean: a handful of rows of innocuous columns
    'df[["age", "income"]].head(5)',
    # 4: an exception whose message holds an email
    'raise ValueError(f"no loan for {df.email[0]}")',
    # 5: a canary in an output's metadata only
    'display({"text/plain": "looked up"}, metadata={"note": str(df.customer_id[3])}, raw=True)',
    # 6: a canary in a widget's state (a name matches no pattern: only the canary finds it)
    "import ipywidgets\nipywidgets.Text(value=str(df.name[1]))",
    # 7: clean: an aggregate
    'df.groupby("region")["income"].mean().round(-3)',
]


def _execute(nb: Any, directory: Path) -> Any:
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(directory)}}).execute()
    return nb


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An executed notebook with planted leaks, and the canaries of its data."""
    directory = tmp_path_factory.mktemp("leaky")
    files = make_loans(ROWS, SEED, directory)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in LEAKY_CELLS])
    path = directory / "leaky.ipynb"
    nbformat.write(_execute(nb, directory), path)
    return path, files.canaries


def _scan_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command in a child process (about 5 s to import: used sparingly)."""
    return subprocess.run([sys.executable, "-m", "pdebug_jupyter", "scan", *args],
                          capture_output=True, text=True, timeout=120)


def _scan_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["scan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _by_cell(findings: list[dict[str, Any]]) -> dict[Any, set[str]]:
    out: dict[Any, set[str]] = {}
    for f in findings:
        out.setdefault(f["cell"] if f["model"] is None else "widget", set()).add(f["what"])
    return out


def test_every_planted_leak_is_found(leaky: tuple[Path, Path]) -> None:
    path, canaries = leaky
    done = _scan_cli(str(path), "--canaries", str(canaries), "--json")
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)["findings"]
    assert _by_cell(findings) == {
        0: {"table", "email", "ssn", "phone", "canary"},
        1: {"table"},
        2: {"table"},
        4: {"email", "canary"},
        5: {"canary"},
        6: {"canary"},  # the widget's text/plain repr shows its value too
        "widget": {"canary"},
    }
    tables = {(f["cell"], f["detail"]) for f in findings if f["what"] == "table"}
    assert (0, "html table with 60 rows and identifier-like columns customer_id, name, email, "
               "ssn, phone") in tables
    assert (1, "html table with 60 rows (more than 20) that is not a release: raw rows?") \
        in tables
    assert (2, "text table with 30 rows (more than 20) that is not a release: raw rows?") \
        in tables
    email = next(f for f in findings if f["cell"] == 0 and f["what"] == "email")
    assert email["detail"] == "email address (120 matches)"  # 60 rows, as HTML and as text
    assert email["fields"] == ["text/html", "text/plain"]
    assert next(f for f in findings if f["cell"] == 4 and f["what"] == "email")["fields"] == \
        ["traceback"]
    # a finding names kinds and places, never the value it found
    frame = loans_frame(ROWS, SEED)
    assert frame.email[0] not in done.stdout and frame.name[1] not in done.stdout


def test_lines_name_file_cell_output_and_what(leaky: tuple[Path, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path, canaries = leaky
    code, out, err = _scan_main(capsys, str(path.parent), "--canaries", str(canaries))
    assert code == 1
    lines = out.splitlines()
    nb = nbformat.read(path, as_version=4)
    assert f"{path}: cell 5 (id {nb.cells[5].id}), output 0: canary value [metadata note]" \
        in lines
    assert any(line.startswith(f"{path}: widget state, model ") and
               line.endswith(": canary value [value]") for line in lines)
    assert err.strip() == f"{len(lines)} finding(s) in 1 notebook(s)"
    # without canaries, only patterns and tables: the name in the widget passes unseen
    code, out, _ = _scan_main(capsys, str(path), "--json")
    assert code == 1 and "widget" not in _by_cell(json.loads(out)["findings"])


def test_fix_strips_the_leaks_and_keeps_the_rest(leaky: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source, canaries = leaky
    path = tmp_path / "copy.ipynb"
    path.write_bytes(source.read_bytes())
    before = nbformat.read(path, as_version=4)
    fixed = _scan_cli(str(path), "--canaries", str(canaries), "--fix")
    assert fixed.returncode == 1 and f"{path}: stripped" in fixed.stdout
    after = nbformat.read(path, as_version=4)
    nbformat.validate(after)
    assert [c.source for c in after.cells] == LEAKY_CELLS
    kept = [len(c.outputs) for c in after.cells]
    assert kept == [0, 0, 0, 1, 0, 0, 0, 1]
    assert after.cells[3].outputs == before.cells[3].outputs
    models = after.metadata.widgets[WIDGET_STATE]["state"]
    assert len(models) == len(before.metadata.widgets[WIDGET_STATE]["state"]) - 1
    assert all(m["state"].get("value") != loans_frame(ROWS, SEED).name[1]
               for m in models.values())
    assert _scan_main(capsys, str(path), "--canaries", str(canaries))[:2] == (0, "")


def test_planted_widget_state_and_clean_widgets(tmp_path: Path) -> None:
    card, iban = "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32"
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": {
        "m1": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
               "model_module_version": "2.0.0",
               "state": {"value": f"<b>card</b> {card}", "description": "pay"}},
        "m2": {"model_name": "AnyModel", "model_module": "anywidget",
               "model_module_version": "*", "state": {"rows": [{"note": {"iban": iban}}]}},
        "m3": {"model_name": "AnyModel", "model_module": "anywidget",
               "model_module_version": "*", "state": {"label": "score bin [0.1, 0.2)"}},
        "m4": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
               "model_module_version": "2.0.0",
               "state": {"value": loans_frame(40, 1)[["age", "income"]].to_html()}},
    }}}
    path = tmp_path / "widgets.ipynb"
    nbformat.write(nb, path)
    report = scan_paths([path])
    assert sorted((f.model, f.what) for f in report.findings) == [
        ("m1", "card"), ("m2", "iban"), ("m4", "table")]
    report = scan_paths([path], fix=True)
    assert report.fixed == [str(path)]
    assert list(nbformat.read(path, as_version=4).metadata.widgets[WIDGET_STATE]["state"]) \
        == ["m3"]
    assert scan_paths([path]).findings == []


def test_executed_demo_tour_scans_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = prepare(tmp_path, rows=5_000, seed=3)
    monkeypatch.setenv("PDEBUG_POLICY", str(policy))
    nb = _execute(nbformat.read(tmp_path / "tour.ipynb", as_version=4), tmp_path)
    nbformat.write(nb, tmp_path / "tour.ipynb")
    # the tour shows a 21-row release frame and saves the explorers' widget state
    assert any("count_ci95" in json.dumps(c.get("outputs", [])) for c in nb.cells)
    assert len(nb.metadata.widgets[WIDGET_STATE]["state"]) >= 5
    done = _scan_cli(str(tmp_path), "--canaries", str(tmp_path / "canaries.txt"))
    assert done.returncode == 0, done.stdout
    assert "0 finding(s) in 1 notebook(s)" in done.stderr


def test_release_frames_and_masked_summaries_are_not_raw_rows() -> None:
    release = pd.DataFrame({"age": [f"[{a}, {a + 1})" for a in range(40)], "count": 50,
                            "suppressed": False, "count_ci95": 15})
    assert [raw_row_problem(t) for t in html_tables(release.to_html())] == [None]
    assert [raw_row_problem(t) for t in text_tables(release.to_string())] == [None]
    masked = Table("html", ("column", "dtype", "masked because"), 60)
    assert raw_row_problem(masked) is None
    # the same rows without the release's columns are flagged
    plain = release.drop(columns=["suppressed", "count_ci95"])
    assert raw_row_problem(text_tables(plain.to_string())[0]) == \
        "text table with 40 rows (more than 20) that is not a release: raw rows?"
    assert raw_row_problem(text_tables(plain.to_string())[0], max_rows=50) is None


def test_tables_read_truncated_footers_and_named_indexes() -> None:
    frame = loans_frame(300, 2)
    with pd.option_context("display.max_rows", 10):
        html, text = frame[["age"]]._repr_html_(), repr(frame[["age", "income"]])
    assert [(t.columns, t.rows) for t in html_tables(html)] == [(("age",), 300)]
    assert [(t.columns, t.rows) for t in text_tables(text)] == [(("age", "income"), 300)]
    named = frame.set_index("customer_id")[["age"]].head(3)
    assert [(t.columns, t.rows) for t in text_tables(repr(named))] == \
        [(("age", "customer_id"), 3)]
    assert raw_row_problem(text_tables(repr(named))[0]) == \
        "text table with 3 rows and identifier-like columns customer_id"
    # ordinary output is no table: a list, a log of equal-length lines
    log = "\n".join(f"epoch {i:03d} loss 0.{i:04d}" for i in range(30))
    assert text_tables(log) == [] and text_tables(repr(list(frame.age[:40]))) == []


def test_canaries_match_whole_values_only() -> None:
    canaries = Canaries(["C00000001", "Linda Diaz", "", "12"])
    assert len(canaries) == 2  # blank and too short values are dropped
    assert canaries.found("id C00000001, LINDA DIAZ") == {"c00000001", "linda diaz"}
    assert canaries.found("C000000012 xC00000001") == set()
    assert canaries.found("<td>Linda&#32;Diaz</td>", is_html=True) == {"linda diaz"}


def test_unreadable_notebook_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.ipynb").write_text("{not json")
    code, _, err = _scan_main(capsys, str(tmp_path / "broken.ipynb"))
    assert code == 2 and "broken.ipynb: cannot read notebook" in err
    code, _, err = _scan_main(capsys, str(tmp_path), "--canaries", str(tmp_path / "none.txt"))
    assert code == 2 and "cannot read canaries" in err
