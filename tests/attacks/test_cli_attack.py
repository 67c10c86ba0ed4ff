"""``pdebug-jupyter attack``: says what it will spend, runs only when allowed, reports."""

from __future__ import annotations

import json

from conftest import ALICE

from pdebug_jupyter.attacks import planned_spend
from pdebug_jupyter.cli import main

EPS = 0.05


def _args(bench, *extra: str) -> list[str]:
    return ["attack", "--url", bench.service.url, "--token", ALICE, "--dataset", "loans",
            "--epsilon", str(EPS), "--canaries", str(bench.directory / "canaries.txt"), *extra]


def test_attack_spends_nothing_without_consent(bench, capsys):
    before = bench.target.spent("loans")
    cost = planned_spend(bench.target.schema("loans"), EPS)
    assert cost == EPS * 9  # a release per kind and the averaging probe's
    assert main(_args(bench)) == 2
    assert main(_args(bench, "--epsilon-budget", str(cost / 2))) == 2
    out = capsys.readouterr()
    assert f"spends epsilon {cost:g}" in out.out and "--yes" in out.err
    assert bench.target.spent("loans") == before


def test_attack_runs_the_suite_and_writes_a_report(bench, tmp_path, capsys):
    before = bench.target.spent("loans")
    report = tmp_path / "attack.json"
    assert main(_args(bench, "--epsilon-budget", "1", "--out", str(report))) == 0
    data = json.loads(report.read_text())
    assert data["passed"] and data["dataset"] == "loans"
    assert [f["name"] for f in data["findings"]] == [
        "data_dependent_bins", "error_channels", "averaging", "precision", "budget_exposure"]
    assert abs(bench.target.spent("loans") - before - EPS * 9) < 1e-9
    html = tmp_path / "attack.html"
    # a second run is answered from the cache: the same findings for no epsilon
    assert main(_args(bench, "--yes", "--out", str(html))) == 0
    assert abs(bench.target.spent("loans") - before - EPS * 9) < 1e-9
    assert "every defence held" in html.read_text()
    assert "held precision" in capsys.readouterr().out


def test_attack_with_a_policy_starts_its_own_local_service(bench, capsys):
    assert main(["attack", "--policy", str(bench.policy), "--dataset", "small",
                 "--epsilon-budget", "0.01"]) == 2
    assert "spends epsilon" in capsys.readouterr().out
