"""The kernel guard: redaction patterns, masked tables in a real IPython shell and in a real
kernel run by nbclient, the %pdebug magics, and connect() turning the guard on."""

from __future__ import annotations

import getpass
import io
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import ALICE, AUDREY, ServiceProcess, policy_copy
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import pdebug_jupyter as pdj
from pdebug_jupyter import guard
from pdebug_jupyter.client.session import current_session
from pdebug_jupyter.guard import SensitiveColumns, iban_valid, luhn_valid, redact, redact_bundle
from pdebug_jupyter.guard._columns import normal_name
from pdebug_jupyter.synth import loans_frame

IDENTITY = ["customer_id", "name", "email", "ssn", "phone"]
HIDDEN = "values hidden by the pdebug guard"

# -- redaction patterns ----------------------------------------------------------------------

CAUGHT = [
    ("write to jane.doe@example.com today", "write to [redacted email] today"),
    ("mary.smith.12345678@example.com", "[redacted email]"),
    ("<td>a_b+tag@mail.example.co.uk</td>", "<td>[redacted email]</td>"),
    ("call +1-555-0123-4567", "call [redacted phone]"),
    ("+44 20 7946 0958", "[redacted phone]"),
    ("+49 (0)30 1234567", "[redacted phone]"),
    ("+4915112345678", "[redacted phone]"),
    ("(555) 123-4567", "[redacted phone]"),
    ("555-123-4567 or 555.123.4567", "[redacted phone] or [redacted phone]"),
    ("020 7946 0958", "[redacted phone]"),
    ("07700 900123", "[redacted phone]"),
    ("01 23 45 67 89", "[redacted phone]"),
    ("ssn 123-45-6789.", "ssn [redacted ssn]."),
    ("\x1b[39mjane@example.com\x1b[0m", "\x1b[39m[redacted email]\x1b[0m"),
    ("912-34-5678", "[redacted ssn]"),  # 9xx: ITINs and test data, personal all the same
    ("942-00-4892 and 123 45 0000", "[redacted ssn] and [redacted ssn]"),
    ("4111 1111 1111 1111", "[redacted card]"),
    ("4111-1111-1111-1111", "[redacted card]"),
    ("card=4111111111111111;", "card=[redacted card];"),
    ("5500 0000 0000 0004", "[redacted card]"),
    ("3400 000000 00009", "[redacted card]"),  # Amex 4-6-5
    ("6011000990139424", "[redacted card]"),
    ("GB82 WEST 1234 5698 7654 32", "[redacted iban]"),
    ("GB82WEST12345698765432", "[redacted iban]"),
    ("DE89 3704 0044 0532 0130 00 TOTAL 12", "[redacted iban] TOTAL 12"),
    ("FR14 2004 1010 0505 0001 3M02 606", "[redacted iban]"),
]

UNTOUCHED = [
    "000-12-3456", "666-12-3456",  # SSN areas never issued: placeholders
    "4111 1111 1111 1112", "4111111111111112",  # Luhn fails
    "1234567812345670",  # Luhn passes, but no card network starts with 1
    "GB82 WEST 1234 5698 7654 33", "GB83WEST12345698765432",  # mod 97 fails
    "ZZ82WEST12345698765432",  # no such country
    "price $1,234.56", "EUR 1.234.567,89", "year 2026", "count 20000", "n = 1,234,567,890",
    "0.1234", "0.4111111111111111", "3.141592653589793", "1e+10", "-2.5e-08", "id 12345",
    "2026-12-04", "2026-12-04 10:30:00", "2026-12-04T10:30:00+01:00", "04/12/2026",
    "12:30:45.123456", "epoch 1733300000", "ms 1733300000000", "ns 1733300000000000000",
    "192.168.1.100", "v1.2.3", "ECE 0.0423 (0.0101, 0.0712)", "epsilon=0.2 spent 4.8",
    "[ 1  2  3  4  5  6  7  8  9 10 11 12 13]", "12345678901234",
    "release 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "uuid 123e4567-e89b-12d3-a456-426614174000", "user@localhost", "C00000042",
]


@pytest.mark.parametrize(("text", "expected"), CAUGHT)
def test_redaction_catches_personal_data_patterns(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # markers are not caught again


@pytest.mark.parametrize("text", UNTOUCHED)
def test_redaction_leaves_ordinary_numbers_and_invalid_ids_alone(text: str) -> None:
    assert redact(text) == text


def test_luhn_and_mod97_checks() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")
    assert iban_valid("GB82WEST12345698765432") and iban_valid("NO9386011117947")
    assert not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("GB82WEST1234569876543")  # one short of Britain's 22


def test_redacting_a_bundle_keeps_images_and_walks_json() -> None:
    png = "iVBORw0KGgo 4111111111111111 a@b.org"  # would be caught, were it text
    out = redact_bundle({"text/plain": "a@b.org", "image/png": png,
                         "application/json": {"rows": [{"mail": "a@b.org", "n": 3}]}})
    assert out == {"text/plain": "[redacted email]", "image/png": png,
                   "application/json": {"rows": [{"mail": "[redacted email]", "n": 3}]}}


# -- sensitive column names ------------------------------------------------------------------

def test_column_names_are_matched_on_whole_words_in_a_normal_form() -> None:
    cols = SensitiveColumns()
    assert normal_name("CustomerID") == "customer_id" == normal_name("customer-id")
    for name in ["name", "First Name", "lastName", "surname", "EMAIL", "e_mail", "home_tel",
                 "mobile", "SSN", "passport_no", "street_address", "zip", "DOB",
                 "date_of_birth", "iban", "CreditCard", "ip_address", "CustomerID", "user_id"]:
        assert cols.reason(name) is not None, name
    for name in ["model_name", "feature_name", "hotel", "zipper", "score", "age", "income",
                 "region", "default", "window", "count", "group", "ship", "sex"]:
        assert cols.reason(name) is None, name
    more = cols.with_patterns(["loyalty number", r"patient_ref\w*"])
    assert more.reason("LoyaltyNumber") == "name looks like loyalty number"
    assert more.reason("patient_reference") is not None
    with pytest.raises(ValueError, match="not a valid name pattern"):
        cols.with_patterns(["(unclosed"])


def test_policy_columns_come_from_the_public_schema() -> None:
    schema = {"name": "loans", "columns": [
        {"name": "customer_id", "kind": "identifier"},
        {"name": "sex", "kind": "protected", "categories": ["female", "male"]},
        {"name": "region", "kind": "categorical", "categories": ["north", "south"]}]}
    cols = SensitiveColumns.from_schemas([schema])
    assert cols.reason("customer_id") == "identifier in policy dataset 'loans'"
    assert cols.reason("sex") == "protected in policy dataset 'loans'"
    assert cols.reason("region") is None
    # a release's group axis: a categorical over the public categories (plus "other")
    assert cols.reason("sex", ["female", "male", "other"]) is None
    assert cols.reason("sex", ["female", "male", "unknown"]) is not None


# -- formatters in a real IPython shell ------------------------------------------------------

@pytest.fixture(scope="module")
def ipython(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.ipython_dir = str(tmp_path_factory.mktemp("ipython"))
    shell = InteractiveShell.instance(config=config)
    yield shell
    InteractiveShell.clear_instance()  # later tests' connect() must find no shell


@pytest.fixture
def shell(ipython: Any) -> Iterator[Any]:
    ipython.run_line_magic("load_ext", "pdebug_jupyter")
    yield ipython
    ipython.run_line_magic("unload_ext", "pdebug_jupyter")
    assert guard.active_guard() is None


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    return loans_frame(300, seed=7)


def canaries(frame: pd.DataFrame) -> list[str]:
    return [str(v) for col in IDENTITY for v in frame[col]]


def assert_no_canary(text: str, frame: pd.DataFrame) -> None:
    leaked = [c for c in canaries(frame) if c in text]
    assert not leaked, leaked[:5]


def test_frame_with_identifiers_is_a_masked_summary_in_text_and_html(
        shell: Any, people: pd.DataFrame) -> None:
    data, _ = shell.display_formatter.format(people)
    assert set(data) == {"text/plain", "text/html"}
    for text in data.values():
        assert_no_canary(text, people)
        assert HIDDEN in text and "300 rows x 12 columns" in text
        assert "an email address" in text and "income" in text and "float64" in text
    # no cell value of the other columns either
    assert str(people["income"].iloc[0]) not in data["text/plain"]
    assert ".drop(columns=['customer_id', 'name', 'email', 'ssn', 'phone'])" in data["text/plain"]


def test_every_formatter_is_covered(shell: Any, people: pd.DataFrame) -> None:
    fmt = shell.display_formatter
    for mime, formatter in fmt.formatters.items():
        out = formatter(people)
        if mime in ("text/plain", "text/html"):
            assert HIDDEN in out
        else:
            assert out is None, mime
    assert fmt.mimebundle_formatter(people) == ({}, {})


class ChattyFrame(pd.DataFrame):
    """A frame type offering every other way to display itself."""

    def _repr_markdown_(self) -> str:
        return "| " + " | ".join(map(str, self.iloc[0]))

    def _repr_latex_(self) -> str:
        return " & ".join(map(str, self.iloc[0]))

    def _repr_json_(self) -> Any:
        return self.to_dict("records")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return {"application/vnd.dataresource+json": {"data": self.to_dict("records")}}

    def _ipython_display_(self) -> None:
        print(self.to_string())


def test_other_reprs_and_self_display_are_blocked(
        shell: Any, people: pd.DataFrame, capsys: pytest.CaptureFixture[str]) -> None:
    chatty = ChattyFrame(people.head(3))
    data, md = shell.display_formatter.format(chatty)
    assert set(data) == {"text/plain", "text/html"} and md == {}
    assert_no_canary(json.dumps(data), people)
    assert capsys.readouterr().out == ""  # _ipython_display_ never ran


def test_frames_without_sensitive_columns_display_as_usual(
        shell: Any, people: pd.DataFrame) -> None:
    plain = people[["age", "income", "region", "score"]].head(5)
    data, _ = shell.display_formatter.format(plain)
    assert data["text/plain"] == repr(plain)
    assert data["text/html"] == plain._repr_html_()
    arr = np.arange(6).reshape(2, 3)
    assert shell.display_formatter.format(arr)[0]["text/plain"] == repr(arr)


def test_series_rows_indexes_and_containers_are_masked(shell: Any, people: pd.DataFrame) -> None:
    fmt = shell.display_formatter

    def plain(obj: Any) -> str:
        return str(fmt.format(obj)[0]["text/plain"])

    for obj in [people["email"], people.iloc[0], people.head(2).T,
                people.set_index("customer_id")[["age"]], people.set_index("customer_id").index,
                [people.head(2), 1], {"frame": people.tail(2)}]:
        text = plain(obj)
        assert HIDDEN in text, type(obj)
        assert_no_canary(text, people)
    # per-column numbers indexed by column names hold no one's data
    assert plain(people.isna().sum()) == repr(people.isna().sum())
    # columns and patterns of the user's own
    refs = pd.DataFrame({"ref": ["R-1"], "loyalty_no": ["L-9"], "n": [1]})
    assert plain(refs) == repr(refs)
    guard.enable(shell, columns=["Ref"], extra_patterns=["loyalty no"])
    text = plain(refs)
    assert "sensitive in guard settings" in text and "name looks like loyalty no" in text
    assert "R-1" not in text and "L-9" not in text


def test_styler_numpy_and_arrow_tables_are_masked(shell: Any, people: pd.DataFrame) -> None:
    fmt = shell.display_formatter
    head = people.head(3)
    records = head[["customer_id", "email", "age"]].to_records(index=False)
    structured = np.array([(1, "jane@example.com")], dtype=[("user_id", "i8"), ("email", "U40")])
    for obj in [head.style, records, records[0], structured, pa.Table.from_pandas(head),
                pa.RecordBatch.from_pandas(head)]:
        data, _ = fmt.format(obj)
        assert HIDDEN in data["text/plain"] and HIDDEN in data["text/html"], type(obj)
        assert_no_canary(json.dumps(data), people)
        assert "jane@example.com" not in json.dumps(data)


def test_polars_is_duck_typed_and_never_imported(
        shell: Any, people: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "polars" not in sys.modules  # enabling the guard imported nothing

    class DataFrame:  # the few attributes of a polars frame the guard reads
        __module__ = "polars.dataframe.frame"
        schema = {"email": "String", "age": "Int64"}
        height = 2

        def _repr_html_(self) -> str:
            return "<td>jane@example.com</td><td>41</td>"

    fake = types.ModuleType("polars")
    fake.DataFrame = DataFrame  # type: ignore[attr-defined]
    fake.Series = type("Series", (), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "polars", fake)
    frame = DataFrame()
    # the html formatter's printer was registered by name, before "polars" existed
    html = shell.display_formatter.formatters["text/html"](frame)
    assert HIDDEN in html and "jane@example.com" not in html and "41" not in html
    assert "2 rows x 2 columns" in shell.display_formatter.format(frame)[0]["text/plain"]


def test_last_expression_display_and_head_in_cells(
        capsys: pytest.CaptureFixture[str], shell: Any, people: pd.DataFrame) -> None:
    shell.user_ns["df"] = people
    for cell in ["df", "df.head()", "display(df)", "display('jane.doe@example.com')",
                 "display({'text/plain': 'raw +44 20 7946 0958'}, raw=True)"]:
        result = shell.run_cell(cell)
        assert result.success, result.error_in_exec
    out = capsys.readouterr().out
    assert out.count(HIDDEN) == 3
    assert "'[redacted email]'" in out and "raw [redacted phone]" in out
    assert "jane.doe@example.com" not in out
    assert_no_canary(out, people)


def test_streams_and_tracebacks_are_redacted(
        capsys: pytest.CaptureFixture[str], shell: Any) -> None:
    shell.run_cell('print("mail jane.doe@example.com, card 4111 1111 1111 1111, n=20000")')
    shell.run_cell('raise KeyError("jane.doe@example.com")')
    out = capsys.readouterr()
    text = out.out + out.err
    assert "mail [redacted email], card [redacted card], n=20000" in text
    assert "KeyError" in text and "jane.doe@example.com" not in text


def test_unloading_puts_everything_back(ipython: Any, people: pd.DataFrame,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    fmt = ipython.display_formatter
    before = {m: (dict(f.type_printers), dict(f.deferred_printers))
              for m, f in fmt.formatters.items()}
    ipython.run_line_magic("load_ext", "pdebug_jupyter")
    assert "stdout" in guard.active_guard().streams  # type: ignore[union-attr]
    sys.stdout.write("jane.doe@example.com\n")
    ipython.run_line_magic("unload_ext", "pdebug_jupyter")
    sys.stdout.write("jane.doe@example.com\n")
    assert stream.getvalue() == "[redacted email]\njane.doe@example.com\n"
    assert fmt.format(people.head(2))[0]["text/plain"] == repr(people.head(2))
    assert "format" not in vars(fmt) and "write" not in vars(stream)
    assert {m: (dict(f.type_printers), dict(f.deferred_printers))
            for m, f in fmt.formatters.items()} == before
    with pytest.raises(UsageError):
        ipython.run_line_magic("pdebug", "status")  # the magic is gone too


def test_magic_errors_are_one_line(shell: Any) -> None:
    with pytest.raises(UsageError, match=r"unknown subcommand 'spend'; usage: %pdebug status"):
        shell.run_line_magic("pdebug", "spend 1")
    with pytest.raises(UsageError, match="usage"):
        shell.run_line_magic("pdebug", "")
    with pytest.raises(UsageError, match="budget takes no arguments"):
        shell.run_line_magic("pdebug", "budget loans")
    if current_session() is None:
        with pytest.raises(UsageError, match="not connected"):
            shell.run_line_magic("pdebug", "budget")


# -- connect() inside IPython: policy columns, the magics, the purpose ----------------------

def test_connect_inside_ipython_guards_policy_columns_and_serves_the_magics(
        ipython: Any, shared_service: ServiceProcess, people: pd.DataFrame,
        capsys: pytest.CaptureFixture[str]) -> None:
    session = pdj.connect(shared_service.url, token=ALICE, purpose="guard test")
    try:
        assert current_session() is session
        active = guard.active_guard()
        assert active is not None and active.shell is ipython
        fmt = ipython.display_formatter
        # protected column from the policy: raw rows of it are masked ...
        raw = people[["sex", "age"]].head(4)
        assert "protected in policy dataset 'loans'" in fmt.format(raw)[0]["text/plain"]
        # ... but a release grouped by it is public-domain cells, shown as they are
        rel = session.dataset("loans").histogram("sex", epsilon=0.05).to_frame()
        assert fmt.format(rel)[0]["text/plain"] == repr(rel)

        capsys.readouterr()
        ipython.run_line_magic("pdebug", "status")
        ipython.run_line_magic("pdebug", "budget")
        ipython.run_line_magic("pdebug", 'purpose "audit of sex gaps"')
        out = capsys.readouterr().out
        assert f"connected to {session.url} as alice (analyst)" in out
        assert "purpose: guard test" in out and "datasets: loans" in out
        assert "customer_id, email, name, phone, ssn (identifier); sex (protected)" in out
        assert "stdout and stderr" in out
        assert out.splitlines()[5].split()[:2] == ["loans", "0.05"]  # budget: spent
        assert session.purpose == "audit of sex gaps"

        session.dataset("loans").histogram("region", epsilon=0.05)
        audit = shared_service.call("GET", "/audit", AUDREY, purpose="check").json()["audit"]
        assert audit[-1]["user"] == "alice" and audit[-1]["purpose"] == "audit of sex gaps"
        assert audit[-2]["purpose"] == "guard test"
        with pytest.raises(UsageError, match="invalid_purpose"):
            ipython.run_line_magic("pdebug", "purpose " + "x" * 501)
        ipython.run_line_magic("pdebug", 'purpose ""')
        assert session.purpose is None and "purpose: (none given)" in capsys.readouterr().out
    finally:
        session.close()
        guard.unload_ipython_extension(ipython)
    assert current_session() is None


# -- a real kernel under nbclient ----------------------------------------------------------

def run_notebook(cells: list[str], path: Path, tags: dict[int, list[str]] | None = None
                 ) -> list[Any]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    for i, cell_tags in (tags or {}).items():
        nb.cells[i].metadata["tags"] = cell_tags
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(path)}}).execute()
    nbformat.write(nb, path / "saved.ipynb")  # assert on what a saved notebook would hold
    saved = nbformat.read(path / "saved.ipynb", as_version=4)
    return [c.outputs for c in saved.cells]


def test_real_kernel_masks_frames_and_redacts_streams(tmp_path: Path) -> None:
    cells = [
        "%load_ext pdebug_jupyter",
        "from pdebug_jupyter.synth import loans_frame\ndf = loans_frame(500, seed=5)\ndisplay(df)",
        "df",
        "df.head()",
        'print("contact:", df.email[0], df.phone[0], df.ssn[0])\n'
        "print(df[['email', 'phone', 'ssn']].head(20).to_string())",
        "df[['age', 'income']].head(3)",
        "raise KeyError(df.email[1])",
    ]
    outputs = run_notebook(cells, tmp_path, {6: ["raises-exception"]})
    people = loans_frame(500, seed=5)
    assert_no_canary(json.dumps(outputs), people)
    for i, kind in [(1, "display_data"), (2, "execute_result"), (3, "execute_result")]:
        (out,) = outputs[i]
        assert out["output_type"] == kind
        assert set(out["data"]) == {"text/plain", "text/html"}
        assert HIDDEN in out["data"]["text/plain"] and HIDDEN in out["data"]["text/html"]
    stream = "".join(o["text"] for o in outputs[4] if o["output_type"] == "stream")
    assert stream.startswith("contact: [redacted email] [redacted phone] [redacted ssn]\n")
    assert stream.count("[redacted email]") == 21 and stream.count("[redacted ssn]") == 21
    (plain,) = outputs[5]
    assert plain["data"]["text/plain"] == repr(people[["age", "income"]].head(3))
    (error,) = outputs[6]
    assert error["ename"] == "KeyError" and error["evalue"] == "'[redacted email]'"


def test_real_kernel_connect_turns_the_guard_on(loans: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDEBUG_POLICY", str(policy_copy(loans, tmp_path)))
    cells = [
        "import pdebug_jupyter as pdj\nfrom pdebug_jupyter.synth import loans_frame\n"
        "session = pdj.connect(purpose='kernel test')\ndf = loans_frame(200, seed=9)",
        "df[['customer_id', 'age']].head()",
        "%pdebug status",
        "%pdebug purpose 'second look'\nsession.purpose",
    ]
    outputs = run_notebook(cells, tmp_path)
    assert_no_canary(json.dumps(outputs), loans_frame(200, seed=9))
    (masked,) = outputs[1]
    assert "identifier in policy dataset 'loans'" in masked["data"]["text/plain"]
    status = "".join(o["text"] for o in outputs[2])
    assert f"as {getpass.getuser()} (owner)" in status and "purpose: kernel test" in status
    assert "guard: on" in status and "stdout and stderr" in status
    assert outputs[3][-1]["data"]["text/plain"] == "'second look'"
