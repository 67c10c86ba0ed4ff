"""The ledger on a real SQLite file: one atomic charge per release, the zero-cost cache,
budget refusals that write nothing, the hash-chained audit log, restarts and concurrency."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pdebug_jupyter.ledger import (
    AUDIT_FIELDS,
    Budget,
    BudgetExceeded,
    CachedRead,
    Ledger,
    Limits,
    _hash,
)

T0 = 1_700_000_000.0
LIMITS = Limits(per_user=1.0, total=2.0)


class Clock:
    """A clock the test moves by hand: one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    led = Ledger(path, clock=Clock())
    yield led
    led.close()


class Builder:
    """The ``build`` callback of commit_release: records its calls, returns a payload."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Budget]] = []

    def __call__(self, release_id: str, created_at: str, budget: Budget) -> dict[str, Any]:
        self.calls.append((release_id, created_at, budget))
        return {"release_id": release_id, "created_at": created_at, "cells": [1, 2, 3],
                "budget": budget.public()}


def commit(led: Ledger, key: str, epsilon: float, *, user: str = "alice",
           limits: Limits = LIMITS, build: Any = None) -> tuple[dict[str, Any], bool]:
    return led.commit_release(
        cache_key=key, user=user, purpose="testing", dataset="loans", kind="histogram",
        query=f'{{"q":"{key}"}}', epsilon=epsilon, fingerprint="fp-1", limits=limits,
        build=build or Builder())


def rows(path: Path, table: str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        db.close()


def spent(led: Ledger, user: str = "alice") -> float:
    return led.budget(user, "loans", LIMITS).spent


# -- charge once, cache afterwards --------------------------------------------------------------

def test_a_release_is_charged_once_and_a_repeat_is_served_free_from_the_cache(
        ledger: Ledger, path: Path) -> None:
    build = Builder()
    first, cached = commit(ledger, "k1", 0.25, build=build)
    assert cached is False and len(build.calls) == 1
    release_id, created_at, after = build.calls[0]
    assert first["release_id"] == release_id and release_id.startswith("r-")
    assert created_at == "2023-11-14T22:13:21.000000+00:00"  # the injected clock
    assert (after.spent, after.dataset_spent) == (0.25, 0.25)
    assert spent(ledger) == 0.25

    again_build = Builder()
    again, cached = commit(ledger, "k1", 0.25, user="olivia", build=again_build)
    assert cached is True and again == first and again_build.calls == []
    assert spent(ledger) == 0.25 and spent(ledger, "olivia") == 0.0
    assert rows(path, "releases") == 1 and rows(path, "charges") == 1
    audit = ledger.audit_rows()
    assert [(a["user"], a["outcome"], a["epsilon"], a["detail"]) for a in audit] == [
        ("alice", "released", 0.25, release_id), ("olivia", "cached", 0.0, release_id)]
    assert ledger.release(release_id) == first
    assert ledger.release_for("k1") == release_id and ledger.release_for("k2") is None


def test_serve_cached_answers_only_known_keys_and_audits_the_read(ledger: Ledger,
                                                                  path: Path) -> None:
    assert ledger.serve_cached("k1", user="alice", purpose="p", dataset="loans",
                               query="{}") is None
    assert rows(path, "audit") == 0
    payload, _ = commit(ledger, "k1", 0.5)
    served = ledger.serve_cached("k1", user="victor", purpose="p", dataset="loans", query="{}")
    assert served == payload
    assert [a["outcome"] for a in ledger.audit_rows()] == ["released", "cached"]
    assert spent(ledger) == 0.5 and spent(ledger, "victor") == 0.0


def test_many_cache_reads_share_one_transaction_and_each_is_audited(ledger: Ledger,
                                                                     path: Path) -> None:
    first, _ = commit(ledger, "k1", 0.5)
    second, _ = commit(ledger, "k2", 0.25)
    commits: list[str] = []
    ledger._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    reads = [CachedRead(k, u, "p", "loans", "{}")
             for k, u in [("k1", "victor"), ("nope", "victor"), ("k2", "olivia"), ("k1", "bob")]]
    assert ledger.serve_cached_many(reads) == [first, None, second, first]
    assert commits == ["COMMIT"]
    audit = [(a["user"], a["outcome"], a["detail"]) for a in ledger.audit_rows()][2:]
    assert audit == [("victor", "cached", first["release_id"]),
                     ("olivia", "cached", second["release_id"]),
                     ("bob", "cached", first["release_id"])]
    assert ledger.verify().ok and spent(ledger) == 0.75 and spent(ledger, "victor") == 0.0


def test_the_cache_key_changes_with_the_data_fingerprint() -> None:
    assert Ledger.cache_key('{"q":1}', "fp-1") == Ledger.cache_key('{"q":1}', "fp-1")
    assert Ledger.cache_key('{"q":1}', "fp-1") != Ledger.cache_key('{"q":1}', "fp-2")
    assert Ledger.cache_key('{"q":1}', "fp-1") != Ledger.cache_key('{"q":2}', "fp-1")


# -- refusals write nothing ----------------------------------------------------------------------

def test_the_per_user_limit_refuses_and_writes_nothing(ledger: Ledger, path: Path) -> None:
    commit(ledger, "k1", 0.75)
    build = Builder()
    with pytest.raises(BudgetExceeded) as info:
        commit(ledger, "k2", 0.5, build=build)
    assert info.value.code == "budget_exceeded" and info.value.status == 403
    assert "0.25 remains" in info.value.message
    assert build.calls == []
    assert rows(path, "releases") == 1 and rows(path, "charges") == 1
    assert rows(path, "audit") == 1
    assert spent(ledger) == 0.75 and ledger.release_for("k2") is None
    commit(ledger, "k3", 0.25)  # what remains is still spendable
    assert spent(ledger) == 1.0


def test_the_dataset_wide_cap_binds_across_users(ledger: Ledger, path: Path) -> None:
    commit(ledger, "k1", 1.0, user="alice")
    commit(ledger, "k2", 0.75, user="olivia")
    with pytest.raises(BudgetExceeded):
        commit(ledger, "k3", 0.5, user="victor")  # victor's own budget is untouched
    assert rows(path, "releases") == 2 and rows(path, "charges") == 2
    assert rows(path, "audit") == 2
    budget = ledger.budget("victor", "loans", LIMITS)
    assert (budget.spent, budget.dataset_spent, budget.remaining) == (0.0, 1.75, 0.25)


def test_a_failing_build_spends_nothing(ledger: Ledger, path: Path) -> None:
    def broken(release_id: str, created_at: str, budget: Budget) -> dict[str, Any]:
        raise RuntimeError("the engine failed")

    with pytest.raises(RuntimeError):
        commit(ledger, "k1", 0.5, build=broken)
    assert rows(path, "releases") == rows(path, "charges") == rows(path, "audit") == 0
    assert spent(ledger) == 0.0


def test_float_sums_get_a_tolerance_three_charges_of_a_tenth_fit_three_tenths(
        ledger: Ledger) -> None:
    limits = Limits(per_user=0.3, total=0.3)
    for key in ("k1", "k2", "k3"):
        commit(ledger, key, 0.1, limits=limits)
    assert ledger.budget("alice", "loans", limits).spent == pytest.approx(0.3)
    with pytest.raises(BudgetExceeded):
        commit(ledger, "k4", 1e-6, limits=limits)
    assert ledger.budget("alice", "loans", limits).remaining == pytest.approx(0.0)


def test_budgets_are_kept_per_dataset(ledger: Ledger) -> None:
    commit(ledger, "k1", 1.0)
    ledger.commit_release(cache_key="k2", user="alice", purpose="p", dataset="other",
                          kind="histogram", query="{}", epsilon=1.0, fingerprint="fp",
                          limits=LIMITS, build=Builder())
    assert spent(ledger) == 1.0
    assert ledger.budget("alice", "other", LIMITS).spent == 1.0


# -- the audit chain ------------------------------------------------------------------------------

def chain(ledger: Ledger, n: int = 5) -> None:
    for i in range(n):
        commit(ledger, f"k{i}", 0.1)


def tamper(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()


def test_a_fresh_chain_verifies(ledger: Ledger) -> None:
    assert ledger.verify().public() == {"ok": True, "rows": 0, "first_bad_seq": None}
    chain(ledger)
    ledger.audit(user="olivia", purpose="admin", dataset="loans", action="retention",
                 query="", epsilon=0.0, outcome="done")
    assert ledger.verify().public() == {"ok": True, "rows": 6, "first_bad_seq": None}
    audit = ledger.audit_rows()
    assert [a["seq"] for a in audit] == [1, 2, 3, 4, 5, 6]
    assert audit[0]["prev"] == "0" * 64
    assert all(b["prev"] == a["hash"] for a, b in zip(audit, audit[1:], strict=False))


@pytest.mark.parametrize(("field", "value"), [
    ("epsilon", "0.0"), ("user", "'mallory'"), ("detail", "'r-0000'"), ("at", "'2020-01-01'"),
    ("outcome", "'refused'"),
])
def test_editing_a_field_breaks_the_chain_at_that_row(ledger: Ledger, path: Path, field: str,
                                                      value: str) -> None:
    chain(ledger)
    tamper(path, f"UPDATE audit SET {field} = {value} WHERE seq = 3")  # noqa: S608
    assert ledger.verify().public() == {"ok": False, "rows": 5, "first_bad_seq": 3}


def test_rewriting_a_row_and_its_hash_breaks_the_chain_at_the_next_row(
        ledger: Ledger, path: Path) -> None:
    chain(ledger)
    row = next(r for r in ledger.audit_rows() if r["seq"] == 2)
    row["epsilon"] = 0.0
    tamper(path, f"UPDATE audit SET epsilon = 0.0, hash = '{_hash(row['prev'], row)}' "
                 "WHERE seq = 2")
    assert ledger.verify().first_bad == 3


def test_deleting_a_middle_row_breaks_the_chain(ledger: Ledger, path: Path) -> None:
    chain(ledger)
    tamper(path, "DELETE FROM audit WHERE seq = 3")
    assert ledger.verify().public() == {"ok": False, "rows": 4, "first_bad_seq": 4}


def test_reordering_rows_breaks_the_chain(ledger: Ledger, path: Path) -> None:
    chain(ledger)
    tamper(path, "UPDATE audit SET seq = -2 WHERE seq = 2",
           "UPDATE audit SET seq = 2 WHERE seq = 3",
           "UPDATE audit SET seq = 3 WHERE seq = -2")
    assert ledger.verify().public() == {"ok": False, "rows": 5, "first_bad_seq": 2}


def test_a_forged_row_inserted_with_a_valid_hash_breaks_the_chain_after_it(
        ledger: Ledger, path: Path) -> None:
    chain(ledger, 3)
    first = ledger.audit_rows()[0]
    forged = {**first, "seq": 2, "user": "mallory", "epsilon": 0.0, "prev": first["hash"]}
    forged["hash"] = _hash(first["hash"], forged)
    tamper(path, "UPDATE audit SET seq = seq + 10 WHERE seq >= 2",
           "UPDATE audit SET seq = seq - 9 WHERE seq >= 12")
    db = sqlite3.connect(path)
    db.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               [forged[f] for f in (*AUDIT_FIELDS, "prev", "hash")])
    db.commit()
    db.close()
    assert [r["user"] for r in ledger.audit_rows()] == ["alice", "mallory", "alice", "alice"]
    assert ledger.verify().public() == {"ok": False, "rows": 4, "first_bad_seq": 3}


# -- restarts --------------------------------------------------------------------------------------

def test_releases_budgets_and_the_chain_survive_closing_and_reopening(path: Path) -> None:
    first = Ledger(path, clock=Clock())
    payload, _ = commit(first, "k1", 0.5)
    commit(first, "k2", 0.25, user="olivia")
    first.close()
    second = Ledger(path, clock=Clock())
    try:
        assert spent(second) == 0.5 and spent(second, "olivia") == 0.25
        assert second.budget("alice", "loans", LIMITS).dataset_spent == 0.75
        again, cached = commit(second, "k1", 0.5)
        assert cached is True and again == payload and spent(second) == 0.5
        assert [r["release_id"] for r in second.releases()] != []
        assert second.release(payload["release_id"]) == payload
        assert second.verify().public() == {"ok": True, "rows": 3, "first_bad_seq": None}
    finally:
        second.close()


# -- concurrency ------------------------------------------------------------------------------------

THREADS = 16
EPSILON = 0.25  # four fit the per-user limit of 1.0


def race(ledger_for: Callable[[int], Ledger]) -> tuple[list[bool], list[str]]:
    """Every thread commits a distinct release at once; returns who got through."""
    start = threading.Barrier(THREADS)
    outcomes: list[bool] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        start.wait()
        try:
            commit(ledger_for(i), f"k{i}", EPSILON)
            ok = True
        except BudgetExceeded:
            ok = False
        except Exception as exc:  # noqa: BLE001 - any other error fails the test
            with lock:
                errors.append(repr(exc))
            return
        with lock:
            outcomes.append(ok)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes, errors


def test_sixteen_threads_on_one_ledger_never_overspend(ledger: Ledger, path: Path) -> None:
    outcomes, errors = race(lambda i: ledger)
    assert errors == []
    assert sorted(outcomes) == [False] * 12 + [True] * 4
    assert spent(ledger) == pytest.approx(1.0)
    assert rows(path, "releases") == rows(path, "charges") == rows(path, "audit") == 4
    assert ledger.verify().ok


def test_ledgers_of_separate_processes_on_one_file_never_overspend(path: Path) -> None:
    # each thread opens its own Ledger at the same moment, as separate service processes
    # starting on a fresh file would
    ledgers: dict[int, Ledger] = {}

    def own(i: int) -> Ledger:
        ledgers[i] = Ledger(path, clock=Clock())
        return ledgers[i]

    try:
        outcomes, errors = race(own)
        assert errors == []
        assert sorted(outcomes) == [False] * 12 + [True] * 4
        assert len(ledgers) == THREADS
        assert spent(ledgers[0]) == pytest.approx(1.0)
        assert rows(path, "releases") == rows(path, "charges") == rows(path, "audit") == 4
        assert ledgers[5].verify().public() == {"ok": True, "rows": 4, "first_bad_seq": None}
    finally:
        for led in ledgers.values():
            led.close()


def test_concurrent_identical_releases_are_charged_once_across_ledgers(path: Path) -> None:
    ledgers = [Ledger(path) for _ in range(4)]
    start = threading.Barrier(8)
    results: list[tuple[str, bool]] = []

    def client(i: int) -> None:
        start.wait()
        payload, cached = commit(ledgers[i % 4], "same", 0.5)
        results.append((payload["release_id"], cached))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(results) == 8 and len({r for r, _ in results}) == 1
        assert sorted(c for _, c in results) == [False] + [True] * 7
        assert spent(ledgers[0]) == 0.5 and rows(path, "charges") == 1
    finally:
        for led in ledgers:
            led.close()
