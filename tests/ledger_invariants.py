"""The ledger's invariants, read directly from its SQLite file (for the fault and load tests).

Rule 6 makes a release, its charge and its ``released`` audit row one transaction, so they
must agree one to one whatever happened to the service; refusals and cache hits are audited
at zero cost.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LedgerState:
    spent: dict[str, float]  # user -> sum of their charges
    by_epsilon: dict[float, list[str]]  # release epsilon -> release ids
    charges_of: dict[str, int]  # release id -> number of charges
    cached_reads: dict[str, int]  # release id -> ``cached`` audit rows naming it
    charges: int
    audit: int


def ledger_state(path: Path) -> LedgerState:
    """Check the invariants and return what the tests compare against the service."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        releases = db.execute("SELECT * FROM releases").fetchall()
        charges = db.execute("SELECT * FROM charges ORDER BY id").fetchall()
        audit = db.execute("SELECT * FROM audit ORDER BY seq").fetchall()
    finally:
        db.close()
    stored = sorted((r["release_id"], r["user"], r["epsilon"]) for r in releases)
    charged = sorted((c["release_id"], c["user"], c["epsilon"]) for c in charges)
    released = sorted((a["detail"], a["user"], a["epsilon"]) for a in audit
                      if a["action"] == "query" and a["outcome"] == "released")
    assert charged == stored  # every release charged exactly once, nothing else charged
    assert released == stored  # and audited exactly once
    assert [a["seq"] for a in audit] == list(range(1, len(audit) + 1))
    ids = {r["release_id"] for r in releases}
    cached_reads: dict[str, int] = defaultdict(int)
    for a in audit:
        if a["outcome"] != "released":
            assert a["epsilon"] == 0.0, dict(a)  # refusals and cache hits spend nothing
        if a["outcome"] == "cached":
            assert a["detail"] in ids
            cached_reads[a["detail"]] += 1
    for r in releases:  # the cached payload is the release it is filed under
        payload = json.loads(r["payload"])
        assert (payload["release_id"], payload["epsilon"]) == (r["release_id"], r["epsilon"])
    spent: dict[str, float] = defaultdict(float)
    charges_of: dict[str, int] = defaultdict(int)
    for c in charges:
        spent[c["user"]] += c["epsilon"]
        charges_of[c["release_id"]] += 1
    by_epsilon: dict[float, list[str]] = defaultdict(list)
    for r in releases:
        by_epsilon[r["epsilon"]].append(r["release_id"])
    return LedgerState(dict(spent), dict(by_epsilon), dict(charges_of), dict(cached_reads),
                       len(charges), len(audit))
