"""``pdebug-jupyter policy lint``: each rule fires on a policy crafted from the synthetic
demo policy, and the demo policy itself lints clean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pdebug_jupyter.cli import main
from pdebug_jupyter.policy_lint import lint_policy
from pdebug_jupyter.synth import make_loans


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_loans(500, 1, tmp_path_factory.mktemp("lint"))


def _crafted(demo: Any, tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """The demo policy with text replaced, next to the demo data."""
    text = demo.policy.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = demo.policy.parent / f"{tmp_path.name}.toml"
    path.write_text(text)
    return path


def _problems(path: Path) -> list[tuple[str, str, str]]:
    return [(p.key, p.severity, p.message) for p in lint_policy(path)]


def _keys(path: Path) -> list[tuple[str, str]]:
    return [(key, severity) for key, severity, _ in _problems(path)]


def _lint_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pdebug_jupyter", "policy", "lint", *args],
                          capture_output=True, text=True, timeout=120)


def _lint_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["policy", "lint", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_policy_lints_clean(demo: Any) -> None:
    assert lint_policy(demo.policy) == []


def test_world_readable_ledger_is_the_one_documented_warning(demo: Any, tmp_path: Path) -> None:
    policy = _crafted(demo, tmp_path, ('ledger = "ledger.sqlite"', 'ledger = "lint.sqlite"'))
    ledger = policy.parent / "lint.sqlite"
    ledger.write_bytes(b"")
    ledger.chmod(0o644)  # what a service creates under the usual umask 022
    assert _keys(policy) == [("service.ledger", "warning")]
    ledger.chmod(0o600)
    assert _keys(policy) == []


def test_no_identifier_and_privacy_unit_not_an_identifier(demo: Any, tmp_path: Path) -> None:
    ids = [f'{c} = {{ kind = "identifier" }}' for c in ("customer_id", "name", "email", "ssn",
                                                           "phone")]
    no_ids = _crafted(demo, tmp_path, *[(line + "\n", "") for line in ids])
    assert _keys(no_ids) == [("datasets.loans.columns", "error"),
                             ("datasets.loans.privacy_unit", "error")]
    assert "'customer_id' is not a declared column" in _problems(no_ids)[1][2]
    by_region = _crafted(demo, tmp_path, ('privacy_unit = "customer_id"',
                                          'privacy_unit = "region"'))
    assert _problems(by_region) == [("datasets.loans.privacy_unit", "error",
                                     "'region' is of kind 'categorical', not an identifier")]


def test_bounds_missing_or_too_wide_and_bins_missing(demo: Any, tmp_path: Path) -> None:
    no_bounds = _crafted(demo, tmp_path, ("bounds = [0, 200000], bins = 10", "bins = 10"))
    assert _keys(no_bounds) == [("datasets.loans.columns.income", "error")]
    wide = _crafted(demo, tmp_path, ("bounds = [0, 200000], bins = 10",
                                     "bounds = [-1e12, 1e12], bins = 10"))
    assert _problems(wide) == [("datasets.loans.columns.income.bounds", "warning",
                                "bounds [-1e+12, 1e+12] span 2e+12: sums get noise on that "
                                "scale; declare the plausible range instead")]
    no_bins = _crafted(demo, tmp_path, ("bounds = [0, 200000], bins = 10", "bounds = [0, 200000]"))
    assert _keys(no_bins) == [("datasets.loans.columns.income", "warning")]


def test_min_cohort_and_rows_per_unit_out_of_range(demo: Any, tmp_path: Path) -> None:
    for value, word in (("0", "below 10"), ("5", "below 10"), ("50000", "above 10000")):
        policy = _crafted(demo, tmp_path, ("min_cohort = 25", f"min_cohort = {value}"))
        (key, severity, message), = _problems(policy)
        assert (key, severity) == ("datasets.loans.min_cohort", "warning") and word in message
    many = _crafted(demo, tmp_path, ("max_rows_per_unit = 1", "max_rows_per_unit = 50"))
    assert _keys(many) == [("datasets.loans.max_rows_per_unit", "warning")]


def test_budgets_out_of_range(demo: Any, tmp_path: Path) -> None:
    huge = _crafted(demo, tmp_path, ("epsilon_per_user = 5.0", "epsilon_per_user = 15.0"),
                    ("epsilon_total = 20.0", "epsilon_total = 100.0"))
    assert _keys(huge) == [("datasets.loans.epsilon_per_user", "error")]
    inverted = _crafted(demo, tmp_path, ("epsilon_total = 20.0", "epsilon_total = 2.0"))
    # the lint's message stands for the loader's refusal of the same key: reported once
    assert _problems(inverted) == [("datasets.loans.epsilon_per_user", "error",
                                    "5 is above epsilon_total 2, the cap of all users together")]
    per_query = _crafted(demo, tmp_path, ("min_cohort = 25",
                                          "min_cohort = 25\nmax_epsilon_per_query = 8.0"))
    assert _keys(per_query) == [("datasets.loans.max_epsilon_per_query", "warning")]


def test_domains_missing(demo: Any, tmp_path: Path) -> None:
    protected = _crafted(demo, tmp_path, ('sex = { kind = "protected", categories = '
                                          '["female", "male"] }', 'sex = { kind = "protected" }'))
    assert _keys(protected) == [("datasets.loans.columns.sex", "error")]
    assert "protected column without declared categories" in _problems(protected)[0][2]
    categorical = _crafted(demo, tmp_path, (
        'region = { kind = "categorical", categories = ["north", "south", "east", "west"] }',
        'region = { kind = "categorical", categories = [] }'))
    assert _keys(categorical) == [("datasets.loans.columns.region", "error")]


def test_literal_tokens(demo: Any, tmp_path: Path) -> None:
    literal = _crafted(demo, tmp_path, ('token = "env:PDEBUG_TOKEN_ALICE"',
                                        'token = "alice-literal-token-123456"'))
    assert _problems(literal) == [("users[0].token", "error",
                                   'a literal token: whoever reads this file can act as this '
                                   'user; use token = "env:VARIABLE"')]


def test_loader_errors_are_reported_with_the_loader_message(demo: Any, tmp_path: Path) -> None:
    unknown = _crafted(demo, tmp_path, ('backend = "duckdb"', 'backend = "oracle"'))
    assert _problems(unknown) == [("datasets.loans.backend", "error",
                                   "unsupported backend 'oracle' (supported: duckdb, spark)")]
    broken = _crafted(demo, tmp_path, ("[service]", "[service"))
    (key, severity, message), = _problems(broken)
    assert (key, severity) == ("(file)", "error") and message.startswith("not valid TOML")


def test_exit_codes_and_output(demo: Any, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    warned = _crafted(demo, tmp_path, ("min_cohort = 25", "min_cohort = 3"))
    done = _lint_cli(str(warned))  # the installed command, once
    assert done.returncode == 0 and "0 error(s), 1 warning(s)" in done.stderr
    assert done.stdout.startswith(f"{warned}: datasets.loans.min_cohort: warning: 3 is below 10")
    assert _lint_main(capsys, str(demo.policy))[0] == 0
    assert _lint_main(capsys, str(warned), "--strict")[0] == 1
    failed = _crafted(demo, tmp_path, ("epsilon_per_user = 5.0", "epsilon_per_user = 12.0"))
    code, out, _ = _lint_main(capsys, str(failed), "--json")
    assert code == 1
    assert [(p["key"], p["severity"]) for p in json.loads(out)] == \
        [("datasets.loans.epsilon_per_user", "error")]
