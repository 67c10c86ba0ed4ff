"""The privacy report: real releases through a real service (several users and kinds, a grant,
an alert), then ``pdebug-jupyter report`` whose numbers must match what the service said."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import ALICE, OLIVIA, VICTOR, ServiceProcess, policy_copy

from pdebug_jupyter.policy import load_policy
from pdebug_jupyter.report import build_report


def released(svc: ServiceProcess, body: dict[str, Any], token: str, purpose: str
             ) -> dict[str, Any]:
    r = svc.call("POST", "/datasets/loans/query", token, body=body, purpose=purpose)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_the_report_matches_the_ledger_and_holds_no_row_values(loans: Any, tmp_path: Path
                                                               ) -> None:
    policy = policy_copy(loans, tmp_path, epsilon_per_user=2.0)
    policy.write_text(policy.read_text().replace("[service]\n", "[service]\nalerts = [0.5]\n"))
    svc = ServiceProcess(policy)
    try:
        made = svc.call("POST", "/grants", OLIVIA, body={
            "user": "alice", "dataset": "loans", "epsilon": 1.0, "ttl": 3600,
            "purpose": "quarterly fairness review"})
        assert made.status_code == 201, made.text
        grant = made.json()["grant"]
        asked = [  # alice's limit is 2 + 1 granted; the 0.5 alert fires at 1.5
            (ALICE, "fairness review", {"kind": "histogram", "column": "region",
                                        "epsilon": 0.5}),
            (ALICE, "fairness review", {"kind": "calibration", "by": "sex", "epsilon": 0.5}),
            (ALICE, "fairness review", {"kind": "confusion", "by": "sex", "epsilon": 0.6}),
            (ALICE, "error analysis", {"kind": "cohort_errors", "epsilon": 0.1,
                                       "features": ["region", "sex", "age"]}),
            (ALICE, "fairness review", {"kind": "histogram", "column": "region",
                                        "epsilon": 0.5}),  # cached: free
            (OLIVIA, "drift check", {"kind": "drift", "epsilon": 0.4,
                                     "reference": {"window": "reference"},
                                     "current": {"window": "current"}})]
        replies = [released(svc, body, token, purpose) for token, purpose, body in asked]
        bad = svc.call("POST", "/datasets/loans/query", ALICE,
                       body={"kind": "histogram", "column": "nope", "epsilon": 0.5})
        assert bad.status_code == 422
        assert svc.query({"kind": "histogram", "column": "sex", "epsilon": 0.1},
                         token=VICTOR).status_code == 403
        spent = {"alice": svc.spent(ALICE), "olivia": svc.spent(OLIVIA)}
        chain = svc.call("GET", "/audit/verify", OLIVIA).json()
    finally:
        svc.stop()

    fresh = [r for r in replies if not r["cached"]]
    assert len(fresh) == 5 and spent == {"alice": pytest.approx(1.7),
                                         "olivia": pytest.approx(0.4)}
    alerts = [(w["scope"], w["threshold"], r["release_id"]) for r in replies
              for w in r["warnings"]]
    assert alerts == [("user", 0.5, replies[2]["release_id"])]
    kinds: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"releases": 0, "epsilon": 0.0, "cells": 0, "suppressed_cells": 0})
    for r in fresh:
        k = kinds[r["kind"]]
        k["releases"] += 1
        k["epsilon"] += r["epsilon"]
        k["cells"] += len(r["cells"])
        k["suppressed_cells"] += len(r["suppressed"])
    assert kinds["cohort_errors"]["suppressed_cells"] > 0  # 0.1 over 3 features: some hide

    html_out, json_out = tmp_path / "report.html", tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pdebug_jupyter", "report", "--policy",
                           str(policy), "--out", str(html_out)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(json_out.read_text())
    loans_section = report["datasets"]["loans"]
    users = loans_section["users"]
    assert {u: v["epsilon"] for u, v in users.items()} == spent
    assert {u: v["releases"] for u, v in users.items()} == {"alice": 4, "olivia": 1}
    assert users["alice"]["limit_now"] == 3.0 and users["alice"]["granted_now"] == 1.0
    assert users["alice"]["purposes"] == ["error analysis", "fairness review"]
    assert {k: {**v, "epsilon": pytest.approx(v["epsilon"])} for k, v in kinds.items()} == \
        loans_section["releases_by_kind"]
    assert loans_section["suppressed_cells"] == sum(len(r["suppressed"]) for r in fresh)
    assert loans_section["epsilon"]["spent"] == pytest.approx(2.1)
    assert loans_section["cached_answers"] == 1 and loans_section["refusals"] == 1
    assert [(g["id"], g["user"], g["epsilon"], g["state"]) for g in loans_section["grants"]] \
        == [(grant["id"], "alice", 1.0, "active")]
    assert [(a["user"], a["scope"], a["threshold"], a["release_id"])
            for a in loans_section["alerts"]] == [("alice", "user", 0.5,
                                                   replies[2]["release_id"])]
    fingerprint = replies[0]["provenance"]["fingerprint"]
    assert [f["fingerprint"] for f in loans_section["fingerprints"]] == [fingerprint]
    digest = load_policy(policy, require_tokens=False).digest
    assert report["policy"]["hash"] == digest
    assert loans_section["policy_hashes"] == {digest: 5}
    assert loans_section["mechanisms"] == {fresh[0]["mechanism"]: 5}
    assert loans_section["settings"]["min_cohort"] == 25
    assert loans_section["settings"]["max_rows_per_unit"] == 1
    assert report["audit"] == chain and chain["ok"] is True
    assert [r["release_id"] for r in loans_section["releases"]] == [
        r["release_id"] for r in fresh]
    assert "intact over" in report["summary"] and "2 user(s) made 5" in report["summary"]

    page = html_out.read_text()
    assert page.count("<svg") == 3 and page.count("class='vega-lite'") == 3
    for title in ("epsilon over time", "releases by kind", "suppressed cells"):
        assert f"data-chart='{title}'" in page
    assert "cdn" not in page.lower() and "<script src" not in page
    assert digest in page and fingerprint in page and grant["id"] in page
    assert "quarterly fairness review" in page and "drift check" in page
    canaries = [c for c in loans.canaries.read_text().splitlines() if c.strip()]
    assert len(canaries) > 10
    for text in (page, json_out.read_text()):
        assert not [c for c in canaries if c in text]

    # one user's view, and a tampered chain, without drawing (build_report is the same data)
    alice = build_report(policy, dataset="loans", user="alice")["datasets"]["loans"]
    assert list(alice["users"]) == ["alice"] and alice["epsilon"]["spent"] == pytest.approx(1.7)
    assert alice["epsilon"]["dataset_spent_all_users"] == pytest.approx(2.1)
    assert len(alice["grants"]) == 1 and len(alice["releases"]) == 4
    db = sqlite3.connect(policy.parent / "ledger.sqlite")
    db.execute("UPDATE audit SET epsilon = 0 WHERE seq = 2")
    db.commit()
    db.close()
    broken = build_report(policy)
    assert broken["audit"]["ok"] is False and broken["audit"]["first_bad_seq"] == 2
    assert "BROKEN" in broken["summary"]
