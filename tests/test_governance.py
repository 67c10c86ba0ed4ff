"""Governance: temporary grants that lapse by themselves, budget alerts that fire once per
threshold (in the release, in the audit log and at a webhook), retention purges that keep the
audit chain verifiable, and the ``purge`` / ``audit`` commands on a real ledger."""

from __future__ import annotations

import csv
import json
import logging
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import ALICE, AUDREY, OLIVIA, VICTOR, ServiceProcess, policy_copy

from pdebug_jupyter.ledger import Budget, BudgetExceeded, GrantError, Ledger, Limits
from pdebug_jupyter.service.governance import send_alerts

T0 = 1_800_000_000.0
DAY = 86400.0


class Clock:
    """A clock the test sets by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def commit(led: Ledger, key: str, epsilon: float, limits: Limits, user: str = "alice"
           ) -> tuple[dict[str, Any], bool]:
    def build(release_id: str, at: str, budget: Budget) -> dict[str, Any]:
        return {"release_id": release_id, "created_at": at, "warnings": []}
    return led.commit_release(cache_key=key, user=user, purpose="testing", dataset="loans",
                              kind="histogram", query=key, epsilon=epsilon, fingerprint="fp",
                              limits=limits, build=build)


def actions(led: Ledger, action: str) -> list[dict[str, Any]]:
    return [r for r in led.audit_rows(limit=10_000) if r["action"] == action]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.sqlite", clock=clock)
    yield led
    led.close()


# -- grants on the ledger, with an injected clock ---------------------------------------------

def test_an_epsilon_grant_raises_the_limit_until_it_lapses_and_the_lapse_is_audited_once(
        ledger: Ledger, clock: Clock, tmp_path: Path) -> None:
    limits = Limits(per_user=1.0, total=10.0)
    commit(ledger, "q1", 1.0, limits)
    with pytest.raises(BudgetExceeded):
        commit(ledger, "q2", 0.5, limits)
    g = ledger.grant(user="alice", dataset="loans", epsilon=0.75, role=None,
                     expires_at=T0 + 3600, purpose="quarterly review", granted_by="olivia")
    assert ledger.budget("alice", "loans", limits).limit == 1.75
    assert ledger.budget("bob", "loans", limits).limit == 1.0  # only the grantee
    commit(ledger, "q2", 0.5, limits)
    assert ledger.budget("alice", "loans", limits).remaining == pytest.approx(0.25)

    clock.now = T0 + 3600  # the expiry itself: no longer in force
    after = ledger.budget("alice", "loans", limits)
    assert (after.limit, after.spent, after.remaining, after.granted) == (1.0, 1.5, 0.0, 0.0)
    assert ledger.lapse_grants() == [g]
    assert ledger.lapse_grants() == []
    ledger.close()
    again = Ledger(tmp_path / "ledger.sqlite", clock=clock)  # a restart does not re-lapse
    assert again.lapse_grants() == []
    with pytest.raises(BudgetExceeded):
        commit(again, "q3", 0.1, limits)
    lapsed = actions(again, "grant_lapsed")
    assert len(lapsed) == 1 and json.loads(lapsed[0]["detail"])["grant"] == g.grant_id
    assert [r["user"] for r in actions(again, "grant")] == ["olivia"]
    assert [g.state for g in again.grants()] == ["lapsed"]
    assert again.verify().ok
    again.close()


def test_a_role_grant_is_in_force_until_expiry_and_a_release_writes_its_lapse_first(
        ledger: Ledger, clock: Clock) -> None:
    g = ledger.grant(user="victor", dataset="loans", epsilon=0.0, role="analyst",
                     expires_at=T0 + 60, purpose="incident 42", granted_by="olivia")
    assert ledger.granted_roles("victor", "loans") == {"analyst"}
    assert ledger.granted_roles("victor", "other") == set()
    assert [x.grant_id for x in ledger.grants(in_force=True)] == [g.grant_id]
    clock.now = T0 + 61
    assert ledger.granted_roles("victor", "loans") == set()
    assert ledger.grants(in_force=True) == []
    assert ledger.grants()[0].public(clock.now)["state"] == "lapsed"  # before it is written
    commit(ledger, "q1", 0.1, Limits(1.0, 2.0))  # the release transaction writes the lapse
    rows = ledger.audit_rows()
    assert [r["action"] for r in rows] == ["grant", "grant_lapsed", "query"]
    assert ledger.lapse_grants() == []
    with pytest.raises(GrantError) as ended:
        ledger.revoke(g.grant_id, by="olivia")
    assert ended.value.status == 409


def test_a_revoked_grant_ends_now_and_is_audited(ledger: Ledger, clock: Clock) -> None:
    g = ledger.grant(user="alice", dataset="loans", epsilon=2.0, role=None,
                     expires_at=T0 + 60, purpose="p", granted_by="olivia")
    ended = ledger.revoke(g.grant_id, by="olivia", purpose="done early")
    assert ended.state == "revoked" and ledger.budget("alice", "loans", Limits(1, 5)).limit == 1
    clock.now = T0 + 120
    assert ledger.lapse_grants() == []  # a revoked grant never lapses too
    assert [r["action"] for r in ledger.audit_rows()] == ["grant", "grant_revoked"]
    with pytest.raises(GrantError) as unknown:
        ledger.revoke("g-nope", by="olivia")
    assert unknown.value.status == 404
    with pytest.raises(ValueError, match="future"):
        ledger.grant(user="alice", dataset="loans", epsilon=1.0, role=None,
                     expires_at=T0, purpose="p", granted_by="olivia")


# -- budget alerts on the ledger ---------------------------------------------------------------

def test_alerts_fire_once_per_threshold_in_the_release_transaction_and_not_after_a_restart(
        ledger: Ledger, clock: Clock, tmp_path: Path) -> None:
    limits = Limits(per_user=1.0, total=2.0, alerts=(0.5, 0.8, 1.0))
    warned = []
    for key, eps in [("a", 0.3), ("b", 0.3), ("c", 0.1)]:
        payload, _ = commit(ledger, key, eps, limits)
        warned.append([(w["scope"], w["threshold"]) for w in payload["warnings"]])
    assert warned == [[], [("user", 0.5)], []]
    cached, hit = commit(ledger, "a", 0.3, limits)
    assert hit and cached["warnings"] == []
    ledger.close()
    led = Ledger(tmp_path / "ledger.sqlite", clock=clock)
    payload, _ = commit(led, "d", 0.3, limits)  # 1.0 of alice's, 0.5 of the dataset's
    assert [(w["scope"], w["threshold"]) for w in payload["warnings"]] == [
        ("user", 0.8), ("user", 1.0), ("dataset", 0.5)]
    assert payload["warnings"][0]["message"] == ("80% of your budget on 'loans' is spent "
                                                 "(epsilon 1 of 1)")
    stored = led.release(payload["release_id"])
    assert stored is not None and stored["warnings"] == []  # the cache carries no alerts
    bob, _ = commit(led, "e", 0.7, limits, user="bob")  # 1.7 of 2: dataset 0.8 is bob's
    assert [(w["scope"], w["threshold"]) for w in bob["warnings"]] == [
        ("user", 0.5), ("dataset", 0.8)]
    rows = actions(led, "budget_alert")
    assert [(r["user"], r["outcome"], json.loads(r["detail"])["threshold"]) for r in rows] == [
        ("alice", "user", 0.5), ("alice", "user", 0.8), ("alice", "user", 1.0),
        ("alice", "dataset", 0.5), ("bob", "user", 0.5), ("bob", "dataset", 0.8)]
    assert led.verify().ok
    led.close()


def test_a_refused_release_fires_no_alert(ledger: Ledger) -> None:
    limits = Limits(per_user=1.0, total=2.0, alerts=(0.5,))
    with pytest.raises(BudgetExceeded):
        commit(ledger, "big", 1.5, limits)
    assert actions(ledger, "budget_alert") == [] and ledger.audit_rows() == []


# -- retention on the ledger -------------------------------------------------------------------

def test_a_purge_deletes_old_releases_keeps_charges_and_audit_and_a_repeat_is_charged_again(
        ledger: Ledger, clock: Clock) -> None:
    limits = Limits(per_user=5.0, total=10.0)
    old, _ = commit(ledger, "old", 0.5, limits)
    clock.now = T0 + 300 * DAY
    recent, _ = commit(ledger, "recent", 0.25, limits)
    clock.now = T0 + 400 * DAY
    done = ledger.purge(365)
    assert done["releases"] == 1
    assert ledger.release(old["release_id"]) is None
    assert ledger.release(recent["release_id"]) is not None
    assert ledger.release_for(Ledger.cache_key("old", "fp")) is None
    assert ledger.budget("alice", "loans", limits).spent == pytest.approx(0.75)  # no refund
    purge = actions(ledger, "purge")
    assert len(purge) == 1 and json.loads(purge[0]["detail"])["releases"] == 1
    assert ledger.verify().ok and ledger.verify().rows == 3
    again, cached = commit(ledger, "old", 0.5, limits)  # a fresh release, charged again
    assert not cached and again["release_id"] != old["release_id"]
    assert ledger.budget("alice", "loans", limits).spent == pytest.approx(1.25)
    assert ledger.purge(365, record_empty=False)["releases"] == 0
    assert len(actions(ledger, "purge")) == 1


# -- the service: grants -----------------------------------------------------------------------

def grant(svc: ServiceProcess, body: dict[str, Any], token: str = OLIVIA) -> Any:
    return svc.call("POST", "/grants", token, body=body)


def test_grants_over_http_owner_only_bad_bodies_change_nothing(service: ServiceProcess) -> None:
    good = {"user": "alice", "dataset": "loans", "epsilon": 1.0, "ttl": 600,
            "purpose": "month-end review"}
    for token in (ALICE, VICTOR, AUDREY):
        r = grant(service, good, token)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    bad: list[tuple[Any, int]] = [
        ({**good, "ttl": -5}, 400), ({**good, "ttl": 10**9}, 400), ({**good, "ttl": "1h"}, 400),
        ({**good, "expires_at": "2030-01-01T00:00:00+00:00"}, 400),  # both ttl and expires_at
        ({k: v for k, v in good.items() if k != "ttl"}, 400),  # neither
        ({**{k: v for k, v in good.items() if k != "ttl"}, "expires_at": "2001-01-01T00:00Z"},
         400),
        ({**good, "epsilon": -1}, 400), ({**good, "epsilon": 1e9}, 400),
        ({**good, "epsilon": True}, 400), ({**good, "epsilon": 0}, 400),
        ({**good, "role": "superuser"}, 400), ({**good, "purpose": "  "}, 400),
        ({**good, "user": "a b"}, 400), ({**good, "dataset": "nope"}, 404),
        ({**good, "shoe_size": 42}, 400), ([good], 400), ("not json", 400)]
    for body, status in bad:
        r = (service.call("POST", "/grants", OLIVIA, data=body.encode()) if isinstance(body, str)
             else grant(service, body))
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["code"] in ("invalid_grant", "unknown_dataset")
    assert service.call("GET", "/grants", OLIVIA).json() == {"grants": []}
    assert service.call("GET", "/budget").json()["datasets"]["loans"]["limit"] == 5.0
    refused = [r for r in service.call("GET", "/audit?limit=1000", OLIVIA).json()["audit"]
               if r["action"] == "grant"]
    assert len(refused) == 3 + len(bad) and {r["outcome"] for r in refused} == {"refused"}
    assert {r["user"] for r in refused[:3]} == {"alice", "victor", "audrey"}

    made = grant(service, good)
    assert made.status_code == 201, made.text
    g = made.json()["grant"]
    assert (g["user"], g["epsilon"], g["role"], g["state"], g["granted_by"]) == (
        "alice", 1.0, None, "active", "olivia")
    budget = service.call("GET", "/budget").json()["datasets"]["loans"]
    assert (budget["limit"], budget["granted"], budget["remaining"]) == (6.0, 1.0, 6.0)
    assert [x["id"] for x in service.call("GET", "/grants", ALICE).json()["grants"]] == [g["id"]]
    assert service.call("GET", "/grants", VICTOR).json()["grants"] == []  # not theirs
    assert service.call("DELETE", f"/grants/{g['id']}", ALICE).status_code == 403
    gone = service.call("DELETE", f"/grants/{g['id']}", OLIVIA)
    assert gone.status_code == 200 and gone.json()["grant"]["state"] == "revoked"
    assert service.call("DELETE", f"/grants/{g['id']}", OLIVIA).status_code == 409
    assert service.call("DELETE", "/grants/g-0000", OLIVIA).status_code == 404
    assert service.call("GET", "/budget").json()["datasets"]["loans"]["limit"] == 5.0
    assert service.call("GET", "/audit/verify", OLIVIA).json()["ok"] is True


def test_role_and_epsilon_grants_work_over_http_then_lapse_once_across_a_restart(
        service: ServiceProcess) -> None:
    body = {"kind": "histogram", "column": "region", "epsilon": 0.5}
    assert service.query(body, token=VICTOR).status_code == 403
    long = grant(service, {"user": "victor", "dataset": "loans", "role": "analyst",
                           "ttl": 3600, "purpose": "incident 42"}).json()["grant"]
    r = service.query(body, token=VICTOR)
    assert r.status_code == 200 and r.json()["provenance"]["user"] == "victor"
    assert service.call("GET", "/datasets/loans", VICTOR).status_code == 200
    assert service.call("GET", "/datasets", VICTOR).status_code == 403  # only that dataset
    assert service.call("GET", "/budget", VICTOR).status_code == 403
    assert service.spent(OLIVIA) == 0.0  # charged to victor, not to the owner
    assert service.call("DELETE", f"/grants/{long['id']}", OLIVIA).status_code == 200
    assert service.query({**body, "column": "sex"}, token=VICTOR).status_code == 403

    expires = time.time() + 2.0
    for g in ({"user": "victor", "dataset": "loans", "role": "analyst"},
              {"user": "alice", "dataset": "loans", "epsilon": 2.5}):
        made = grant(service, {**g, "purpose": "short",
                               "expires_at": datetime.fromtimestamp(expires, UTC).isoformat()})
        assert made.status_code == 201, made.text
    while time.time() <= expires + 0.2:  # real time: the service process has its own clock
        time.sleep(0.2)
    assert service.query({**body, "column": "income"}, token=VICTOR).status_code == 403
    assert service.call("GET", "/budget").json()["datasets"]["loans"]["limit"] == 5.0
    states = [g["state"] for g in service.call("GET", "/grants", OLIVIA).json()["grants"]]
    assert states == ["revoked", "lapsed", "lapsed"]
    service.stop()
    service.start()
    service.call("GET", "/me")
    rows = service.call("GET", "/audit?limit=1000", OLIVIA).json()["audit"]
    lapsed = [r for r in rows if r["action"] == "grant_lapsed"]
    assert sorted(r["user"] for r in lapsed) == ["alice", "victor"]
    assert service.call("GET", "/audit/verify", OLIVIA).json()["ok"] is True


# -- the service: alerts and the webhook -------------------------------------------------------

class Hook(BaseHTTPRequestHandler):
    received: queue.Queue[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers["Content-Length"])
        self.received.put(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def webhook() -> Iterator[tuple[str, queue.Queue[dict[str, Any]]]]:
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    handler = type("Hook", (Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    server.shutdown()
    server.server_close()


def with_alerts(policy: Path, alerts: str, webhook: str | None = None) -> Path:
    lines = [f"alerts = {alerts}"] + ([f'alert_webhook = "{webhook}"'] if webhook else [])
    policy.write_text(policy.read_text().replace("[service]\n", "[service]\n" + "\n".join(lines)
                                                 + "\n", 1))
    return policy


def test_alerts_ride_on_the_release_reach_the_webhook_and_never_refire_after_a_restart(
        loans: Any, tmp_path: Path, webhook: tuple[str, queue.Queue[dict[str, Any]]]) -> None:
    url, received = webhook
    policy = with_alerts(policy_copy(loans, tmp_path, epsilon_per_user=2.0, epsilon_total=2.5),
                         "[0.5, 0.8, 1.0]", url)
    svc = ServiceProcess(policy)
    try:
        def ask(column: str, token: str = ALICE) -> list[tuple[str, float]]:
            r = svc.query({"kind": "histogram", "column": column, "epsilon": 0.5}, token=token)
            assert r.status_code == 200, r.text
            return [(w["scope"], w["threshold"]) for w in r.json()["warnings"]]

        assert ask("region") == []                   # alice 0.25, dataset 0.2
        assert ask("sex") == [("user", 0.5)]         # alice 0.5, dataset 0.4
        assert ask("income") == [("dataset", 0.5)]   # alice 0.75, dataset 0.6
        svc.stop()
        svc.start()
        assert ask("region") == []                   # cached: free, and nothing fires
        assert ask("age") == [("user", 0.8), ("user", 1.0), ("dataset", 0.8)]
        assert ask("default", OLIVIA) == [("dataset", 1.0)]  # the cap is everybody's
        events = [received.get(timeout=60) for _ in range(6)]
    finally:
        svc.stop()
    assert received.empty()
    assert sorted((e["user"], e["scope"], e["threshold"]) for e in events) == sorted([
        ("alice", "user", 0.5), ("alice", "dataset", 0.5), ("alice", "user", 0.8),
        ("alice", "user", 1.0), ("alice", "dataset", 0.8), ("olivia", "dataset", 1.0)])
    assert {e["event"] for e in events} == {"budget_alert"}
    assert all(e["dataset"] == "loans" and e["release_id"].startswith("r-") for e in events)
    led = Ledger(policy.parent / "ledger.sqlite")
    assert len(actions(led, "budget_alert")) == 6 and led.verify().ok
    led.close()


def test_a_dead_webhook_is_logged_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pdebug_jupyter.service"):
        send_alerts("http://127.0.0.1:9/nowhere", [{"event": "budget_alert"}]).join()
    assert "webhook http://127.0.0.1:9/nowhere failed" in caplog.text


# -- retention and the CLI on a real ledger ----------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pdebug_jupyter", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_purge_and_audit_commands_on_a_service_ledger(service: ServiceProcess) -> None:
    body = {"kind": "histogram", "column": "region", "epsilon": 0.5}
    first = service.query(body).json()
    service.stop()
    policy = str(service.policy)
    later = datetime.fromtimestamp(time.time() + 400 * DAY, UTC).isoformat()
    done = cli("purge", "--policy", policy, "--now", later)
    assert done.returncode == 0 and done.stdout.startswith("purged 1 release(s)"), done
    assert cli("purge", "--policy", policy, "--now", "tomorrow").returncode == 2

    ok = cli("audit", "verify", "--policy", policy)
    assert ok.returncode == 0 and "ok: 2 audit row(s) checked" in ok.stdout, ok
    out = Path(policy).parent / "audit.csv"
    assert cli("audit", "export", "--policy", policy, "--format", "csv",
               "--out", str(out)).returncode == 0
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert [r["action"] for r in table] == ["query", "purge"]
    assert table[0]["detail"] == first["release_id"] and len(table[1]["hash"]) == 64
    lines = cli("audit", "export", "--policy", policy).stdout.splitlines()
    assert [json.loads(x)["hash"] for x in lines] == [r["hash"] for r in table]

    service.start()  # the purged query is no longer cached: a fresh release, charged again
    assert service.call("GET", f"/releases/{first['release_id']}").status_code == 404
    again = service.query(body).json()
    assert again["cached"] is False and again["release_id"] != first["release_id"]
    assert service.spent() == pytest.approx(1.0)
    service.stop()
    db = sqlite3.connect(Path(policy).parent / "ledger.sqlite")
    db.execute("UPDATE audit SET epsilon = 0 WHERE seq = 1")  # tamper with the first charge
    db.commit()
    db.close()
    bad = cli("audit", "verify", "--policy", policy)
    assert bad.returncode == 1 and "the first bad row is seq 1" in bad.stdout, bad
    service.start()


def test_the_service_purges_past_retention_at_start(loans: Any, tmp_path: Path) -> None:
    policy = policy_copy(loans, tmp_path, retention_days=30)
    led = Ledger(tmp_path / "ledger.sqlite", clock=lambda: time.time() - 31 * DAY)
    old, _ = commit(led, "long ago", 0.5, Limits(5.0, 20.0))
    led.close()
    svc = ServiceProcess(policy)
    try:
        assert svc.call("GET", f"/releases/{old['release_id']}").status_code == 404
        rows = svc.call("GET", "/audit", OLIVIA).json()["audit"]
        assert [r["action"] for r in rows] == ["query", "purge"]
        assert json.loads(rows[1]["detail"])["releases"] == 1
        assert svc.call("GET", "/audit/verify", OLIVIA).json() == {
            "ok": True, "rows": 2, "first_bad_seq": None}
    finally:
        svc.stop()
    assert cli("audit", "verify", "--policy", str(policy)).returncode == 0
