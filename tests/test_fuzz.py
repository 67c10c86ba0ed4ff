"""Fuzzing the REST API of a real service process.

Two sources of requests, both deterministic (a fixed seed, ``derandomize``) and bounded:

* schemathesis over the service's own ``/openapi.json``, narrowed with what the dataset's
  public schema says (column names, categories, the per-query epsilon limit) so that valid
  bodies reach the engine and near-valid ones (one constraint broken) reach each check;
  every operation, in positive and negative mode, with the coverage phase's boundary cases;
* hypothesis strategies for query bodies that JSON Schema cannot express: NaN, Infinity,
  integers past any float, nested junk, wrong types, very long and odd unicode strings, and
  bodies that are not JSON at all (deep nesting, invalid UTF-8, a 5000-digit number).

Each request goes out with one role's token (analyst, owner, viewer, auditor), a bad token
or none, and its answer must hold: no 5xx; JSON; every 4xx is ``{"error": {"code",
"message"}}``; no traceback, file path or data value (the generator's canaries) anywhere;
and no budget spent unless a fresh release came back: the caller's ``spent`` moves by
exactly the release's epsilon or not at all, and at the end the audit log's released
epsilon per user equals the sum over the fresh releases this module received.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import pytest
import requests
import schemathesis
from conftest import ALICE, AUDREY, OLIVIA, VICTOR, ServiceProcess, policy_copy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pdebug_jupyter
from pdebug_jupyter.query import BUILDERS
from pdebug_jupyter.service.openapi import openapi

MAX_EPSILON = 2.0  # per query: keeps the fuzz's own spending far from the budget
SEED = 20261205
#: (user the ledger charges, Authorization header); the roles that spend come up most
CALLERS = [("alice", f"token {ALICE}"), ("olivia", f"token {OLIVIA}"),
           ("victor", f"Bearer {VICTOR}"), ("alice", f"Bearer {ALICE}"),
           ("olivia", f"token {OLIVIA}"), ("audrey", f"token {AUDREY}"), (None, None),
           ("alice", f"token {ALICE}"), (None, "token not-a-token"), (None, f"Basic {ALICE}")]
TOKENS = {"alice": ALICE, "olivia": OLIVIA, "victor": VICTOR, "audrey": AUDREY}
#: markers of a Python traceback; an error message may hold one only by echoing the request
MARKERS = ("Traceback", 'File "', ".py", "line ")
#: the same, as they would stand in a traceback (a path starts where a run of path
#: characters starts: otherwise a long run of them costs quadratic time to search)
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"]*", line \d+'
                       r'|(?<![\w/\\-])[\w/\\-]+\.py\b')
MAX_MESSAGE = 1000  # an error message quotes the request only in part


@dataclass
class Fuzz:
    """The service under fuzz and what it has released so far."""

    service: ServiceProcess
    schema: dict[str, Any]  # the dataset's public schema
    canaries: re.Pattern[str]
    paths: tuple[str, ...]  # directories that no answer may name
    session: requests.Session = field(default_factory=requests.Session)
    fresh: Counter[str] = field(default_factory=Counter)  # user -> epsilon of fresh releases
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.session.trust_env = False  # no proxy lookup per request: loopback only

    def spent(self, user: str) -> float:
        r = self.session.get(self.service.url + "/budget",
                             headers={"Authorization": f"token {TOKENS[user]}"}, timeout=60)
        assert r.status_code == 200, r.text
        return float(r.json()["datasets"]["loans"]["spent"])

    def exchange(self, label: str, method: str, path: str, user: str | None, send: Any
                 ) -> requests.Response:
        """Send one request through ``send()`` and check its answer and the budget."""
        spends = method == "POST" and path.endswith(("/query", "/cost"))
        watch = spends and user in ("alice", "olivia")  # the roles that read their budget
        before = self.spent(user) if watch and user else 0.0
        response: requests.Response = send()
        self.check(response)
        fresh = (spends and path.endswith("/query") and response.status_code == 200
                 and not response.json()["cached"])
        epsilon = float(response.json()["epsilon"]) if fresh else 0.0
        if fresh:
            assert user is not None
            self.fresh[user] += epsilon
        if watch and user:
            assert self.spent(user) == pytest.approx(before + epsilon, abs=1e-9), (
                f"{method} {path} -> {response.status_code} changed the budget by the wrong "
                f"amount: {response.text[:300]}")
        self.statuses[(label, response.status_code)] += 1
        return response

    def check(self, response: requests.Response) -> None:
        status, text = response.status_code, response.text
        request = response.request
        assert status < 500, f"{request.method} {request.url} -> {status}: {text[:300]}"
        assert response.headers["Content-Type"].startswith("application/json"), text[:300]
        body = response.json()
        if status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            assert isinstance(error, dict), f"a {status} without an error object: {text[:300]}"
            assert isinstance(error["code"], str) and error["code"], text[:300]
            assert isinstance(error["message"], str) and error["message"], text[:300]
            assert len(error["message"]) <= MAX_MESSAGE, error["message"][:300]
            sent = _sent(request)
            echoed = [m for m in MARKERS if m in error["message"] and m not in sent]
            assert not echoed, f"traceback marker {echoed} in {error['message'][:300]!r}"
        found = TRACEBACK.search(text)
        assert found is None or found.group() in _sent(request), f"traceback text: {found}"
        assert not [p for p in self.paths if p in text], "a file path in the answer"
        leaked = self.canaries.search(text)
        assert leaked is None, f"a data value (canary {leaked.group()!r}) in the answer"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _sent(request: requests.PreparedRequest) -> str:
    """Everything the request said, as text: what an error message may echo back."""
    raw = request.body or b""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError):
        decoded = None
    return "\n".join([unquote(request.url or ""), text, *_strings(decoded)])


def trie_pattern(words: list[str]) -> str:
    """One regular expression for many literals, branching one character at a time: a flat
    alternation of 1000 canaries tries each at every position, which costs seconds here."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict[str, Any]) -> str:
        alternatives = [re.escape(ch) + pattern(child) for ch, child in sorted(node.items()) if ch]
        if not alternatives:
            return ""
        group = alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"
        return f"(?:{group})?" if "" in node else group

    return pattern(trie)


@pytest.fixture(scope="module")
def fuzz(loans: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    directory = tmp_path_factory.mktemp("fuzz")
    policy = policy_copy(loans, directory, epsilon_per_user=1e6, epsilon_total=4e6)
    text = policy.read_text().replace(
        "min_cohort = ", f"max_epsilon_per_query = {MAX_EPSILON}\nmin_cohort = ", 1)
    policy.write_text(text)
    service = ServiceProcess(policy)
    try:
        schema = service.call("GET", "/datasets/loans", OLIVIA).json()
        assert schema["max_epsilon_per_query"] == MAX_EPSILON
        values = [c for c in loans.canaries.read_text().splitlines() if c]
        assert len(values) == 1000
        canaries = re.compile(trie_pattern(values))
        paths = (str(directory), str(loans.data.parent), sys.prefix,
                 str(Path(pdebug_jupyter.__file__).parent))
        yield Fuzz(service, schema, canaries, paths)
    finally:
        service.stop()


def assert_ledger_agrees(fuzz: Fuzz) -> None:
    """The audit log charges exactly the fresh releases seen, and a refusal nothing."""
    rows: list[dict[str, Any]] = []
    while True:
        after = rows[-1]["seq"] if rows else 0
        page = fuzz.service.call("GET", f"/audit?after={after}&limit=10000", AUDREY).json()
        rows += page["audit"]
        if len(page["audit"]) < 10000:
            break
    released: Counter[str] = Counter()
    for row in rows:
        if row["outcome"] == "released":
            released[row["user"]] += row["epsilon"]
        elif row["action"] != "grant":
            assert row["epsilon"] == 0, row
    assert set(released) == {u for u, e in fuzz.fresh.items() if e}
    for user, epsilon in fuzz.fresh.items():
        assert released[user] == pytest.approx(epsilon, abs=1e-9), user
    for user in ("alice", "olivia"):
        assert fuzz.spent(user) == pytest.approx(fuzz.fresh[user], abs=1e-9)
    assert fuzz.service.call("GET", "/audit/verify", AUDREY).json()["ok"] is True


# -- schemathesis over /openapi.json ----------------------------------------------------------


def narrowed(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The service's document with the dataset's public names filled in: generated bodies
    then name real columns and categories (negative mode still breaks them)."""
    columns = [c["name"] for c in schema["columns"]]
    categories = sorted({v for c in schema["columns"] for v in c.get("categories", ())})
    parts = document["components"]["schemas"]
    parts["Column"] = {"type": "string", "enum": columns}
    parts["Category"] = {"enum": [*categories, 0, 1, True]}
    parts["Epsilon"] = {"type": "number", "minimum": 1e-6,
                        "maximum": schema["max_epsilon_per_query"]}
    for item in document["paths"].values():
        for op in item.values():
            for param in op.get("parameters", ()):
                if param["name"] == "name":
                    param["schema"] = {"type": "string", "enum": ["loans"]}
    return document


@pytest.fixture(scope="module")
def api_schema(fuzz: Fuzz) -> schemathesis.BaseSchema:
    document = fuzz.service.call("GET", "/openapi.json").json()
    assert document == openapi(pdebug_jupyter.__version__)
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"mode": "all", "deterministic": True, "database": "none",
                       "with-security-parameters": False},
    })
    loaded = schemathesis.openapi.from_dict(narrowed(document, fuzz.schema), config=config)
    return loaded


def call(fuzz: Fuzz, case: schemathesis.Case, caller: tuple[str | None, str | None]) -> None:
    """One generated case, as ``caller``; schemathesis checks the answer against the
    document too (status codes, content types, response schemas, negative data refused)."""
    user, header = caller
    case.headers = {k: v for k, v in (case.headers or {}).items()
                    if k.lower() != "authorization"}
    if header is not None:
        case.headers["Authorization"] = header
    kwargs = case.as_transport_kwargs(base_url=fuzz.service.url)
    response = fuzz.exchange(case.operation.label, case.method.upper(), case.formatted_path,
                             user, lambda: fuzz.session.request(**kwargs, timeout=120))
    case.validate_response(response, checks=CHECKS)


OPERATIONS = [f"{m.upper()} {p}" for p, item in openapi("x")["paths"].items() for m in item]
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance,
          schemathesis.checks.response_schema_conformance,
          schemathesis.checks.negative_data_rejection]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
COVERAGE_CASES = 80  # at most, per operation: a fixed stride through the boundary cases
#: generated cases per operation; the bodies get more
FUZZED_CASES = {"POST /datasets/{name}/query": 40, "POST /datasets/{name}/cost": 25,
                "POST /grants": 25}


@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_answers_every_caller_with_a_clean_4xx_or_a_release(
        label: str, api_schema: schemathesis.BaseSchema, fuzz: Fuzz) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None
    # the coverage phase: each constraint at its boundary and just past it, every unexpected
    # method; callers take turns
    generation = api_schema.config.generation_for(operation=operation, phase="coverage")
    cases = list(api_schema.iter_coverage_cases(operation, generation_modes=MODES,
                                                generation_config=generation))
    for i, case in enumerate(cases[::math.ceil(len(cases) / COVERAGE_CASES)]):
        call(fuzz, case, CALLERS[i % len(CALLERS)])

    @given(case=st.one_of([operation.as_strategy(generation_mode=m) for m in MODES]),
           caller=st.sampled_from(CALLERS))
    @settings(max_examples=FUZZED_CASES.get(label, 8), derandomize=True, database=None,
              deadline=None, suppress_health_check=list(HealthCheck))
    def fuzzed(case: schemathesis.Case, caller: tuple[str | None, str | None]) -> None:
        call(fuzz, case, caller)

    fuzzed()
    assert_ledger_agrees(fuzz)
    if label.startswith("POST /datasets"):  # generation reached every outcome
        assert {status for (op, status) in fuzz.statuses if op == label} >= {
            200, 400, 401, 403, 422}


# -- hypothesis strategies for what JSON Schema cannot say ------------------------------------

QUERY, COST = "/datasets/loans/query", "/datasets/loans/cost"
#: bodies that are not JSON objects, or that only Python's parser would take
RAW_BODIES = [
    b"", b"null", b"[]", b'"kind"', b"{", b"\xff\xfe{}", b"\x00", "{}".encode("utf-16"),
    b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"kind": "histogram", "column": "age", "epsilon": ' + b"1" * 5000 + b"}",
    b'{"kind": "histogram", "column": "age", "epsilon": 1' + b"0" * 400 + b"}",
    b'{"kind": "histogram", "column": "age", "epsilon": 1e400}',
    b'{"kind": "histogram", "column": "age", "epsilon": NaN}',
    b'{"kind": "histogram", "column": "age", "epsilon": -Infinity}',
    b'{"kind": "histogram", "column": "\\ud800", "epsilon": 0.5}',
    b'{"kind": "histogram", "kind": "nope", "column": "age", "epsilon": 0.5}',
    b'{"kind": "histogram", "column": "age", "epsilon": 0.5, "bins": ' + b"9" * 4000 + b"}",
]
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(),
    st.sampled_from([0, -0.0, -1, 1e-7, 1e-6, 0.5, 1, MAX_EPSILON, MAX_EPSILON * 1.0001,
                     1e308, 10**30, 10**400, -(10**400), 2**63, 2**64 + 1]))
JUNK = st.recursive(
    st.none() | st.booleans() | NUMBERS | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12)
ODD_NAMES = ["", " ", "AGE", "age ", "äge", "age\x00", "sample", "other", "x" * 10_000,
             "' OR 1=1 --", '"; DROP TABLE audit; --', "../../etc/passwd", "%s%n", "\u202eega",
             "🙂" * 50, "\ud7ff"]


def valid_parameters(schema: dict[str, Any]) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """Per kind, parameters the policy accepts (the policy declares no attribution column, so
    ``attribution`` is refused whatever it is given)."""
    kinds = {c["name"]: c["kind"] for c in schema["columns"]}
    groups = [n for n, k in kinds.items() if k in ("protected", "categorical", "split", "label")]
    axes = [n for n, k in kinds.items() if k in ("numeric", "score")] + groups
    by = st.one_of(st.just({}), st.builds(lambda b: {"by": b}, st.sampled_from(groups)),
                   st.builds(lambda b: {"by": b}, st.lists(st.sampled_from(groups),
                                                           max_size=2, unique=True)))
    bins = st.one_of(st.just({}), st.builds(lambda n: {"bins": n}, st.integers(1, 40)))
    where = st.one_of(st.just({}), st.builds(lambda v: {"where": {"sex": v}},
                                             st.sampled_from(["female", ["male"]])))
    scored = st.builds(lambda *ps: {k: v for p in ps for k, v in p.items()}, by, bins, where)
    return {
        "histogram": st.builds(lambda c, b, w: {"column": c, **b, **w},
                               st.sampled_from(axes), by, where),
        "calibration": scored,
        "confusion": scored,
        "drift": st.builds(lambda cs: {"reference": {"window": "reference"},
                                       "current": {"window": ["current"]}, "columns": cs},
                           st.lists(st.sampled_from(["age", "income", "region", "sex"]),
                                    min_size=1, max_size=3, unique=True)),
        "cohort_errors": st.builds(lambda fs, t: {"features": fs, "threshold": t},
                                   st.lists(st.sampled_from(groups[:2] + ["age"]), min_size=1,
                                            max_size=2, unique=True),
                                   st.floats(0.05, 1.0)),
        "attribution": st.just({}),
        "performance_estimate": bins,
        "marginals": st.builds(lambda cs: {"columns": cs}, st.lists(
            st.sampled_from(axes), min_size=1, max_size=3, unique=True)),
    }


PARAMETER_NAMES = ["column", "columns", "by", "bins", "where", "reference", "current",
                   "features", "score", "label", "prediction", "threshold"]


@st.composite
def query_bodies(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    """A valid body of a random kind, then up to three mutations: a value swapped for junk, an
    odd name or a number (NaN, infinities, integers past any float), a key dropped or added,
    another kind; sometimes no body at all, just junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JUNK)
    kind = draw(st.sampled_from(sorted(BUILDERS)))
    body = {"kind": kind, "epsilon": draw(st.floats(1e-3, MAX_EPSILON)),
            **draw(valid_parameters(schema)[kind])}
    columns = [c["name"] for c in schema["columns"]]
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(["kind", "epsilon", *sorted(body), *PARAMETER_NAMES,
                                    "", "__proto__"]))
        how = draw(st.sampled_from(["junk", "name", "names", "number", "drop", "long"]))
        if how == "drop":
            body.pop(key, None)
        elif how == "long":
            body[key] = "x" * 100_000
        elif how == "number":
            body[key] = draw(NUMBERS)
        elif how == "name":
            body[key] = draw(st.sampled_from(columns + ODD_NAMES) | st.text(max_size=30))
        elif how == "names":
            body[key] = draw(st.lists(st.sampled_from(columns + ODD_NAMES), max_size=14))
        else:
            body[key] = draw(JUNK)
    return body


def send(fuzz: Fuzz, method: str, path: str, caller: tuple[str | None, str | None],
         data: bytes | None = None) -> requests.Response:
    user, header = caller
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    url = fuzz.service.url + path
    return fuzz.exchange(f"{method} {path.split('?')[0]}", method, path.split("?")[0], user,
                         lambda: fuzz.session.request(method, url, data=data, headers=headers,
                                                      timeout=120))


def test_odd_query_bodies_get_a_clean_4xx_or_a_release_and_spend_only_then(
        fuzz: Fuzz) -> None:
    for i, raw in enumerate(RAW_BODIES):
        for path in (QUERY, COST):
            r = send(fuzz, "POST", path, CALLERS[i % 2], raw)
            assert r.status_code in (400, 422), r.text[:300]

    @given(body=query_bodies(fuzz.schema), caller=st.sampled_from(CALLERS),
           path=st.sampled_from([QUERY, QUERY, COST, "/datasets/nope/query"]))
    @settings(max_examples=100, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    def fuzzed(body: Any, caller: tuple[str | None, str | None], path: str) -> None:
        send(fuzz, "POST", path, caller, json.dumps(body, allow_nan=True).encode())

    fuzzed()
    assert_ledger_agrees(fuzz)
    assert {s for (op, s) in fuzz.statuses if op == f"POST {QUERY}"} >= {200, 400, 403, 422}


GRANT_FIELDS = {"user": st.one_of(st.sampled_from(["alice", "victor", "x" * 129]), JUNK),
                "dataset": st.one_of(st.sampled_from(["loans", "nope"]), JUNK),
                "epsilon": NUMBERS | JUNK, "ttl": NUMBERS | JUNK,
                "role": st.one_of(st.sampled_from(["analyst", "owner", "root"]), JUNK),
                "purpose": st.one_of(st.sampled_from(["audit", " ", "p" * 501]), JUNK),
                "expires_at": st.one_of(st.sampled_from(
                    ["2030-01-31T18:00:00", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00Z",
                     "yesterday"]), JUNK)}
PARAMETERS = st.one_of(st.sampled_from(["²", "١٢", "0" * 30, "9" * 5000, "-1", " 1", "1e3",
                                        "0x10", "\x00", "1" * 25]), st.text(max_size=12))


def test_odd_grants_and_filters_get_a_clean_4xx_or_an_answer(fuzz: Fuzz) -> None:
    for raw in RAW_BODIES[:10]:
        assert send(fuzz, "POST", "/grants", CALLERS[1], raw).status_code == 400

    @given(body=st.one_of(st.fixed_dictionaries({}, optional=GRANT_FIELDS), JUNK),
           caller=st.sampled_from(CALLERS))
    @settings(max_examples=40, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    def grants(body: Any, caller: tuple[str | None, str | None]) -> None:
        send(fuzz, "POST", "/grants", caller, json.dumps(body, allow_nan=True).encode())

    @given(path=st.sampled_from(["/releases", "/audit", "/grants"]), caller=st.sampled_from(
        CALLERS), query=st.dictionaries(st.sampled_from(["limit", "after", "user", "dataset",
                                                           "active"]), PARAMETERS, min_size=1))
    @settings(max_examples=40, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    def filters(path: str, caller: tuple[str | None, str | None], query: dict[str, str]
                ) -> None:
        send(fuzz, "GET", f"{path}?{urlencode(query)}", caller)

    grants()
    filters()
    assert_ledger_agrees(fuzz)


# -- what the fuzz found, pinned --------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = b"1" + b"0" * 400  # an integer no float holds
LONG = "x" * 100_000
#: (method, path, caller, body, status, code): each was a 500 before its fix, or for the long
#: names an error message that echoed all 100,000 characters
FOUND = [
    ("POST", QUERY, 0, b'{"kind": "histogram", "column": "age", "epsilon": ' + HUGE + b"}",
     422, "invalid_epsilon"),
    ("POST", QUERY, 0, b'{"kind": "histogram", "column": "age", "epsilon": ' + b"1" * 5000
     + b"}", 400, "malformed"),
    ("POST", COST, 0, DEEP, 400, "malformed"),
    ("POST", "/grants", 1, DEEP, 400, "invalid_grant"),
    ("POST", "/grants", 1, b'{"user": "alice", "dataset": "loans", "purpose": "p", "ttl": 60, '
     b'"epsilon": ' + HUGE + b"}", 400, "invalid_grant"),
    ("POST", "/grants", 1, b'{"user": "alice", "dataset": "loans", "purpose": "p", "epsilon": 1, '
     b'"ttl": ' + HUGE + b"}", 400, "invalid_grant"),
    ("POST", "/grants", 1, b'{"user": "alice", "dataset": "loans", "purpose": "p", "ttl": 60, '
     b'"role": ["analyst"]}', 400, "invalid_grant"),
    ("GET", "/releases?limit=%C2%B2", 0, None, 400, "invalid_parameter"),  # "²".isdigit()
    ("GET", "/audit?after=" + "9" * 5000, 1, None, 400, "invalid_parameter"),
    ("POST", QUERY, 0, json.dumps({"kind": "histogram", "column": LONG, "epsilon": 1}).encode(),
     422, "unknown_column"),
    ("POST", COST, 0, json.dumps({"kind": LONG, "epsilon": 1}).encode(), 422, "unknown_kind"),
    ("POST", COST, 0, json.dumps({"kind": "marginals", "epsilon": 1, **dict.fromkeys(
        map(str, range(10_000)))}).encode(), 422, "invalid_parameter"),
    ("POST", "/grants", 1, json.dumps({LONG: 1}).encode(), 400, "invalid_grant"),
]


@pytest.mark.parametrize(("method", "path", "caller", "body", "status", "code"), FOUND)
def test_inputs_that_once_crashed_the_service_get_a_clean_4xx(
        fuzz: Fuzz, method: str, path: str, caller: int, body: bytes | None, status: int,
        code: str) -> None:
    r = send(fuzz, method, path, CALLERS[caller], body)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text[:300]


def test_a_null_parameter_means_its_default(fuzz: Fuzz) -> None:
    """``null`` once meant the default for most parameters, but an error for ``threshold``
    and the policy's bins instead of 20 for ``performance_estimate``; an unknown key is
    refused even when it is null."""
    for body, nulls in [({"kind": "performance_estimate"}, ("bins", "score", "where")),
                        ({"kind": "cohort_errors", "features": ["region"]},
                         ("threshold", "score", "label", "prediction")),
                        ({"kind": "histogram", "column": "age"}, ("bins", "by"))]:
        answers = [send(fuzz, "POST", COST, CALLERS[0], json.dumps(
            {**b, "epsilon": 0.5}).encode()) for b in (body, {**body, **dict.fromkeys(nulls)})]
        assert [a.status_code for a in answers] == [200, 200], answers[1].text[:300]
        assert answers[0].json()["parts"] == answers[1].json()["parts"]
    unknown = send(fuzz, "POST", COST, CALLERS[0], b'{"kind": "histogram", "column": "age", '
                   b'"epsilon": 0.5, "bin": null}')
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "invalid_parameter")


def test_the_checks_catch_a_5xx_a_bare_4xx_a_traceback_a_path_and_a_canary(
        fuzz: Fuzz, loans: Any) -> None:
    def answer(status: int, body: Any, sent: bytes = b"{}") -> requests.Response:
        r = requests.Response()
        r.status_code, r._content = status, json.dumps(body).encode()
        r.headers["Content-Type"] = "application/json; charset=utf-8"
        r.request = requests.Request("POST", fuzz.service.url + QUERY, data=sent).prepare()
        return r

    def error(message: str) -> dict[str, Any]:
        return {"error": {"code": "invalid_parameter", "message": message}}

    canary = loans.canaries.read_text().splitlines()[1]
    bad = [answer(500, error("internal")), answer(422, {"detail": "no"}),
           answer(422, error('File "/srv/x/spec.py", line 3, in column')),
           answer(200, {"provenance": {"source": str(loans.data)}}),
           answer(200, {"cells": [{"name": canary}]}), answer(422, error("x" * 1001))]
    for r in bad:
        with pytest.raises(AssertionError):
            fuzz.check(r)
    # the caller's own words may come back
    fuzz.check(answer(422, error("unknown column 'line 7.py'"), b'{"column": "line 7.py"}'))
