"""The analyses end to end: releases through the real service, typed views computed free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import OLIVIA, ServiceProcess, policy_copy

import pdebug_jupyter as pdj
from pdebug_jupyter.client.transport import Transport
from pdebug_jupyter.synth import make_loans


@pytest.fixture(scope="module")
def service(loans: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A service with budget enough for near-exact releases (checked against the rows)."""
    svc = ServiceProcess(policy_copy(loans, tmp_path_factory.mktemp("analyses"),
                                     epsilon_per_user=1e5, epsilon_total=1e6))
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def session(service: ServiceProcess) -> Any:
    with pdj.connect(service.url, token=OLIVIA, purpose="analyses tests") as s:
        yield s


@pytest.fixture(scope="module")
def raw(loans: Any) -> pd.DataFrame:
    """The rows behind the service, read here only to check the released views."""
    return pd.read_parquet(loans.data)


def test_one_confusion_release_serves_every_threshold_without_a_request(
        session: pdj.Session, monkeypatch: pytest.MonkeyPatch) -> None:
    rel = session.dataset("loans").confusion(by="sex", bins=10, epsilon=0.5)
    audit_before = len(session.request("GET", "/audit", params={"limit": 10_000})["audit"])
    calls: list[str] = []
    real = Transport.request

    def counting(self: Transport, *args: Any, **kw: Any) -> Any:
        calls.append(args[1])
        return real(self, *args, **kw)

    monkeypatch.setattr(Transport, "request", counting)
    for t in rel.thresholds:
        frame = rel.at(t)
        assert {"female", "male"} <= set(frame.index)
        rel.demographic_parity_difference(t)
        rel.equalized_odds_difference(t)
    rel.roc_curve()
    rel.pr_curve("female")
    assert calls == []
    monkeypatch.undo()
    audit_after = len(session.request("GET", "/audit", params={"limit": 10_000})["audit"])
    assert audit_after == audit_before


def test_calibration_release_matches_the_rows_per_bin(session: pdj.Session,
                                                      raw: pd.DataFrame) -> None:
    rel = session.dataset("loans").calibration(by="sex", bins=10, epsilon=900.0)
    female = raw[raw["sex"] == "female"]
    bins = np.minimum((female["score"] * 10).astype(int), 9)
    truth = female.groupby(bins).agg(n=("score", "size"), rate=("default", "mean"),
                                     mean=("score", "mean"))
    diagram = rel.reliability("female")
    shown = diagram[~diagram["suppressed"]]
    assert len(shown) >= 8
    for i, row in shown.iterrows():
        assert row["count"] == truth.loc[i, "n"]
        assert row["positive_rate"] == pytest.approx(truth.loc[i, "rate"], abs=1e-3)
        assert row["mean_score"] == pytest.approx(truth.loc[i, "mean"], abs=1e-3)
    by_group = rel.by_group()
    assert by_group.loc["female", "ece"] > 3 * by_group.loc["male", "ece"]  # planted
    assert rel.ece_ci[0] <= rel.ece <= rel.ece_ci[1]


def test_drift_release_flags_the_drifted_features_only(session: pdj.Session) -> None:
    rel = session.dataset("loans").drift(["age", "income", "region", "sex"], epsilon=8.0)
    table = rel.to_frame().set_index("column")
    assert list(table.index) == ["age", "income", "region", "sex"]
    assert table.loc["age", "drifted"] and table.loc["income", "drifted"]
    assert not table.loc["region", "drifted"] and not table.loc["sex", "drifted"]
    assert rel.drifted_share == 0.5


def test_cohort_errors_put_the_weak_cohort_first(session: pdj.Session) -> None:
    rel = session.dataset("loans").cohort_errors(["region", "age"], threshold=0.5, epsilon=4.0)
    top = rel.weakest(1).iloc[0]
    assert (top["region"], top["age"]) == ("east", "[18, 25)")
    assert bool(top["significant"])


def test_performance_estimate_matches_the_expectation_under_calibration(
        session: pdj.Session, raw: pd.DataFrame) -> None:
    rel = session.dataset("loans").performance_estimate(where={"window": "current"},
                                                        epsilon=900.0)
    current = raw[(raw["window"] == "current") & (raw["sex"] == "male")]
    assert len(current) > 1000
    frame = rel.at(0.5)
    p = raw.loc[raw["window"] == "current", "score"].clip(0, 1).to_numpy()
    expected_accuracy = np.mean(np.where(p >= 0.5, p, 1 - p))
    assert frame.loc["accuracy", "value"] == pytest.approx(expected_accuracy, abs=0.01)
    assert frame.loc["accuracy", "low"] <= frame.loc["accuracy", "value"]
    # intervals are post-processing with fixed bootstrap draws: every reading agrees
    assert rel.at(0.5).equals(frame)
    assert session.release(rel.release_id).at(0.5).equals(frame)


def test_attribution_ranks_declared_attribution_columns(tmp_path: Path) -> None:
    files = make_loans(5_000, seed=4, path=tmp_path, epsilon_per_user=1000.0,
                       epsilon_total=1000.0, users=[])
    frame = pd.read_parquet(files.data)
    rng = np.random.default_rng(0)
    frame["shap_age"] = rng.normal(0, 0.4, len(frame))
    frame["shap_income"] = rng.normal(0, 0.1, len(frame))
    frame.to_parquet(files.data)
    policy = files.policy.read_text().replace(
        "window = {", 'shap_age = { kind = "attribution", bounds = [-1, 1] }\n'
        'shap_income = { kind = "attribution", bounds = [-1, 1] }\nwindow = {')
    files.policy.write_text(policy)
    with pdj.connect(policy=files.policy) as s:
        rel = s.dataset("loans").attribution(epsilon=100.0)
        table = rel.to_frame()
        assert list(table["column"]) == ["shap_age", "shap_income"]
        assert table.loc[0, "importance"] == pytest.approx(
            np.abs(frame["shap_age"].clip(-1, 1)).mean(), abs=1e-3)
        assert (table["low"] <= table["importance"]).all()
        with pytest.raises(pdj.PdebugError) as err:
            s.dataset("loans").histogram("age", by="shap_age", epsilon=1.0)
        assert err.value.code == "invalid_parameter"


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("calibration", {"label": "region"}, "expected one of label"),
    ("confusion", {"score": "age"}, "expected one of score"),
    ("cohort_errors", {"features": ["region"], "threshold": 1.5}, "threshold must be"),
    ("cohort_errors", {"features": []}, "features must be"),
    ("drift", {"reference": {"window": "current"}, "current": {"window": "current"}},
     "must be disjoint"),
    ("calibration", {"by": "score_missing"}, "unknown column"),
])
def test_bad_analysis_parameters_are_refused_and_spend_nothing(
        service: ServiceProcess, kind: str, params: dict[str, Any], message: str) -> None:
    before = service.spent(OLIVIA)
    r = service.query({"kind": kind, "epsilon": 0.1, **params}, token=OLIVIA)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]["message"]
    assert service.spent(OLIVIA) == before


def test_a_threshold_off_the_bin_edges_is_a_clear_error(session: pdj.Session) -> None:
    rel = session.dataset("loans").confusion(bins=4, epsilon=0.3)
    with pytest.raises(ValueError, match="0.25"):
        rel.at(0.3)


def test_check_command_fails_on_planted_problems_and_passes_the_control(
        loans: Any, tmp_path: Path) -> None:
    planted = policy_copy(loans, tmp_path)
    report = tmp_path / "report.html"
    run = subprocess.run([sys.executable, "-m", "pdebug_jupyter", "check", "--policy",
                          str(planted), "--dataset", "loans", "--epsilon", "4", "--out",
                          str(report)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FINDING calibration: group female" in run.stdout
    assert "Recalibrate" in report.read_text()
    control = make_loans(20_000, seed=12, path=tmp_path / "control", problems=False)
    run = subprocess.run([sys.executable, "-m", "pdebug_jupyter", "check", "--policy",
                          str(control.policy), "--dataset", "loans", "--epsilon", "4"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 finding(s)" in run.stdout


def test_cohort_errors_from_a_prediction_column_match_the_score_rule(tmp_path: Path) -> None:
    files = make_loans(5_000, seed=6, path=tmp_path, epsilon_per_user=1e5,
                       epsilon_total=1e5, users=[])
    frame = pd.read_parquet(files.data)
    frame["approved"] = (frame["score"] >= 0.3).astype("int64")
    frame.to_parquet(files.data)
    files.policy.write_text(files.policy.read_text().replace(
        "window = {", 'approved = { kind = "label" }\nwindow = {'))
    with pdj.connect(policy=files.policy) as s:
        ds = s.dataset("loans")
        by_column = ds.cohort_errors(["region"], label="default", prediction="approved",
                                     epsilon=5e4).to_frame().set_index("region")
        by_score = ds.cohort_errors(["region"], label="default", threshold=0.3,
                                   epsilon=5e4).to_frame().set_index("region")
        with pytest.raises(pdj.PdebugError, match="not both"):
            ds.cohort_errors(["region"], label="default", prediction="approved",
                             threshold=0.3, epsilon=1.0)
    wrong = (frame["score"] >= 0.3) != (frame["default"] == 1)
    expected = wrong.groupby(frame["region"]).sum()
    for region in ("north", "south", "east", "west"):
        assert by_column.loc[region, "errors"] == by_score.loc[region, "errors"]
        assert by_column.loc[region, "errors"] == expected[region]


def test_health_check_leaves_out_what_the_policy_gives_no_footing_for(tmp_path: Path) -> None:
    files = make_loans(5_000, seed=8, path=tmp_path, users=[])
    lines = [ln for ln in files.policy.read_text().splitlines()
             if not ln.startswith(("sex =", "window ="))]
    files.policy.write_text("\n".join(lines) + "\n")
    with pdj.connect(policy=files.policy) as s:
        ds = s.dataset("loans")
        report = ds.health_check(epsilon=1.0)
        assert len(report.release_ids) == 2  # calibration and cohorts: no fairness, no drift
        assert report.epsilon == pytest.approx(0.45)
        assert ds.budget["spent"] == pytest.approx(0.45)
        kinds = [s.release(r).kind for r in report.release_ids]
        assert kinds == ["calibration", "cohort_errors"]
