"""Load: 50 concurrent clients (threads, one requests.Session each) from six users against one
real service: identical hot releases fired at once, fresh releases (a new epsilon each), cached
repeats, cost previews and, as each user's budget runs out, budget refusals.

Functional only (timings are in benchmarks/bench_load.py): no error but the expected refusals,
each user's spend (the ledger's sum of charges) within its cap and equal to what the replies
say was spent, and each hot release charged exactly once however many clients raced for it.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from conftest import ALICE, AUDREY, OLIVIA, ServiceProcess, policy_copy
from ledger_invariants import ledger_state

CLIENTS = 50
STEPS = 8  # requests per client after the hot release and its cost
CAP = 1.0
FRESH_EPSILON = 0.09  # a user's clients ask for about 2.5x its cap: every user is refused
EXTRA_USERS = {f"load-token-{name}-0000000000": name for name in ("ursula", "umar", "ugo", "ulla")}
USERS = {ALICE: "alice", OLIVIA: "olivia", **EXTRA_USERS}
HOT = ({"kind": "histogram", "column": "age", "by": "region", "epsilon": 0.1},
       {"kind": "calibration", "by": "sex", "epsilon": 0.05})
SHAPES: tuple[dict[str, Any], ...] = (
    {"kind": "histogram", "column": "income", "by": "sex"},
    {"kind": "histogram", "column": "region", "by": "window"},
    {"kind": "confusion", "by": "sex"},
)


@dataclass
class Call:
    token: str
    path: str  # "query" or "cost"
    body: dict[str, Any]
    kind: str  # "hot", "fresh", "repeat" or "cost"
    status: int = 0
    reply: Any = None


class Clients:
    def __init__(self, url: str) -> None:
        self.url = url
        self.calls: list[Call] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.start = threading.Barrier(CLIENTS)
        self.counter = itertools.count()

    def fresh(self, rng: random.Random) -> dict[str, Any]:
        with self.lock:  # distinct epsilons: never cached, and findable in the ledger
            n = next(self.counter)
        return {**rng.choice(SHAPES), "epsilon": FRESH_EPSILON + n / 1_000_000}

    def client(self, i: int) -> None:
        token = list(USERS)[i % len(USERS)]
        rng = random.Random(i)
        http = requests.Session()
        http.headers["Authorization"] = f"token {token}"

        def send(path: str, body: dict[str, Any], kind: str) -> Call:
            call = Call(token, path, body, kind)
            r = http.post(f"{self.url}/datasets/loans/{path}", json=body, timeout=120)
            call.status, call.reply = r.status_code, r.json()
            with self.lock:
                self.calls.append(call)
            return call

        try:
            hot = HOT[i % len(HOT)]
            self.start.wait()  # every client asks for a hot release at the same moment
            send("query", hot, "hot")
            send("cost", hot, "cost")
            mine: list[dict[str, Any]] = []
            for _ in range(STEPS):
                roll = rng.random()
                if roll < 0.5:
                    if send("query", body := self.fresh(rng), "fresh").status == 200:
                        mine.append(body)
                elif roll < 0.75 and mine:
                    send("query", rng.choice(mine), "repeat")
                else:
                    send("cost", self.fresh(rng), "cost")
        except Exception as exc:  # noqa: BLE001 - every other failure fails the test
            with self.lock:
                self.errors.append(f"client {i}: {exc!r}")

    def run(self) -> None:
        threads = [threading.Thread(target=self.client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads)


@pytest.fixture(scope="module")
def crowd(loans: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One run of the 50 clients; the tests below check different things about it."""
    tmp_path = tmp_path_factory.mktemp("load")
    path = policy_copy(loans, tmp_path, epsilon_per_user=CAP, epsilon_total=100.0)
    path.write_text(path.read_text() + "".join(
        f'\n[[users]]\nname = "{name}"\nrole = "analyst"\ntoken = "{token}"\n'
        for token, name in EXTRA_USERS.items()))
    svc = ServiceProcess(path)
    clients = Clients(svc.url)
    t = time.perf_counter()
    clients.run()
    print(f"{len(clients.calls)} calls in {time.perf_counter() - t:.1f} s:",
          dict(Counter((c.kind, c.status) for c in clients.calls)))
    yield svc, clients, ledger_state(tmp_path / "ledger.sqlite")
    assert svc.stop() == 0


def test_fifty_clients_get_no_error_but_budget_refusals(crowd: Any) -> None:
    svc, clients, _ = crowd
    assert clients.errors == []
    assert len(clients.calls) == CLIENTS * (2 + STEPS)
    outcomes = Counter((c.kind, c.status) for c in clients.calls)
    assert set(outcomes) <= {("hot", 200), ("cost", 200), ("repeat", 200), ("fresh", 200),
                             ("fresh", 403)}, outcomes
    for c in clients.calls:
        if c.status == 403:
            assert c.reply["error"]["code"] == "budget_exceeded"
    # a refusal is only ever a fresh release: cached repeats and cost previews are free
    assert outcomes["fresh", 403] > 0 and outcomes["fresh", 200] > 0
    assert svc.call("GET", "/audit/verify", AUDREY).json()["ok"] is True


def test_every_users_spend_is_the_ledgers_sum_and_within_the_cap(crowd: Any) -> None:
    svc, clients, state = crowd
    replied: dict[str, float] = defaultdict(float)  # what the replies say each user spent
    for c in clients.calls:
        if c.path == "query" and c.status == 200 and c.reply["cached"] is False:
            replied[USERS[c.token]] += c.reply["epsilon"]
    for token, user in USERS.items():
        spent = state.spent[user]
        assert spent == pytest.approx(replied[user], abs=1e-9)
        assert spent <= CAP + 1e-9
        assert svc.spent(token) == pytest.approx(spent, abs=1e-9)
        refused = [c for c in clients.calls if c.token == token and c.status == 403]
        assert refused, user  # every user asked for more than the cap
        for c in refused:  # and was refused only when the query no longer fitted
            assert spent + c.body["epsilon"] > CAP - 1e-9


def test_identical_concurrent_releases_are_charged_once(crowd: Any) -> None:
    _, clients, state = crowd
    for body in HOT:
        replies = [c.reply for c in clients.calls if c.kind == "hot" and c.body == body]
        assert len(replies) == CLIENTS // len(HOT)
        (release_id,) = {r["release_id"] for r in replies}
        assert sorted(r["cached"] for r in replies) == [False] + [True] * (len(replies) - 1)
        assert {r["epsilon"] for r in replies} == {body["epsilon"]}
        assert state.charges_of[release_id] == 1
        assert state.cached_reads[release_id] == len(replies) - 1  # each audited at zero cost
        cells = {str(r["cells"]) for r in replies}
        assert len(cells) == 1  # the same noisy numbers for everyone
    for c in clients.calls:
        if c.kind == "cost" and c.body in HOT:
            assert c.reply["cached"] is True and c.reply["epsilon"] == 0.0
        elif c.kind == "cost":  # a preview of a query nobody asked: not cached, costs nothing
            assert c.reply["cached"] is False and c.reply["epsilon"] == c.body["epsilon"]
            assert c.body["epsilon"] not in state.by_epsilon


def test_repeats_are_the_cached_release_and_fresh_releases_are_new(crowd: Any) -> None:
    _, clients, state = crowd
    first = {str(sorted(c.body.items())): c.reply for c in clients.calls
             if c.kind == "fresh" and c.status == 200}
    assert all(r["cached"] is False for r in first.values())
    assert len({r["release_id"] for r in first.values()}) == len(first)
    repeats = [c for c in clients.calls if c.kind == "repeat"]
    assert repeats
    for c in repeats:
        original = first[str(sorted(c.body.items()))]
        assert c.reply["cached"] is True
        assert c.reply["release_id"] == original["release_id"]
        assert c.reply["cells"] == original["cells"]
    for r in first.values():
        assert state.charges_of[r["release_id"]] == 1
