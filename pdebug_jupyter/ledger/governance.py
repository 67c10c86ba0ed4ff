"""Governance state next to the budgets: temporary grants and fired budget alerts.

A grant gives one user extra epsilon and/or a role on one dataset until an expiry. It lapses
by itself: budget and permission checks count only grants whose expiry is still ahead, so
nothing depends on noticing the lapse in time. Noticing it is for the audit log: the first
ledger write after the expiry moves the grant from ``active`` to ``lapsed`` and writes one
``grant_lapsed`` row in the same transaction, so the lapse is recorded exactly once, whichever
process sees it first.

A budget alert fires once per (dataset, user, scope, threshold): the ``alerts`` table holds
the ones that fired, written in the release's own transaction, so a restart never re-fires.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    grant_id TEXT PRIMARY KEY, user TEXT NOT NULL, dataset TEXT NOT NULL,
    epsilon REAL NOT NULL, role TEXT, purpose TEXT NOT NULL, granted_by TEXT NOT NULL,
    created_at TEXT NOT NULL, expires_at REAL NOT NULL, state TEXT NOT NULL,
    ended_at TEXT);
CREATE INDEX IF NOT EXISTS grants_due ON grants(state, expires_at);
CREATE TABLE IF NOT EXISTS alerts (
    dataset TEXT NOT NULL, user TEXT NOT NULL, scope TEXT NOT NULL, threshold REAL NOT NULL,
    at TEXT NOT NULL, release_id TEXT NOT NULL, PRIMARY KEY (dataset, user, scope, threshold));
"""

#: grant states; only ``active`` grants whose expiry lies ahead count
STATES = ("active", "lapsed", "revoked")


class GrantError(LookupError):
    """An unknown grant, or one that has already ended."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Grant:
    grant_id: str
    user: str
    dataset: str
    epsilon: float
    role: str | None
    purpose: str
    granted_by: str
    created_at: str
    expires_at: float
    state: str
    ended_at: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Grant:
        return cls(**dict(row))

    def in_force(self, now: float) -> bool:
        return self.state == "active" and self.expires_at > now

    def public(self, now: float) -> dict[str, Any]:
        # a lapse not yet written down is still shown as lapsed: the clock decides, not the row
        state = "lapsed" if self.state == "active" and not self.in_force(now) else self.state
        return {"id": self.grant_id, "user": self.user, "dataset": self.dataset,
                "epsilon": self.epsilon, "role": self.role, "purpose": self.purpose,
                "granted_by": self.granted_by, "created_at": self.created_at,
                "expires_at": iso(self.expires_at), "state": state, "ended_at": self.ended_at}


def granted_epsilon(db: sqlite3.Connection, user: str, dataset: str, now: float) -> float:
    (extra,) = db.execute(
        "SELECT coalesce(sum(epsilon), 0) FROM grants WHERE user = ? AND dataset = ? "
        "AND state = 'active' AND expires_at > ?", (user, dataset, now)).fetchone()
    return float(extra)


def granted_roles(db: sqlite3.Connection, user: str, dataset: str, now: float) -> set[str]:
    rows = db.execute(
        "SELECT DISTINCT role FROM grants WHERE user = ? AND dataset = ? AND role IS NOT NULL "
        "AND state = 'active' AND expires_at > ?", (user, dataset, now)).fetchall()
    return {r[0] for r in rows}


def due(db: sqlite3.Connection, now: float) -> list[Grant]:
    rows = db.execute("SELECT * FROM grants WHERE state = 'active' AND expires_at <= ? "
                      "ORDER BY expires_at, grant_id", (now,)).fetchall()
    return [Grant.from_row(r) for r in rows]


def end(db: sqlite3.Connection, grant_id: str, state: str, at: str) -> None:
    db.execute("UPDATE grants SET state = ?, ended_at = ? WHERE grant_id = ?",
               (state, at, grant_id))


def fire_alerts(db: sqlite3.Connection, *, user: str, dataset: str, release_id: str, at: str,
                thresholds: tuple[float, ...], levels: tuple[tuple[str, float, float], ...],
                tolerance: float) -> list[dict[str, Any]]:
    """Record every threshold that ``levels`` (scope, spent, limit) have reached and that has
    not fired before; return one warning per new one. Reaching, not crossing: a threshold
    added to the policy after the budget passed it fires once on the next release."""
    fired = []
    for scope, spent, limit in levels:
        who = user if scope == "user" else ""  # the dataset-wide cap is everybody's
        for t in thresholds:
            if limit <= 0 or spent < t * limit - tolerance:
                break  # thresholds are increasing
            cur = db.execute("INSERT OR IGNORE INTO alerts VALUES (?,?,?,?,?,?)",
                             (dataset, who, scope, t, at, release_id))
            if cur.rowcount:
                whose = "your budget" if scope == "user" else "the dataset-wide budget"
                fired.append({"code": "budget_alert", "scope": scope, "threshold": t,
                              "spent": round(spent, 12), "limit": limit,
                              "message": f"{t:.0%} of {whose} on {dataset!r} is spent "
                                         f"(epsilon {spent:.6g} of {limit:g})"})
    return fired
