"""Recipes: a session's queries (never its results) replayed on another dataset version,
charged as usual there, with old and new results side by side."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import ALICE, ServiceProcess, policy_copy

import pdebug_jupyter as pdj
from pdebug_jupyter.client import Release
from pdebug_jupyter.metrics.releases import CalibrationRelease, ConfusionRelease, DriftRelease
from pdebug_jupyter.synth import make_loans

R = TypeVar("R", bound=Release)


def typed(release: Release, kind: type[R]) -> R:
    assert isinstance(release, kind)
    return release


QUERY_KEYS = {"dataset", "kind", "epsilon", "params", "purpose", "release_id", "asked_at",
              "created_at", "fingerprint", "model_version"}


@pytest.fixture(scope="module")
def two_versions(loans: Any, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[ServiceProcess]:
    """One service over version 1 (``loans``: seed 11, planted problems) and version 2
    (``loans_v2``: seed 23, no problems, as after a fix and a retraining)."""
    tmp = tmp_path_factory.mktemp("versions")
    v2 = make_loans(8000, seed=23, path=tmp / "v2", name="loans_v2", problems=False)
    text = v2.policy.read_text()
    section = text[text.index("[datasets.loans_v2]"):].replace(
        f'source = "{v2.data.name}"', f'source = "{v2.data}"')
    policy = policy_copy(loans, tmp)
    policy.write_text(policy.read_text() + "\n" + section)
    svc = ServiceProcess(policy)
    yield svc
    svc.stop()


def test_a_replay_reruns_the_recipe_on_the_new_version_charged_and_side_by_side(
        two_versions: ServiceProcess, tmp_path: Path) -> None:
    svc = two_versions
    with pdj.connect(svc.url, token=ALICE, purpose="model review v1") as session:
        v1 = session.dataset("loans")
        cal = typed(v1.calibration(by="sex", epsilon=0.3), CalibrationRelease)
        conf = typed(v1.confusion(by="sex", epsilon=0.3), ConfusionRelease)
        drift = typed(v1.drift(epsilon=0.3), DriftRelease)
        hist = v1.histogram("region", by="sex", epsilon=0.2)
        assert v1.histogram("region", by="sex", epsilon=0.2).cached  # asked twice, kept once
        session.purpose = "something else"
        v1.histogram("age", epsilon=0.1)
        assert [q["kind"] for q in session.recipe(purpose="something else")["queries"]] == [
            "histogram"]
        assert session.recipe(since="2999-01-01T00:00:00+00:00")["queries"] == []

        path = tmp_path / "recipe.json"
        recipe = session.export_recipe(path, purpose="model review v1")
        text = path.read_text()
        assert json.loads(text) == recipe
        assert [q["kind"] for q in recipe["queries"]] == [
            "calibration", "confusion", "drift", "histogram"]
        assert all(set(q) == QUERY_KEYS for q in recipe["queries"])
        assert [q["release_id"] for q in recipe["queries"]] == [
            r.release_id for r in (cal, conf, drift, hist)]
        assert recipe["queries"][0]["params"] == {"by": "sex"}
        for word in ('"cells"', '"suppressed"', '"count"', '"parts"', '"noise'):
            assert word not in text  # queries only: no released value travels in a recipe

        assert svc.spent(ALICE, "loans_v2") == 0.0
        v2 = session.dataset("loans_v2")
        comparison = pdj.replay(path, v2)
        assert svc.spent(ALICE, "loans_v2") == pytest.approx(1.1)  # charged as usual
        assert comparison.epsilon == pytest.approx(1.1)
        assert svc.spent(ALICE, "loans") == pytest.approx(1.2)  # v1 untouched by the replay
        news = [a.new for a in comparison.analyses]
        assert [r.dataset for r in news] == ["loans_v2"] * 4
        assert not any(r.cached for r in news)
        assert {r.provenance["fingerprint"] for r in news}.isdisjoint(
            {cal.provenance["fingerprint"]})

        frame = comparison.to_frame()
        assert list(frame["old_release"].unique()) == [cal.release_id, conf.release_id,
                                                       drift.release_id, hist.release_id]
        assert list(frame["new_release"].unique()) == [r.release_id for r in news]

        def rows(release_id: str) -> Any:
            return frame[frame["old_release"] == release_id].set_index(["metric", "subject"])

        # every number equals the metric read off the individual releases (fetched afresh)
        fetched = [session.release(r.release_id) for r in news]
        new_cal = typed(fetched[0], CalibrationRelease)
        new_conf = typed(fetched[1], ConfusionRelease)
        new_drift, new_hist = typed(fetched[2], DriftRelease), fetched[3]
        c = rows(cal.release_id)
        assert c.loc[("ece", "all rows"), "old"] == pytest.approx(cal.ece)
        assert c.loc[("ece", "all rows"), "new"] == pytest.approx(new_cal.ece)
        old_groups, new_groups = cal.by_group()["ece"], new_cal.by_group()["ece"]
        for group in new_groups.index:
            assert c.loc[("ece", group), "new"] == pytest.approx(new_groups[group], nan_ok=True)
            assert c.loc[("ece", group), "old"] == pytest.approx(old_groups[group], nan_ok=True)
        f = rows(conf.release_id)
        assert f.loc[("demographic_parity_difference", "at 0.5"), "old"] == pytest.approx(
            conf.demographic_parity_difference(0.5))
        assert f.loc[("demographic_parity_difference", "at 0.5"), "new"] == pytest.approx(
            new_conf.demographic_parity_difference(0.5))
        assert f.loc[("selection_rate", "female at 0.5"), "new"] == pytest.approx(
            new_conf.at(0.5)["selection_rate"]["female"])
        d = rows(drift.release_id).reset_index()
        assert list(d["subject"]) == list(drift.table["column"])
        assert list(d["old"]) == pytest.approx(list(drift.table["statistic"]))
        assert list(d["new"]) == pytest.approx(list(new_drift.table["statistic"]))
        h = rows(hist.release_id)
        for side, release in (("old", hist), ("new", new_hist)):
            for _, cell in release.frame().iterrows():
                got = h.loc[("count", f"{cell['region']} / {cell['sex']}"), side]
                assert (math.isnan(got) if cell["suppressed"] else got == cell["count"])
        headline = frame[frame["subject"].isin(["all rows", "at 0.5"])
                         | (frame["kind"] == "drift")]
        assert len(headline) == 3 + len(drift.table) and headline[["old", "new"]].notna().all(
            axis=None)

        spec = comparison.chart().to_dict()
        versions = {v["version"] for values in spec["datasets"].values() for v in values}
        assert versions == {"old", "new"} and "facet" in spec

        # a recipe that does not fit spends nothing: a bad parameter, or more than remains
        before = svc.spent(ALICE, "loans_v2")
        bad = {**recipe, "queries": [{**recipe["queries"][3], "params": {"column": "nope"}}]}
        with pytest.raises(pdj.PdebugError):
            pdj.replay(bad, v2)
        big = {**recipe, "queries": [{**recipe["queries"][3], "epsilon": 4.5}]}
        with pytest.raises(pdj.PdebugError, match="nothing was spent"):
            pdj.replay(big, v2)
        with pytest.raises(pdj.PdebugError, match="not a recipe"):
            pdj.replay({"queries": []}, v2)
        assert svc.spent(ALICE, "loans_v2") == before

    # the CLI: a local service on the same ledger; the same queries are now cached, so free
    done = subprocess.run([sys.executable, "-m", "pdebug_jupyter", "replay", str(path),
                           "--policy", str(svc.policy), "--dataset", "loans_v2"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "4 analyses replayed on loans_v2; epsilon spent 0" in done.stdout
    assert "demographic_parity_difference" in done.stdout
