"""Black-box tests of the service over HTTP: releases, cache, budget, refusals, roles, ledger."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ALICE, AUDREY, OLIVIA, VICTOR, ServiceProcess, policy_copy

from pdebug_jupyter.service.app import ROUTES, Health

AGE_LABELS = ["[18, 25)", "[25, 35)", "[35, 45)", "[45, 55)", "[55, 65)", "[65, 90]", "other"]


def test_histogram_release_covers_exactly_the_declared_domain(service: ServiceProcess) -> None:
    r = service.query({"kind": "histogram", "column": "age", "by": "sex", "epsilon": 0.5})
    assert r.status_code == 200, r.text
    rel = r.json()
    assert rel["cached"] is False and rel["epsilon"] == 0.5
    assert [p["name"] for p in rel["parts"]] == ["histogram"]
    assert rel["parts"][0]["dims"][0]["labels"] == AGE_LABELS
    assert rel["parts"][0]["dims"][1]["labels"] == ["female", "male", "other"]
    keys = [(c["age"], c["sex"]) for c in rel["cells"]]
    assert keys == [(a, s) for a in AGE_LABELS for s in ("female", "male", "other")]
    for cell in rel["cells"]:
        assert cell["count"] is None or isinstance(cell["count"], int)
    # the planted out-of-domain sexes land in "other"; the age "other" cells are empty but
    # still released (here: suppressed, with the reason)
    hidden = {(c["age"], c["sex"]) for c in rel["suppressed"]}
    assert all(c["reason"].startswith("noisy count below") for c in rel["suppressed"])
    assert all((c["count"] is None) == ((c["age"], c["sex"]) in hidden) for c in rel["cells"])
    assert rel["mechanism"].startswith("two-sided geometric")
    assert rel["noise_scale"] == pytest.approx(1 / 0.5)
    assert service.spent() == pytest.approx(0.5)
    prov = rel["provenance"]
    assert prov["user"] == "alice" and prov["epsilon"] == 0.5 and prov["threshold"] == 25
    assert prov["model_version"] and prov["fingerprint"] and prov["policy_hash"]


def test_repeated_query_is_free_and_identical(service: ServiceProcess) -> None:
    first = service.query({"kind": "histogram", "column": "region", "by": ["sex"],
                           "where": {"window": ["current"]}, "epsilon": 0.25}).json()
    raw = (b'{ "epsilon" : 0.25,\n  "where": {"window": "current"},  "by": "sex",'
           b' "column": "region", "kind": "histogram" }')
    again = service.call("POST", "/datasets/loans/query", data=raw)
    assert again.status_code == 200, again.text
    second = again.json()
    assert second["cached"] is True
    assert second["release_id"] == first["release_id"]
    assert second["cells"] == first["cells"]
    assert second["budget"]["spent"] == pytest.approx(0.25)
    assert service.spent() == pytest.approx(0.25)
    cost = service.call("POST", "/datasets/loans/cost", body={
        "kind": "histogram", "column": "region", "by": "sex", "where": {"window": "current"},
        "epsilon": 0.25}).json()
    assert cost["cached"] is True and cost["epsilon"] == 0.0


def test_exhausting_the_budget_refuses_and_spends_nothing(service: ServiceProcess) -> None:
    assert service.query({"kind": "histogram", "column": "age", "epsilon": 4.5}).status_code == 200
    r = service.query({"kind": "histogram", "column": "income", "epsilon": 1.0})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "budget_exceeded"
    assert service.spent() == pytest.approx(4.5)
    cost = service.call("POST", "/datasets/loans/cost",
                        body={"kind": "histogram", "column": "income", "epsilon": 1.0}).json()
    assert cost["affordable"] is False
    audit = service.call("GET", "/audit", OLIVIA).json()["audit"]
    assert [a["outcome"] for a in audit] == ["released", "refused"]
    assert audit[1]["detail"] == "budget_exceeded" and audit[1]["epsilon"] == 0.0


def test_dataset_wide_cap_binds_across_users(loans: Any, tmp_path: Path) -> None:
    svc = ServiceProcess(policy_copy(loans, tmp_path, epsilon_per_user=3.0, epsilon_total=4.0))
    try:
        assert svc.query({"kind": "histogram", "column": "age", "epsilon": 3.0}).status_code == 200
        r = svc.query({"kind": "histogram", "column": "age", "epsilon": 1.5}, token=OLIVIA)
        assert r.status_code == 403 and r.json()["error"]["code"] == "budget_exceeded"
        ok = svc.query({"kind": "histogram", "column": "age", "epsilon": 1.0}, token=OLIVIA)
        assert ok.status_code == 200
        assert ok.json()["budget"]["dataset_spent"] == pytest.approx(4.0)
    finally:
        svc.stop()


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("not json", b"{kind: histogram", 400, "malformed"),
    ("not an object", b"[1, 2]", 400, "malformed"),
    ("NaN epsilon", b'{"kind": "histogram", "column": "age", "epsilon": NaN}', 400, "malformed"),
    ("Infinity epsilon", b'{"kind": "histogram", "column": "age", "epsilon": Infinity}', 400,
     "malformed"),
    ("unknown kind", {"kind": "rows", "epsilon": 1}, 422, "unknown_kind"),
    ("no kind", {"column": "age", "epsilon": 1}, 422, "unknown_kind"),
    ("unknown column", {"kind": "histogram", "column": "salary", "epsilon": 1}, 422,
     "unknown_column"),
    ("undeclared column", {"kind": "histogram", "column": "name_upper", "epsilon": 1}, 422,
     "unknown_column"),
    ("negative epsilon", {"kind": "histogram", "column": "age", "epsilon": -1}, 422,
     "invalid_epsilon"),
    ("zero epsilon", {"kind": "histogram", "column": "age", "epsilon": 0}, 422, "invalid_epsilon"),
    ("huge epsilon", {"kind": "histogram", "column": "age", "epsilon": 1e300}, 422,
     "invalid_epsilon"),
    ("string epsilon", {"kind": "histogram", "column": "age", "epsilon": "1"}, 422,
     "invalid_epsilon"),
    ("missing epsilon", {"kind": "histogram", "column": "age"}, 422, "invalid_epsilon"),
    ("absurd bins", {"kind": "histogram", "column": "income", "bins": 10**9, "epsilon": 1}, 422,
     "invalid_parameter"),
    ("zero bins", {"kind": "histogram", "column": "income", "bins": 0, "epsilon": 1}, 422,
     "invalid_parameter"),
    ("bins on a category", {"kind": "histogram", "column": "sex", "bins": 3, "epsilon": 1}, 422,
     "invalid_parameter"),
    ("too many cells", {"kind": "histogram", "column": "income", "bins": 500,
                        "by": ["age", "region", "score"], "epsilon": 1}, 422, "invalid_parameter"),
    ("identifier column", {"kind": "histogram", "column": "customer_id", "epsilon": 1}, 403,
     "forbidden_column"),
    ("identifier group", {"kind": "histogram", "column": "age", "by": "email", "epsilon": 1}, 403,
     "forbidden_column"),
    ("identifier filter", {"kind": "histogram", "column": "age", "where": {"ssn": "x"},
                           "epsilon": 1}, 403, "forbidden_column"),
    ("numeric filter", {"kind": "histogram", "column": "age", "where": {"income": 5},
                        "epsilon": 1}, 422, "invalid_parameter"),
    ("value outside domain", {"kind": "histogram", "column": "age",
                              "where": {"region": "central"}, "epsilon": 1}, 422,
     "invalid_parameter"),
    ("unknown parameter", {"kind": "histogram", "column": "age", "limit": 5, "epsilon": 1}, 422,
     "invalid_parameter"),
    ("same column twice", {"kind": "histogram", "column": "age", "by": "age", "epsilon": 1}, 422,
     "invalid_parameter"),
]


@pytest.fixture(scope="module")
def refusals(loans: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    svc = ServiceProcess(policy_copy(loans, tmp_path_factory.mktemp("refusals")))
    yield svc
    svc.stop()


@pytest.mark.parametrize("endpoint", ["query", "cost"])
@pytest.mark.parametrize(("case", "body", "status", "code"), BAD_BODIES,
                         ids=[b[0] for b in BAD_BODIES])
def test_bad_input_gets_a_clear_4xx_spends_nothing_and_is_audited(
        refusals: ServiceProcess, endpoint: str, case: str, body: Any, status: int,
        code: str) -> None:
    before = len(refusals.call("GET", "/audit", OLIVIA, purpose="t").json()["audit"])
    kw = {"data": body} if isinstance(body, bytes) else {"body": body}
    r = refusals.call("POST", f"/datasets/loans/{endpoint}", **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert len(err["message"]) > 10 and "Traceback" not in r.text
    assert refusals.spent() == 0.0
    audit = refusals.call("GET", "/audit", OLIVIA).json()["audit"]
    assert len(audit) == before + 1
    assert audit[-1]["outcome"] == "refused" and audit[-1]["detail"] == code
    assert audit[-1]["user"] == "alice" and audit[-1]["epsilon"] == 0.0


def test_unknown_dataset_and_endpoint_are_404_json(refusals: ServiceProcess) -> None:
    r = refusals.query({"kind": "histogram", "column": "age", "epsilon": 1}, dataset="nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_dataset"
    r = refusals.call("GET", "/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def _concrete(path: str) -> str:
    return path.replace("([A-Za-z0-9_.-]+)", "loans").replace("([A-Za-z0-9_-]+)", "r-0")


@pytest.mark.parametrize("header", [None, "token wrong-token-000000", "Bearer nope", "token ",
                                    f"basic {ALICE}"])
def test_no_endpoint_but_health_answers_without_a_valid_token(
        shared_service: ServiceProcess, header: str | None) -> None:
    for path, handler in ROUTES:
        for method in ("GET", "POST"):
            headers = {"Authorization": header} if header else {}
            r = requests.request(method, shared_service.url + _concrete(path), headers=headers,
                                 json={"kind": "histogram", "column": "age", "epsilon": 1},
                                 timeout=30)
            if handler is Health:
                assert r.status_code in (200, 405)
                continue
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"


def _documented(path: str) -> str:
    return re.sub(r"\{(release_id|grant_id)\}", "r-0", path.replace("{name}", "loans"))


def test_every_handler_but_health_is_authenticated_and_documented() -> None:
    from pdebug_jupyter.service.openapi import openapi

    spec = openapi("x")["paths"]
    documented = {_documented(p) for p in spec}
    assert {_concrete(p) for p, _ in ROUTES} == documented
    for path, handler in ROUTES:
        assert handler.public == (handler is Health), path
        for op in spec[next(p for p in spec if _concrete(path) == _documented(p))].values():
            assert (op["security"] == []) == (handler is Health)


def test_roles_viewer_cannot_spend_auditor_reads_audit_only(service: ServiceProcess) -> None:
    body = {"kind": "histogram", "column": "region", "epsilon": 0.1}
    made = service.query(body, token=OLIVIA)
    assert made.status_code == 200
    for token, endpoint in [(VICTOR, "query"), (VICTOR, "cost"), (AUDREY, "query")]:
        r = service.call("POST", f"/datasets/loans/{endpoint}", token, body=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert service.spent(OLIVIA) == pytest.approx(0.1)
    assert service.call("GET", "/datasets", VICTOR).status_code == 403
    listed = service.call("GET", "/releases", VICTOR).json()["releases"]
    assert [r["release_id"] for r in listed] == [made.json()["release_id"]]
    one = service.call("GET", f"/releases/{made.json()['release_id']}", VICTOR).json()
    assert one["cells"] == made.json()["cells"]
    assert service.call("GET", "/audit", VICTOR).status_code == 403
    assert service.call("GET", "/audit", ALICE).status_code == 403
    assert service.call("GET", "/releases", AUDREY).status_code == 403
    assert service.call("GET", "/audit", AUDREY).status_code == 200
    assert service.call("GET", "/audit/verify", AUDREY).json()["ok"] is True
    me = service.call("GET", "/me", VICTOR).json()
    assert me == {"user": "victor", "role": "viewer", "permissions": ["read_releases"]}


def test_ledger_survives_a_restart_and_sigterm_stops_cleanly(service: ServiceProcess) -> None:
    body = {"kind": "histogram", "column": "income", "by": "window", "epsilon": 0.75}
    first = service.query(body).json()
    assert service.stop() == 0
    service.start()
    assert service.spent() == pytest.approx(0.75)
    again = service.query(body).json()
    assert again["cached"] is True and again["release_id"] == first["release_id"]
    assert again["cells"] == first["cells"]
    assert service.spent() == pytest.approx(0.75)
    verify = service.call("GET", "/audit/verify", OLIVIA).json()
    assert verify == {"ok": True, "rows": 2, "first_bad_seq": None}


def test_audit_verify_fails_after_a_row_is_edited(service: ServiceProcess) -> None:
    for eps in (0.1, 0.2, 0.3):
        service.query({"kind": "histogram", "column": "age", "epsilon": eps})
    assert service.call("GET", "/audit/verify", OLIVIA).json()["ok"] is True
    assert service.stop() == 0
    db = sqlite3.connect(service.policy.parent / "ledger.sqlite")
    db.execute("UPDATE audit SET epsilon = 0.0 WHERE seq = 2")
    db.commit()
    db.close()
    service.start()
    verify = service.call("GET", "/audit/verify", OLIVIA).json()
    assert verify["ok"] is False and verify["first_bad_seq"] == 2


def test_sixteen_concurrent_clients_never_overspend(service: ServiceProcess) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        r = service.query({"kind": "histogram", "column": "income", "bins": i + 1,
                           "epsilon": 1.0})
        with lock:
            results.append(r.status_code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] * 5 + [403] * 11
    assert service.spent() == pytest.approx(5.0)
    releases = service.call("GET", "/releases", OLIVIA).json()["releases"]
    assert len(releases) == 5


def test_concurrent_identical_queries_are_charged_once(service: ServiceProcess) -> None:
    ids: list[str] = []

    def client() -> None:
        r = service.query({"kind": "histogram", "column": "age", "by": "region", "epsilon": 0.5})
        ids.append(r.json()["release_id"])

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 16 and len(set(ids)) == 1
    assert service.spent() == pytest.approx(0.5)


def test_no_row_level_value_or_canary_reaches_any_response(loans: Any,
                                                           shared_service: ServiceProcess) -> None:
    canaries = [c for c in loans.canaries.read_text().splitlines() if c]
    assert len(canaries) > 100
    bodies = [
        shared_service.call("GET", "/datasets").text,
        shared_service.call("GET", "/datasets/loans").text,
        shared_service.query({"kind": "histogram", "column": "age", "by": "sex",
                              "epsilon": 1.0}).text,
        shared_service.query({"kind": "histogram", "column": "email", "epsilon": 1.0}).text,
        shared_service.query({"kind": "histogram", "column": "age", "where": {"name": "x"},
                              "epsilon": 1.0}).text,
        shared_service.call("GET", "/releases", OLIVIA).text,
        shared_service.call("GET", "/audit", OLIVIA).text,
        shared_service.call("GET", "/openapi.json").text,
    ]
    for text in bodies:
        for canary in canaries:
            assert canary not in text
    schema = json.loads(bodies[1])
    assert set(schema) == {"name", "description", "synthetic", "privacy_unit",
                           "max_rows_per_unit", "min_cohort", "model_version", "preprocessing",
                           "max_epsilon_per_query", "columns", "budget"}
    assert {c["name"] for c in schema["columns"]} >= {"age", "sex", "score"}
    assert "bounds" not in next(c for c in schema["columns"] if c["name"] == "customer_id")


def test_health_and_openapi(shared_service: ServiceProcess) -> None:
    assert shared_service.call("GET", "/health", token=None).json()["status"] == "ok"
    spec = shared_service.call("GET", "/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/datasets/{name}/query" in spec["paths"]
