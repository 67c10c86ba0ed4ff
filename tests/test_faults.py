"""Faults: the real service killed with SIGKILL in the middle of concurrent load, three times,
and restarted on the same policy and ledger; then checked through the service, directly in the
SQLite ledger and with ``pdebug-jupyter audit verify``.

A release, its charge and its audit row are one transaction, committed before the release is
returned (rule 6), so whatever moment the kill hits, after a restart:

* the service starts cleanly on the same port and the audit hash chain is intact;
* every release has exactly one charge and one ``released`` audit row, nothing else is
  charged, and every ``cached`` audit row names a stored release;
* each user's spend is the sum of their charges and never above the cap;
* a release the client received before the kill, asked again, is the same release from the
  cache (``cached`` true) and costs nothing; a release the client never got an answer for is
  either stored whole (then a retry is served from the cache, free) or absent (then a retry is
  a fresh release).
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ALICE, AUDREY, OLIVIA, ServiceProcess, policy_copy
from ledger_invariants import LedgerState, ledger_state

from pdebug_jupyter import cli

CAP = 1.0  # epsilon per user; the load spends a little of it, the last phase drains it
USERS = {ALICE: "alice", OLIVIA: "olivia"}
SHAPES: tuple[dict[str, Any], ...] = (
    {"kind": "histogram", "column": "age", "by": "sex"},
    {"kind": "histogram", "column": "income", "by": "region"},
    {"kind": "histogram", "column": "region", "by": "window"},
    {"kind": "calibration", "by": "sex"},
)
ROUNDS = 3
THREADS_PER_USER = 3
# the parts of a reply that describe the caller's request rather than the release
PER_REPLY = ("cached", "budget", "warnings")


@dataclass
class Call:
    token: str
    body: dict[str, Any]
    fresh: bool  # a new epsilon: never asked before
    status: int | None = None  # None: no answer (the service died first, or the client left)
    reply: dict[str, Any] | None = None


class Load:
    """Client threads (one requests.Session each) sending fresh releases (a new epsilon each,
    so never cached) and repeats of releases already answered, until the service dies."""

    def __init__(self, url: str, base_epsilon: float, fresh_share: float) -> None:
        self.url, self.base, self.fresh_share = url, base_epsilon, fresh_share
        self.calls: list[Call] = []
        self.known: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.counter = itertools.count()
        self.stop_on_refusal = False
        self.impatient_calls = 0

    def fresh(self, rng: random.Random) -> dict[str, Any]:
        # a distinct epsilon per request: it is also how the test finds the release in SQLite
        return {**rng.choice(SHAPES), "epsilon": self.base + next(self.counter) / 1_000_000}

    def client(self, token: str, seed: int) -> None:
        rng = random.Random(seed)
        http = requests.Session()
        http.headers["Authorization"] = f"token {token}"
        while True:
            with self.lock:
                repeat = self.known and rng.random() > self.fresh_share
                body = rng.choice(self.known)[1] if repeat else self.fresh(rng)
            call = Call(token, body, not repeat)
            with self.lock:
                self.calls.append(call)
            try:
                r = http.post(f"{self.url}/datasets/loans/query", json=body, timeout=60)
            except requests.RequestException:
                return  # killed: this call stays unanswered
            call.status, call.reply = r.status_code, r.json()
            if r.status_code == 200:
                with self.lock:
                    self.known.append((token, body))
            elif self.stop_on_refusal:
                return

    def impatient(self, calls: int) -> None:
        """A client that gives up on fresh releases before the answer comes (a read timeout
        shorter than any release): the service may finish and charge them all the same."""
        http = requests.Session()
        http.headers["Authorization"] = f"token {ALICE}"
        rng = random.Random(0)
        for _ in range(calls):
            with self.lock:
                call = Call(ALICE, self.fresh(rng), True)
                self.calls.append(call)
            try:
                http.post(f"{self.url}/datasets/loans/query", json=call.body, timeout=(5, 0.001))
            except requests.RequestException:
                pass
            else:
                raise AssertionError("a release answered within a millisecond")
            time.sleep(0.05)

    def run(self, seed: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client, args=(token, seed * 100 + i))
                   for i, token in enumerate(list(USERS) * THREADS_PER_USER)]
        if self.impatient_calls:
            threads.append(threading.Thread(target=self.impatient, args=(self.impatient_calls,)))
        for t in threads:
            t.start()
        return threads

    def answered(self) -> int:
        with self.lock:
            return sum(c.status is not None for c in self.calls)


def release_view(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k not in PER_REPLY}


def kill(svc: ServiceProcess) -> None:
    svc.process.kill()
    assert svc.process.wait(timeout=30) == -9
    assert svc.process.stdout is not None
    svc.process.stdout.close()


def restart(svc: ServiceProcess) -> None:
    """Start again on the same port, and check that nothing went wrong while starting."""
    port = int(svc.url.split(":")[2].split("/")[0])
    url, offset = svc.url, svc.log.stat().st_size
    svc.start(port)
    assert svc.url == url
    assert svc.call("GET", "/health", None).json()["status"] == "ok"
    log = svc.log.read_bytes()[offset:].decode()
    assert "Traceback" not in log and " ERROR " not in log, log


def check_consistent(svc: ServiceProcess, ledger: Path) -> LedgerState:
    state = ledger_state(ledger)
    verify = svc.call("GET", "/audit/verify", AUDREY).json()
    assert verify == {"ok": True, "rows": state.audit, "first_bad_seq": None}
    for token, user in USERS.items():
        assert svc.spent(token) == pytest.approx(state.spent.get(user, 0.0), abs=1e-9)
        assert state.spent.get(user, 0.0) <= CAP + 1e-9
    return state


def check_calls(svc: ServiceProcess, ledger: Path, calls: list[Call]) -> tuple[int, int]:
    """Ask again what was asked before the kill; returns how many fresh releases left
    unanswered were (stored, absent)."""
    before = check_consistent(svc, ledger)
    received = {json.dumps(c.body, sort_keys=True): c for c in calls if c.status == 200}
    for c in received.values():
        assert c.reply is not None
        again = svc.query(c.body, c.token)
        assert again.status_code == 200, again.text
        assert again.json()["cached"] is True
        assert release_view(again.json()) == release_view(c.reply)
    # repeats of received releases spent nothing
    assert check_consistent(svc, ledger).charges == before.charges
    stored = absent = 0
    for c in calls:
        if c.status is not None:
            continue
        found = before.by_epsilon.get(c.body["epsilon"], [])
        assert len(found) <= 1 and (c.fresh or found)  # a repeat's release was stored before
        again = svc.query(c.body, c.token)
        assert again.status_code == 200, again.text
        assert again.json()["cached"] is bool(found)
        if found:
            assert again.json()["release_id"] == found[0]
        if c.fresh:
            stored, absent = stored + bool(found), absent + (not found)
    check_consistent(svc, ledger)
    return stored, absent


def drain(svc: ServiceProcess) -> list[Call]:
    """No kill: every client sends fresh releases until the budget refuses it."""
    load = Load(svc.url, base_epsilon=0.1, fresh_share=1.0)
    load.stop_on_refusal = True
    for t in load.run(seed=99):
        t.join(timeout=120)
    return load.calls


def audit_verify(policy: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """``pdebug-jupyter audit verify`` (in this process: the command without the seconds
    an interpreter takes to import it)."""
    capsys.readouterr()
    code = cli.main(["audit", "verify", "--policy", str(policy)])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_sigkill_mid_load_leaves_the_ledger_consistent_and_the_service_restartable(
        loans: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svc = ServiceProcess(policy_copy(loans, tmp_path, epsilon_per_user=CAP,
                                     epsilon_total=CAP * len(USERS)))
    ledger = tmp_path / "ledger.sqlite"
    rng = random.Random()
    unanswered = [0, 0]
    try:
        for round_ in range(ROUNDS):
            load = Load(svc.url, base_epsilon=0.002 + round_ / 1000, fresh_share=0.6)
            load.impatient_calls = 4
            threads = load.run(seed=round_)
            deadline = time.monotonic() + 60
            while load.answered() < 12 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))  # a random moment, with requests in flight
            kill(svc)
            for t in threads:
                t.join(timeout=60)
            assert not any(t.is_alive() for t in threads)
            assert load.answered() >= 12
            # a received reply is a release or a refusal, never an error
            assert {c.status for c in load.calls} <= {200, None}
            ledger_state(ledger)  # consistent as the kill left it, before any recovery
            audit_verify(svc.policy, capsys)
            restart(svc)
            stored, absent = check_calls(svc, ledger, load.calls)
            unanswered = [unanswered[0] + stored, unanswered[1] + absent]

        calls = drain(svc)
        state = check_consistent(svc, ledger)
        for token, user in USERS.items():
            refused = [c for c in calls if c.token == token and c.status != 200]
            assert len(refused) == THREADS_PER_USER  # each client ends on a refusal
            for c in refused:
                assert c.status == 403 and c.reply is not None
                assert c.reply["error"]["code"] == "budget_exceeded"
                # refused only when it did not fit: spend never goes down
                assert state.spent[user] + c.body["epsilon"] > CAP - 1e-9
        assert audit_verify(svc.policy, capsys).startswith(
            f"ok: {state.audit} audit row(s) checked, the hash chain is intact")
        # in the report of a failure: how often each case came up
        print(f"fresh releases left unanswered: {unanswered[0]} stored, {unanswered[1]} absent")
    finally:
        if svc.process.poll() is None:
            assert svc.stop() == 0
