"""The ledger (SQLite, WAL): budgets, the release cache and the hash-chained audit log.

A release, its charge and its audit row are written in one ``BEGIN IMMEDIATE`` transaction
(rule 6), which also serialises writers across processes sharing the file. The cache key
is the canonical query plus the dataset fingerprint, so a repeated query returns the
stored release at zero cost (rule 7) until the data changes.

Audit rows are chained: each row's hash covers its fields and the previous row's hash, so
editing, inserting or deleting a row in the middle breaks :meth:`Ledger.verify`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
# Budgets are compared with a small tolerance so 0.1 + 0.2 fits a limit of 0.3.
EPS_TOLERANCE = 1e-9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    release_id TEXT PRIMARY KEY, cache_key TEXT NOT NULL UNIQUE, dataset TEXT NOT NULL,
    user TEXT NOT NULL, purpose TEXT NOT NULL, kind TEXT NOT NULL, query TEXT NOT NULL,
    epsilon REAL NOT NULL, fingerprint TEXT NOT NULL, created_at TEXT NOT NULL,
    payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY, user TEXT NOT NULL, dataset TEXT NOT NULL, epsilon REAL NOT NULL,
    release_id TEXT NOT NULL REFERENCES releases(release_id), at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS charges_user_dataset ON charges(dataset, user);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, user TEXT NOT NULL, purpose TEXT NOT NULL,
    dataset TEXT NOT NULL, action TEXT NOT NULL, query TEXT NOT NULL, epsilon REAL NOT NULL,
    outcome TEXT NOT NULL, detail TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
"""

AUDIT_FIELDS = ("seq", "at", "user", "purpose", "dataset", "action", "query", "epsilon",
                "outcome", "detail")


class BudgetExceeded(RuntimeError):
    code = "budget_exceeded"
    status = 403

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Limits:
    per_user: float
    total: float


@dataclass(frozen=True)
class Budget:
    limit: float
    spent: float
    dataset_limit: float
    dataset_spent: float

    @property
    def remaining(self) -> float:
        return max(0.0, min(self.limit - self.spent, self.dataset_limit - self.dataset_spent))

    def allows(self, epsilon: float) -> bool:
        return (self.spent + epsilon <= self.limit + EPS_TOLERANCE
                and self.dataset_spent + epsilon <= self.dataset_limit + EPS_TOLERANCE)

    def check(self, epsilon: float, dataset: str) -> None:
        if not self.allows(epsilon):
            raise BudgetExceeded(f"budget exceeded on dataset {dataset!r}: the query costs "
                                 f"epsilon {epsilon:g} and {self.remaining:.6g} remains")

    def public(self) -> dict[str, float]:
        return {"limit": self.limit, "spent": round(self.spent, 12),
                "remaining": round(self.remaining, 12), "dataset_limit": self.dataset_limit,
                "dataset_spent": round(self.dataset_spent, 12)}


@dataclass(frozen=True)
class Verification:
    ok: bool
    rows: int
    first_bad: int | None = None

    def public(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "first_bad_seq": self.first_bad}


def _hash(prev: str, row: dict[str, Any]) -> str:
    body = json.dumps([row[f] for f in AUDIT_FIELDS], separators=(",", ":"), default=str)
    return hashlib.sha256((prev + body).encode()).hexdigest()


class Ledger:
    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="microseconds")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- budgets ---------------------------------------------------------------------------
    def _budget(self, db: sqlite3.Connection, user: str, dataset: str, limits: Limits) -> Budget:
        mine, total = db.execute(
            "SELECT coalesce(sum(CASE WHEN user = ? THEN epsilon END), 0), "
            "coalesce(sum(epsilon), 0) FROM charges WHERE dataset = ?", (user, dataset)).fetchone()
        return Budget(limits.per_user, mine, limits.total, total)

    def budget(self, user: str, dataset: str, limits: Limits) -> Budget:
        with self._lock:
            return self._budget(self._db, user, dataset, limits)

    # -- audit -----------------------------------------------------------------------------
    def _audit(self, db: sqlite3.Connection, *, user: str, purpose: str, dataset: str,
               action: str, query: str, epsilon: float, outcome: str, detail: str = "") -> None:
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last["seq"] + 1, last["hash"]) if last else (1, GENESIS)
        row = {"seq": seq, "at": self.now(), "user": user, "purpose": purpose,
               "dataset": dataset, "action": action, "query": query, "epsilon": float(epsilon),
               "outcome": outcome, "detail": detail}
        db.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                   [row[f] for f in AUDIT_FIELDS] + [prev, _hash(prev, row)])

    def audit(self, **fields: Any) -> None:
        """Write one audit row on its own (refusals, cache hits, administrative events)."""
        with self._write() as db:
            self._audit(db, **fields)

    def audit_rows(self, *, dataset: str | None = None, user: str | None = None,
                   after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM audit WHERE seq > ?", list[Any]([after])
        if dataset is not None:
            sql, args = sql + " AND dataset = ?", args + [dataset]
        if user is not None:
            sql, args = sql + " AND user = ?", args + [user]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq LIMIT ?", args + [limit]).fetchall()
        return [dict(r) for r in rows]

    def verify(self) -> Verification:
        """Recompute the hash chain; the first row that does not match is reported."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM audit ORDER BY seq").fetchall()
        prev, expected_seq = GENESIS, 1
        for r in rows:
            row = dict(r)
            if row["seq"] != expected_seq or row["prev"] != prev or _hash(prev, row) != row["hash"]:
                return Verification(False, len(rows), row["seq"])
            prev, expected_seq = row["hash"], expected_seq + 1
        return Verification(True, len(rows))

    # -- releases --------------------------------------------------------------------------
    @staticmethod
    def cache_key(canonical: str, fingerprint: str) -> str:
        return hashlib.sha256(f"{canonical}|{fingerprint}".encode()).hexdigest()

    def release_for(self, cache_key: str) -> str | None:
        """The id of the release cached under ``cache_key``, if any (a read, not audited)."""
        with self._lock:
            row = self._db.execute("SELECT release_id FROM releases WHERE cache_key = ?",
                                   (cache_key,)).fetchone()
        return row["release_id"] if row else None

    def serve_cached(self, cache_key: str, *, user: str, purpose: str, dataset: str,
                     query: str) -> dict[str, Any] | None:
        """The cached release for ``cache_key`` (audited as a zero-cost read), or None."""
        with self._write() as db:
            row = db.execute("SELECT payload FROM releases WHERE cache_key = ?",
                             (cache_key,)).fetchone()
            if row is None:
                return None
            payload: dict[str, Any] = json.loads(row["payload"])
            self._audit(db, user=user, purpose=purpose, dataset=dataset, action="query",
                        query=query, epsilon=0.0, outcome="cached",
                        detail=payload["release_id"])
            return payload

    def commit_release(self, *, cache_key: str, user: str, purpose: str, dataset: str,
                       kind: str, query: str, epsilon: float, fingerprint: str, limits: Limits,
                       build: Callable[[str, str, Budget], dict[str, Any]]
                       ) -> tuple[dict[str, Any], bool]:
        """Check the budget, charge it, store the release and audit it, atomically.

        ``build(release_id, created_at, budget_after)`` makes the payload. Returns the payload
        and whether it came from the cache (a concurrent identical query won the race).
        Raises :class:`BudgetExceeded` when the budget is short; nothing is written then.
        """
        with self._write() as db:
            row = db.execute("SELECT payload FROM releases WHERE cache_key = ?",
                             (cache_key,)).fetchone()
            if row is not None:
                payload: dict[str, Any] = json.loads(row["payload"])
                self._audit(db, user=user, purpose=purpose, dataset=dataset, action="query",
                            query=query, epsilon=0.0, outcome="cached",
                            detail=payload["release_id"])
                return payload, True
            budget = self._budget(db, user, dataset, limits)
            budget.check(epsilon, dataset)
            release_id = "r-" + secrets.token_hex(8)
            at = self.now()
            after = Budget(budget.limit, budget.spent + epsilon, budget.dataset_limit,
                           budget.dataset_spent + epsilon)
            payload = build(release_id, at, after)
            db.execute("INSERT INTO releases VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (release_id, cache_key, dataset, user, purpose, kind, query,
                        epsilon, fingerprint, at, json.dumps(payload)))
            db.execute("INSERT INTO charges (user, dataset, epsilon, release_id, at) "
                       "VALUES (?,?,?,?,?)", (user, dataset, epsilon, release_id, at))
            self._audit(db, user=user, purpose=purpose, dataset=dataset, action="query",
                        query=query, epsilon=epsilon, outcome="released", detail=release_id)
            return payload, False

    def releases(self, *, dataset: str | None = None, user: str | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
        sql, args = ("SELECT release_id, dataset, user, purpose, kind, query, epsilon, "
                     "fingerprint, created_at FROM releases WHERE 1=1", list[Any]())
        if dataset is not None:
            sql, args = sql + " AND dataset = ?", args + [dataset]
        if user is not None:
            sql, args = sql + " AND user = ?", args + [user]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at DESC LIMIT ?",
                                    args + [limit]).fetchall()
        return [dict(r) for r in rows]

    def release(self, release_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT payload FROM releases WHERE release_id = ?",
                                   (release_id,)).fetchone()
        return json.loads(row["payload"]) if row else None
