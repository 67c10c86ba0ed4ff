"""The notebook widgets, kernel side, against a real service: pickers, free previews, an
explicit Run, release data only in the synced state, refusals shown and survived."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ALICE, OLIVIA, ServiceProcess, policy_copy

import pdebug_jupyter as pdj
from pdebug_jupyter import widgets
from pdebug_jupyter.widgets import Explorer

EXPLORERS = [widgets.CalibrationExplorer, widgets.FairnessExplorer, widgets.DriftExplorer,
             widgets.CohortExplorer]


def state_text(widget: Any) -> str:
    """Everything the widget syncs to the browser (and a saved notebook), but its code."""
    state = {k: v for k, v in widget.get_state().items() if k not in ("_esm", "_css")}
    return json.dumps(state)


def click_run(widget: Explorer) -> None:
    """What the Run button sends, through the widget's comm message dispatch."""
    widget._handle_custom_msg({"type": "run"}, [])


def releases(service: ServiceProcess, token: str = ALICE) -> int:
    return len(service.call("GET", "/releases", token).json()["releases"])


@pytest.fixture
def loans_ds(service: ServiceProcess) -> Any:
    with pdj.connect(service.url, token=ALICE, purpose="widget tests") as session:
        yield session.dataset("loans")


def test_pickers_come_from_the_schema_and_previews_spend_nothing(
        service: ServiceProcess, loans_ds: Any) -> None:
    fair = widgets.FairnessExplorer(loans_ds, epsilon=0.3)
    pickers = {c["name"]: [o["value"] for o in c["options"]] for c in fair.controls}
    assert pickers["score"] == ["score"] and pickers["label"] == ["default"]
    assert pickers["by"] == ["sex", "region"]  # protected and categorical; never identifiers
    assert fair.params == {"score": "score", "label": "default", "by": "sex", "bins": 10}
    assert fair.cost["epsilon"] == 0.3 and fair.cost["cached"] is False
    assert fair.cost["cells"] == 11 * 3 * 3  # (10 bins + other) x (2 labels + other) x groups
    fair.params = {**fair.params, "by": "region", "bins": 5}
    assert fair.cost["cells"] == 6 * 3 * 5
    fair.epsilon = 0.5
    assert fair.cost["epsilon"] == 0.5
    assert fair.badge == "synthetic data"  # make_loans' policy says so
    assert fair.release == {} and fair.spec == {}
    assert service.spent() == 0 and releases(service) == 0


def test_run_releases_once_and_the_state_holds_release_data_only(
        service: ServiceProcess, loans_ds: Any, loans: Any) -> None:
    canaries = [c for c in loans.canaries.read_text().splitlines() if c]
    for i, cls in enumerate(EXPLORERS):
        explorer = cls(loans_ds, epsilon=0.2)
        click_run(explorer)
        assert explorer.status["state"] == "done", explorer.status
        assert explorer.result is not None
        assert explorer.release["release_id"] == explorer.result.release_id
        assert explorer.release["user"] == "alice" and explorer.release["epsilon"] == 0.2
        assert explorer.spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
        assert explorer.spec["usermeta"]["pdebug"]["release_id"] == explorer.result.release_id
        assert service.spent() == pytest.approx(0.2 * (i + 1))
        text = state_text(explorer)
        assert not [c for c in canaries if c in text]
    assert releases(service) == 4
    # the cost preview now says the same query is free
    again = widgets.CohortExplorer(loans_ds, epsilon=0.2)
    assert again.cost["cached"] is True and again.cost["epsilon"] == 0


def test_fairness_views_cover_every_threshold_from_one_release(
        service: ServiceProcess, loans_ds: Any) -> None:
    fair = widgets.FairnessExplorer(loans_ds, epsilon=0.4)
    click_run(fair)
    release = fair.result
    assert fair.thresholds == release.thresholds and fair.threshold == 0.5
    values = fair.spec.get("datasets")
    data = next(iter(values.values())) if values else fair.spec["data"]["values"]
    assert {row["threshold"] for row in data} == set(release.thresholds)
    at = release.at(0.3)
    for row in data:
        if row["threshold"] == 0.3 and row["rate"] == "tpr":
            assert row["value"] == pytest.approx(at.loc[row["group"], "tpr"], nan_ok=True)
    gap = [g for g in fair.gaps
           if g["threshold"] == 0.3 and g["metric"] == "demographic_parity_difference"][0]
    assert gap["value"] == pytest.approx(release.demographic_parity_difference(0.3))
    assert gap["low"] <= gap["value"] <= gap["high"]
    spent, made = service.spent(), releases(service)
    for threshold in release.thresholds:  # what the slider syncs back when let go
        fair.threshold = threshold
        fair.rates = "tpr,fpr"
    assert service.spent() == spent and releases(service) == made


def test_refusals_are_shown_and_the_widget_stays_usable(
        service: ServiceProcess, loans_ds: Any) -> None:
    cal = widgets.CalibrationExplorer(loans_ds, epsilon=50)
    assert cal.cost["error"]["code"] == "invalid_epsilon"
    click_run(cal)
    assert cal.status["state"] == "error" and cal.status["code"] == "invalid_epsilon"
    assert "per-query limit" in cal.status["message"]
    cal.epsilon = 4.5
    click_run(cal)
    assert cal.status["state"] == "done"
    cal.params = {**cal.params, "by": "region"}
    assert cal.cost["affordable"] is False  # 0.5 left of 5
    click_run(cal)
    assert cal.status["code"] == "budget_exceeded" and cal.result.params["dims"][1] == "sex"
    assert service.spent() == pytest.approx(4.5)
    service.stop()
    try:
        click_run(cal)
        assert cal.status["state"] == "error" and cal.status["code"] == "unreachable"
        assert cal.cost["error"]["code"] == "unreachable"
    finally:
        service.start(port=int(service.url.rsplit(":", 1)[1].split("/")[0]))
    cal.epsilon = 0.1
    click_run(cal)
    assert cal.status["state"] == "done" and service.spent() == pytest.approx(4.6)


def test_a_colleague_sees_the_release_from_the_cache_for_free(
        service: ServiceProcess, loans_ds: Any) -> None:
    drift = widgets.DriftExplorer(loans_ds, epsilon=0.25, columns=["age", "income"])
    click_run(drift)
    made = drift.result.release_id
    assert drift.result.metadata()["release_id"] == made
    with pdj.connect(service.url, token=OLIVIA) as other:
        olivia = other.dataset("loans")
        seen = widgets.DriftExplorer(olivia, epsilon=0.25, columns=["age", "income"])
        assert seen.release["release_id"] == made  # drawn on creation: it costs nothing
        assert seen.release["user"] == "alice" and seen.release["cached"] is True
        replay = widgets.DriftExplorer.from_release(olivia, made)
        assert replay.release["release_id"] == made and replay.params["columns"] == ["age",
                                                                                     "income"]
        with pytest.raises(pdj.PdebugError, match="not a calibration release"):
            widgets.CalibrationExplorer.from_release(olivia, made)
    assert service.spent(OLIVIA) == 0 and service.spent() == pytest.approx(0.25)


def test_the_budget_meter_follows_runs_and_bad_arguments_are_refused(
        service: ServiceProcess, loans_ds: Any) -> None:
    meter = widgets.BudgetMeter(loans_ds.session)
    assert meter.user == {"name": "alice", "role": "analyst"}
    assert meter.datasets == [{"name": "loans", "limit": 5.0, "spent": 0.0, "remaining": 5.0}]
    click_run(widgets.CohortExplorer(loans_ds, epsilon=0.3))
    assert meter.datasets[0]["spent"] == pytest.approx(0.3)
    with pytest.raises(TypeError, match="unexpected keyword argument.*colour"):
        widgets.FairnessExplorer(loans_ds, colour="red")
    with pytest.raises(TypeError, match="takes a Dataset"):
        widgets.DriftExplorer("loans")  # type: ignore[arg-type]


def test_private_datasets_say_so(loans: Any, tmp_path: Path) -> None:
    svc = ServiceProcess(policy_copy(loans, tmp_path, synthetic="false"))
    try:
        with pdj.connect(svc.url, token=ALICE) as session:
            cal = widgets.CalibrationExplorer(session.dataset("loans"))
            assert cal.badge == "private data"
    finally:
        svc.stop()
