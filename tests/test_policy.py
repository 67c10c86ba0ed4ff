"""The policy file: the documented shape loads, paths and tokens resolve, and every invalid
policy is refused with a message that names the file, the key path and what is wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pdebug_jupyter.policy import PolicyError, load_policy

TOKEN_VAR = "PDEBUG_TEST_POLICY_TOKEN"
TOKEN = "alice-token-from-the-environment"

BASE = """\
[service]
ledger = "state/ledger.sqlite"
retention_days = 30

[[users]]
name = "alice"
role = "analyst"
token = "env:PDEBUG_TEST_POLICY_TOKEN"

[[users]]
name = "olivia"
role = "owner"
token = "olivia-literal-token-0001"

[datasets.loans]
source = "data/loans.parquet"
privacy_unit = "customer_id"
max_rows_per_unit = 2
epsilon_per_user = 1.0
epsilon_total = 4.0
min_cohort = 20

[datasets.loans.columns]
customer_id = { kind = "identifier" }
age = { kind = "numeric", bounds = [18, 90], bins = [18, 25, 35, 45, 55, 65, 90] }
income = { kind = "numeric", bounds = [0, 200000], bins = 10 }
sex = { kind = "protected", categories = ["female", "male"] }
default = { kind = "label" }
score = { kind = "score" }
window = { kind = "split", categories = ["reference", "current"] }
"""

Writer = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Writer:
    """Write ``BASE`` (or a given text) with string replacements into ``conf/policy.toml``."""
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    monkeypatch.delenv("PDEBUG_TEST_POLICY_UNSET", raising=False)

    def write_(*replacements: tuple[str, str], text: str = BASE) -> Path:
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new, 1)
        path = tmp_path / "conf" / "policy.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return path

    return write_


def refusal(path: Path) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.code == "invalid_policy"
    return str(info.value)


# -- the documented shape ---------------------------------------------------------------------

def test_the_generated_demo_policy_loads_with_its_domains(loans: Any) -> None:
    policy = load_policy(loans.policy)
    here = loans.policy.parent.resolve()
    assert policy.path == loans.policy.resolve()
    assert policy.ledger == here / "ledger.sqlite"
    assert policy.retention_days == 365
    assert [(u.name, u.role) for u in policy.users] == [
        ("alice", "analyst"), ("olivia", "owner"), ("victor", "viewer"), ("audrey", "auditor")]
    assert policy.users[0].token == "alice-secret-token-0001"  # from env:PDEBUG_TOKEN_ALICE
    ds = policy.datasets["loans"]
    assert list(policy.datasets) == ["loans"]
    assert ds.source == here / "loans.parquet"
    assert (ds.backend, ds.privacy_unit, ds.max_rows_per_unit) == ("duckdb", "customer_id", 1)
    assert (ds.epsilon_per_user, ds.epsilon_total, ds.min_cohort) == (5.0, 20.0, 25)
    assert ds.max_epsilon_per_query == 5.0  # defaults to the per-user budget
    assert ds.synthetic is True and ds.model_version.startswith("credit-risk-gbm")
    kinds = {name: col.kind for name, col in ds.columns.items()}
    assert kinds == {"customer_id": "identifier", "name": "identifier", "email": "identifier",
                     "ssn": "identifier", "phone": "identifier", "age": "numeric",
                     "income": "numeric", "sex": "protected", "region": "categorical",
                     "default": "label", "score": "score", "window": "split"}
    age, income, score = ds.columns["age"], ds.columns["income"], ds.columns["score"]
    assert age.bounds == (18.0, 90.0)
    assert age.edges == (18.0, 25.0, 35.0, 45.0, 55.0, 65.0, 90.0)
    assert age.labels() == ("[18, 25)", "[25, 35)", "[35, 45)", "[45, 55)", "[55, 65)",
                            "[65, 90]")
    assert income.edges == tuple(20_000.0 * i for i in range(11))
    assert score.bounds == (0.0, 1.0)
    assert score.edges == pytest.approx([i / 10 for i in range(11)])
    assert ds.columns["sex"].categories == ("female", "male")
    assert ds.columns["region"].categories == ("north", "south", "east", "west")
    assert ds.columns["default"].categories == ("0", "1")
    assert not ds.columns["customer_id"].queryable and ds.columns["age"].queryable


def test_a_bin_count_gives_that_many_equal_width_bins(write: Writer) -> None:
    path = write(('income = { kind = "numeric", bounds = [0, 200000], bins = 10 }',
                  'income = { kind = "numeric", bounds = [-50, 50], bins = 4 }'))
    income = load_policy(path).datasets["loans"].columns["income"]
    assert income.edges == (-50.0, -25.0, 0.0, 25.0, 50.0)
    assert income.labels() == ("[-50, -25)", "[-25, 0)", "[0, 25)", "[25, 50]")


def test_explicit_edges_inside_the_bounds_are_kept_as_written(write: Writer) -> None:
    path = write(("bins = [18, 25, 35, 45, 55, 65, 90]", "bins = [25, 40.5, 65]"))
    age = load_policy(path).datasets["loans"].columns["age"]
    assert age.bounds == (18.0, 90.0)
    assert age.edges == (25.0, 40.5, 65.0)


def test_paths_resolve_relative_to_the_policy_file_not_the_working_directory(
        write: Writer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    policy = load_policy(Path("..") / "conf" / "policy.toml")
    conf = (tmp_path / "conf").resolve()
    assert policy.path == path.resolve()
    assert policy.datasets["loans"].source == conf / "data" / "loans.parquet"
    assert policy.ledger == conf / "state" / "ledger.sqlite"


def test_absolute_paths_are_kept(write: Writer, tmp_path: Path) -> None:
    data, ledger = tmp_path / "abs" / "loans.csv", tmp_path / "abs" / "ledger.sqlite"
    policy = load_policy(write(('"data/loans.parquet"', f'"{data}"'),
                               ('"state/ledger.sqlite"', f'"{ledger}"')))
    assert policy.datasets["loans"].source == data.resolve()
    assert policy.ledger == ledger.resolve()


def test_env_tokens_resolve_and_literal_tokens_are_kept(write: Writer) -> None:
    users = load_policy(write()).users
    assert [(u.name, u.token) for u in users] == [("alice", TOKEN),
                                                   ("olivia", "olivia-literal-token-0001")]
    assert TOKEN not in repr(users[0])


def test_a_local_service_leaves_out_users_whose_token_is_unset(
        write: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write()
    monkeypatch.delenv(TOKEN_VAR)
    with pytest.raises(PolicyError, match=f"environment variable {TOKEN_VAR} is not set"):
        load_policy(path)
    users = load_policy(path, require_tokens=False).users
    assert [(u.name, u.token) for u in users] == [("olivia", "olivia-literal-token-0001")]


def test_digest_changes_when_the_file_changes(write: Writer) -> None:
    path = write()
    first, again = load_policy(path), load_policy(path)
    assert first.digest == again.digest and len(first.digest) == 64
    commented = load_policy(write(text=BASE + "# a comment only\n"))
    assert commented.digest != first.digest
    # the dataset's own digest follows its settings, not the file's comments
    assert commented.datasets["loans"].digest == first.datasets["loans"].digest
    stricter = load_policy(write(("min_cohort = 20", "min_cohort = 30")))
    assert stricter.digest != first.digest
    assert stricter.datasets["loans"].digest != first.datasets["loans"].digest


# -- refusals: file, key path, problem -------------------------------------------------------

AGE = 'age = { kind = "numeric", bounds = [18, 90], bins = [18, 25, 35, 45, 55, 65, 90] }'
INCOME_BINS = "bounds = [0, 200000], bins = 10"
COLS = "datasets.loans.columns"

INVALID: list[tuple[str, tuple[str, str], str, str]] = [
    ("unknown kind", ('kind = "numeric", bounds = [18, 90]', 'kind = "number", bounds = [18, 90]'),
     f"{COLS}.age.kind", "unknown kind 'number'"),
    ("bounds missing", (AGE, 'age = { kind = "numeric", bins = 6 }'),
     f"{COLS}.age.bounds", "is required"),
    ("bounds reversed", ("bounds = [18, 90]", "bounds = [90, 18]"),
     f"{COLS}.age.bounds", "low < high"),
    ("bounds empty interval", ("bounds = [18, 90]", "bounds = [18, 18]"),
     f"{COLS}.age.bounds", "low < high"),
    ("bounds infinite", ("bounds = [18, 90]", "bounds = [18, inf]"),
     f"{COLS}.age.bounds", "finite numbers"),
    ("bounds nan", ("bounds = [18, 90]", "bounds = [nan, 90]"),
     f"{COLS}.age.bounds", "finite numbers"),
    ("bounds one number", ("bounds = [18, 90]", "bounds = [18]"),
     f"{COLS}.age.bounds", "expected [low, high]"),
    ("bounds strings", ("bounds = [18, 90]", 'bounds = ["18", "90"]'),
     f"{COLS}.age.bounds", "expected [low, high]"),
    ("bounds a number", ("bounds = [18, 90]", "bounds = 90"),
     f"{COLS}.age.bounds", "expected an array, got int"),
    ("edges below the bounds", ("bins = [18, 25,", "bins = [10, 25,"),
     f"{COLS}.age.bins", "bin edges must lie within bounds [18, 90]"),
    ("edges above the bounds", ("65, 90]", "65, 95]"),
     f"{COLS}.age.bins", "bin edges must lie within bounds [18, 90]"),
    ("edges not increasing", ("bins = [18, 25, 35,", "bins = [18, 35, 25,"),
     f"{COLS}.age.bins", "strictly increasing"),
    ("edges repeated", ("bins = [18, 25, 35,", "bins = [18, 25, 25,"),
     f"{COLS}.age.bins", "strictly increasing"),
    ("a single edge", ("bins = [18, 25, 35, 45, 55, 65, 90]", "bins = [18]"),
     f"{COLS}.age.bins", "2 or more"),
    ("zero bins", (INCOME_BINS, "bounds = [0, 200000], bins = 0"),
     f"{COLS}.income.bins", "bin count must be between 1 and 500"),
    ("negative bins", (INCOME_BINS, "bounds = [0, 200000], bins = -3"),
     f"{COLS}.income.bins", "bin count must be between 1 and 500"),
    ("huge bin count", (INCOME_BINS, "bounds = [0, 200000], bins = 1000000"),
     f"{COLS}.income.bins", "bin count must be between 1 and 500"),
    ("score outside [0, 1]", ('score = { kind = "score" }',
                              'score = { kind = "score", bounds = [0, 2] }'),
     f"{COLS}.score.bounds", "a score lies in [0, 1]"),
    ("categories missing", ('sex = { kind = "protected", categories = ["female", "male"] }',
                            'sex = { kind = "protected" }'),
     f"{COLS}.sex.categories", "is required"),
    ("categories repeated", ('["female", "male"]', '["female", "female"]'),
     f"{COLS}.sex.categories", "distinct"),
    ("a category named other", ('["female", "male"]', '["female", "other"]'),
     f"{COLS}.sex.categories", "not 'other'"),
    ("a label with three classes", ('default = { kind = "label" }',
                                    'default = { kind = "label", categories = [0, 1, 2] }'),
     f"{COLS}.default.categories", "exactly two categories"),
    ("privacy unit not an identifier", ('privacy_unit = "customer_id"', 'privacy_unit = "age"'),
     "datasets.loans.privacy_unit", "'age' must be a declared column of kind 'identifier'"),
    ("privacy unit undeclared", ('privacy_unit = "customer_id"', 'privacy_unit = "email"'),
     "datasets.loans.privacy_unit", "'email' must be a declared column"),
    ("per-user budget above the total", ("epsilon_per_user = 1.0", "epsilon_per_user = 5.0"),
     "datasets.loans.epsilon_per_user", "must not exceed epsilon_total"),
    ("negative per-user budget", ("epsilon_per_user = 1.0", "epsilon_per_user = -1.0"),
     "datasets.loans.epsilon_per_user", "must be a positive finite number, got -1.0"),
    ("zero total budget", ("epsilon_total = 4.0", "epsilon_total = 0"),
     "datasets.loans.epsilon_total", "must be a positive finite number, got 0"),
    ("nan total budget", ("epsilon_total = 4.0", "epsilon_total = nan"),
     "datasets.loans.epsilon_total", "must be a positive finite number, got nan"),
    ("infinite total budget", ("epsilon_total = 4.0", "epsilon_total = inf"),
     "datasets.loans.epsilon_total", "must be a positive finite number, got inf"),
    ("negative query cap", ("min_cohort = 20", "min_cohort = 20\nmax_epsilon_per_query = -0.5"),
     "datasets.loans.max_epsilon_per_query", "must be a positive finite number"),
    ("budget as a string", ("epsilon_total = 4.0", 'epsilon_total = "4"'),
     "datasets.loans.epsilon_total", "expected an integer or a number, got str"),
    ("budget as a boolean", ("epsilon_total = 4.0", "epsilon_total = true"),
     "datasets.loans.epsilon_total", "got a boolean"),
    ("negative minimum cohort", ("min_cohort = 20", "min_cohort = -1"),
     "datasets.loans.min_cohort", "must be zero or positive"),
    ("zero rows per unit", ("max_rows_per_unit = 2", "max_rows_per_unit = 0"),
     "datasets.loans.max_rows_per_unit", "between 1 and 1000"),
    ("database source without a table", ('"data/loans.parquet"', '"data/loans.duckdb"'),
     "datasets.loans.table", "needs the table"),
    ("unsupported backend", ("min_cohort = 20", 'min_cohort = 20\nbackend = "oracle"'),
     "datasets.loans.backend", "unsupported backend 'oracle'"),
    ("unknown dataset key", ("min_cohort = 20", "min_cohort = 20\nepsilon = 1.0"),
     "datasets.loans.epsilon", "unknown key"),
    ("unknown column key", ('default = { kind = "label" }',
                            'default = { kind = "label", clip = true }'),
     f"{COLS}.default.clip", "unknown key"),
    ("unknown top-level table", ("[service]", "[servce]"), "servce", "unknown key"),
    ("unknown service key", ("retention_days = 30", "retention = 30"),
     "service.retention", "unknown key"),
    ("unknown user key", ('role = "analyst"', 'role = "analyst"\nemail = "a@example.com"'),
     "users[0].email", "unknown key"),
    ("unknown role", ('role = "analyst"', 'role = "admin"'),
     "users[0].role", "unknown role 'admin'"),
    ("duplicate user names", ('name = "olivia"', 'name = "alice"'),
     "users", "user names must be distinct"),
    ("literal token too short", ('"olivia-literal-token-0001"', '"olivia-01"'),
     "users[1].token", "a literal token must be at least 16 characters"),
    ("env token not set", ("env:PDEBUG_TEST_POLICY_TOKEN", "env:PDEBUG_TEST_POLICY_UNSET"),
     "users[0].token", "environment variable PDEBUG_TEST_POLICY_UNSET is not set"),
]


@pytest.mark.parametrize(("case", "edit", "key", "problem"), INVALID,
                         ids=[c[0] for c in INVALID])
def test_an_invalid_policy_names_the_file_the_key_and_the_problem(
        write: Writer, case: str, edit: tuple[str, str], key: str, problem: str) -> None:
    path = write(edit)
    message = refusal(path)
    assert message.startswith(f"{path.resolve()}: {key}: "), message
    assert problem in message.split(f": {key}: ", 1)[1], message


@pytest.mark.parametrize("edges", ["[18, nan, 90]", '[18, "40", 90]', '[18, "forty", 90]'],
                         ids=["nan edge", "numeric string edge", "text edge"])
def test_bin_edges_must_be_finite_numbers(write: Writer, edges: str) -> None:
    path = write(("bins = [18, 25, 35, 45, 55, 65, 90]", f"bins = {edges}"))
    message = refusal(path)
    assert message.startswith(f"{path.resolve()}: {COLS}.age.bins: "), message


def test_a_policy_without_datasets_is_refused(write: Writer) -> None:
    path = write(text=BASE.split("[datasets.loans]")[0])
    assert refusal(path) == f"{path.resolve()}: datasets: declare at least one dataset"


def test_invalid_toml_is_refused_with_the_file_name(write: Writer) -> None:
    path = write(("epsilon_total = 4.0", "epsilon_total = = 4.0"))
    message = refusal(path)
    assert message.startswith(f"{path.resolve()}: not valid TOML: "), message


def test_a_missing_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "policy.toml"
    message = refusal(path)
    assert message.startswith(f"{path.resolve()}: cannot read policy file"), message


def test_refusals_do_not_echo_the_token_values(write: Writer) -> None:
    path = write(('"olivia-literal-token-0001"', '"olivia-01"'))
    message = refusal(path)
    assert "users[1].token" in message
    assert "olivia-01" not in message and TOKEN not in message
