"""The ledger (SQLite, WAL): budgets, the release cache and the hash-chained audit log.

A release, its charge and its audit row are written in one ``BEGIN IMMEDIATE`` transaction
(rule 6), which also serialises writers across processes sharing the file. The cache key
is the canonical query plus the dataset fingerprint, so a repeated query returns the
stored release at zero cost (rule 7) until the data changes.

Audit rows are chained: each row's hash covers its fields and the previous row's hash, so
editing, inserting or deleting a row in the middle breaks :meth:`Ledger.verify`.

Retention (:meth:`Ledger.purge`) deletes old releases, which are also the cache, and never
touches audit rows or charges: the chain stays verifiable and spent budget stays spent. A
purged query asked again is a fresh release, charged again, so rule 7 still holds: repeating
it cannot average noise away for free.

Grants (temporary extra epsilon or a role) and budget alerts live in :mod:`.governance`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import governance
from .governance import Grant, GrantError

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

__all__ = ["AUDIT_FIELDS", "Budget", "BudgetExceeded", "Grant", "GrantError", "Ledger",
           "Limits", "Verification"]

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
    #: fractions of a budget at which a budget alert fires once (increasing, in (0, 1])
    alerts: tuple[float, ...] = ()


@dataclass(frozen=True)
class Budget:
    limit: float
    spent: float
    dataset_limit: float
    dataset_spent: float
    #: extra epsilon from grants in force, already included in ``limit``
    granted: float = 0.0

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
                "dataset_spent": round(self.dataset_spent, 12),
                "granted": self.granted}


@dataclass(frozen=True)
class CachedRead:
    """One request answered from the release cache: what its audit row records."""

    cache_key: str
    user: str
    purpose: str
    dataset: str
    query: str


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
        self._db.executescript(_SCHEMA + governance.SCHEMA)

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
    def _budget(self, db: sqlite3.Connection, user: str, dataset: str, limits: Limits,
                now: float | None = None) -> Budget:
        mine, total = db.execute(
            "SELECT coalesce(sum(CASE WHEN user = ? THEN epsilon END), 0), "
            "coalesce(sum(epsilon), 0) FROM charges WHERE dataset = ?", (user, dataset)).fetchone()
        extra = governance.granted_epsilon(db, user, dataset,
                                           self.clock() if now is None else now)
        return Budget(limits.per_user + extra, mine, limits.total, total, extra)

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
        return self.serve_cached_many([CachedRead(cache_key, user, purpose, dataset, query)])[0]

    def serve_cached_many(self, reads: Sequence[CachedRead]) -> list[dict[str, Any] | None]:
        """:meth:`serve_cached` for many reads in one transaction: one fsync for all their
        audit rows (a group commit; each fsync costs milliseconds, and cache reads are most
        of what a busy service answers). None for a key with no release."""
        out: list[dict[str, Any] | None] = []
        with self._write() as db:
            for r in reads:
                row = db.execute("SELECT payload FROM releases WHERE cache_key = ?",
                                 (r.cache_key,)).fetchone()
                if row is None:
                    out.append(None)
                    continue
                payload: dict[str, Any] = json.loads(row["payload"])
                self._audit(db, user=r.user, purpose=r.purpose, dataset=r.dataset,
                            action="query", query=r.query, epsilon=0.0, outcome="cached",
                            detail=payload["release_id"])
                out.append(payload)
        return out

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
            ts = self.clock()  # one reading: the lapse, the budget and the release agree
            self._lapse(db, ts)  # a lapse is on record before any release charged without it
            budget = self._budget(db, user, dataset, limits, ts)
            budget.check(epsilon, dataset)
            release_id = "r-" + secrets.token_hex(8)
            at = governance.iso(ts)
            after = Budget(budget.limit, budget.spent + epsilon, budget.dataset_limit,
                           budget.dataset_spent + epsilon, budget.granted)
            payload = build(release_id, at, after)
            db.execute("INSERT INTO releases VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (release_id, cache_key, dataset, user, purpose, kind, query,
                        epsilon, fingerprint, at, json.dumps(payload)))
            db.execute("INSERT INTO charges (user, dataset, epsilon, release_id, at) "
                       "VALUES (?,?,?,?,?)", (user, dataset, epsilon, release_id, at))
            self._audit(db, user=user, purpose=purpose, dataset=dataset, action="query",
                        query=query, epsilon=epsilon, outcome="released", detail=release_id)
            warnings = self._alerts(db, user=user, purpose=purpose, dataset=dataset,
                                    release_id=release_id, at=at, budget=after,
                                    thresholds=limits.alerts)
            if warnings:  # for this reply only: the stored payload is everybody's cache
                payload = {**payload, "warnings": [*payload.get("warnings", []), *warnings]}
            return payload, False

    def _alerts(self, db: sqlite3.Connection, *, user: str, purpose: str, dataset: str,
                release_id: str, at: str, budget: Budget, thresholds: tuple[float, ...]
                ) -> list[dict[str, Any]]:
        warnings = governance.fire_alerts(
            db, user=user, dataset=dataset, release_id=release_id, at=at, thresholds=thresholds,
            levels=(("user", budget.spent, budget.limit),
                    ("dataset", budget.dataset_spent, budget.dataset_limit)),
            tolerance=EPS_TOLERANCE)
        for w in warnings:
            self._audit(db, user=user, purpose=purpose, dataset=dataset, action="budget_alert",
                        query="", epsilon=0.0, outcome=w["scope"], detail=json.dumps(
                            {k: w[k] for k in ("threshold", "spent", "limit")}
                            | {"release_id": release_id}))
        return warnings

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

    def charges(self, *, dataset: str | None = None, user: str | None = None
                ) -> list[dict[str, Any]]:
        """Every charge in the order it was made, with the kind of its release (``None`` once
        retention purged the release: the charge itself is never deleted). A read."""
        sql, args = ("SELECT c.id, c.user, c.dataset, c.epsilon, c.release_id, c.at, r.kind "
                     "FROM charges c LEFT JOIN releases r USING (release_id) WHERE 1=1",
                     list[Any]())
        if dataset is not None:
            sql, args = sql + " AND c.dataset = ?", args + [dataset]
        if user is not None:
            sql, args = sql + " AND c.user = ?", args + [user]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY c.id", args).fetchall()
        return [dict(r) for r in rows]

    def alerts(self, *, dataset: str | None = None) -> list[dict[str, Any]]:
        """Budget alerts that fired (``user`` is empty for the dataset-wide scope). A read."""
        sql, args = "SELECT * FROM alerts WHERE 1=1", list[Any]()
        if dataset is not None:
            sql, args = sql + " AND dataset = ?", args + [dataset]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY at, scope, threshold", args).fetchall()
        return [dict(r) for r in rows]

    def release(self, release_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT payload FROM releases WHERE release_id = ?",
                                   (release_id,)).fetchone()
        return json.loads(row["payload"]) if row else None

    # -- grants ----------------------------------------------------------------------------
    def grant(self, *, user: str, dataset: str, epsilon: float, role: str | None,
              expires_at: float, purpose: str, granted_by: str) -> Grant:
        """Give ``user`` extra ``epsilon`` and/or ``role`` on ``dataset`` until ``expires_at``
        (seconds since the epoch, by this ledger's clock); audited as ``grant``."""
        if not (epsilon > 0 or role):
            raise ValueError("a grant gives epsilon, a role or both")
        if expires_at <= self.clock():
            raise ValueError("a grant must expire in the future")
        g = Grant("g-" + secrets.token_hex(8), user, dataset, float(epsilon), role, purpose,
                  granted_by, self.now(), float(expires_at), "active")
        with self._write() as db:
            db.execute("INSERT INTO grants VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (g.grant_id, g.user, g.dataset, g.epsilon, g.role, g.purpose,
                        g.granted_by, g.created_at, g.expires_at, g.state, g.ended_at))
            self._audit(db, user=granted_by, purpose=purpose, dataset=dataset, action="grant",
                        query="", epsilon=g.epsilon, outcome="granted",
                        detail=json.dumps({"grant": g.grant_id, "user": user, "role": role,
                                           "expires_at": governance.iso(g.expires_at)}))
        return g

    def revoke(self, grant_id: str, *, by: str, purpose: str = "") -> Grant:
        """End an active grant now; audited as ``grant_revoked``."""
        with self._write() as db:
            self._lapse(db)  # an expired grant lapses rather than being revoked
            row = db.execute("SELECT * FROM grants WHERE grant_id = ?", (grant_id,)).fetchone()
            if row is None:
                raise GrantError(404, "unknown_grant", f"no grant {grant_id!r}")
            g = Grant.from_row(row)
            if g.state != "active":
                raise GrantError(409, "grant_ended", f"grant {grant_id!r} is already {g.state}")
            at = self.now()
            governance.end(db, grant_id, "revoked", at)
            self._audit(db, user=by, purpose=purpose, dataset=g.dataset, action="grant_revoked",
                        query="", epsilon=0.0, outcome="revoked",
                        detail=json.dumps({"grant": grant_id, "user": g.user}))
        return Grant(**{**g.__dict__, "state": "revoked", "ended_at": at})

    def _lapse(self, db: sqlite3.Connection, now: float | None = None) -> list[Grant]:
        lapsed = governance.due(db, self.clock() if now is None else now)
        for g in lapsed:
            governance.end(db, g.grant_id, "lapsed", self.now())
            self._audit(db, user=g.user, purpose=g.purpose, dataset=g.dataset,
                        action="grant_lapsed", query="", epsilon=0.0, outcome="lapsed",
                        detail=json.dumps({"grant": g.grant_id, "granted_by": g.granted_by,
                                           "expires_at": governance.iso(g.expires_at)}))
        return lapsed

    def lapse_grants(self) -> list[Grant]:
        """Write down the grants that have expired: one ``grant_lapsed`` audit row each, once.
        A read first, so the common case (nothing due) takes no write lock."""
        with self._lock:
            (first,) = self._db.execute("SELECT min(expires_at) FROM grants "
                                        "WHERE state = 'active'").fetchone()
        if first is None or first > self.clock():
            return []
        with self._write() as db:
            return self._lapse(db)

    def grants(self, *, user: str | None = None, dataset: str | None = None,
               in_force: bool = False) -> list[Grant]:
        sql, args = "SELECT * FROM grants WHERE 1=1", list[Any]()
        if user is not None:
            sql, args = sql + " AND user = ?", args + [user]
        if dataset is not None:
            sql, args = sql + " AND dataset = ?", args + [dataset]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at, grant_id", args).fetchall()
        now = self.clock()
        found = [Grant.from_row(r) for r in rows]
        return [g for g in found if g.in_force(now)] if in_force else found

    def granted_roles(self, user: str, dataset: str) -> set[str]:
        """Roles that grants in force give ``user`` on ``dataset``."""
        with self._lock:
            return governance.granted_roles(self._db, user, dataset, self.clock())

    # -- retention -------------------------------------------------------------------------
    def purge(self, retention_days: int, *, record_empty: bool = True) -> dict[str, Any]:
        """Delete releases (payloads and cache entries) older than ``retention_days`` by this
        ledger's clock, and record one ``purge`` audit row with the counts.

        Audit rows and charges are kept: the chain stays verifiable and a purge refunds
        nothing. Deleted pages are zeroed (``secure_delete``) and the WAL is checkpointed,
        so purged payloads do not linger in the file. ``record_empty=False`` (the service at
        start) skips the audit row when nothing was old enough.
        """
        cutoff = governance.iso(self.clock() - retention_days * 86400.0)
        with self._lock:
            self._db.execute("PRAGMA secure_delete=ON")
        with self._write() as db:
            releases = db.execute("DELETE FROM releases WHERE created_at < ?",
                                  (cutoff,)).rowcount
            if releases or record_empty:
                self._audit(db, user="", purpose="retention", dataset="", action="purge",
                            query="", epsilon=0.0, outcome="purged",
                            detail=json.dumps({"releases": releases, "before": cutoff,
                                               "retention_days": retention_days}))
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"releases": releases, "before": cutoff}
