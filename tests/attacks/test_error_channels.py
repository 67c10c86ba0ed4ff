"""Error channels: refusals and response shapes do not depend on the data."""

from __future__ import annotations

from attacks.conftest import ROWS
from pdebug_jupyter.attacks import error_channels, latency_gap, refusal_latency
from pdebug_jupyter.attacks._probes import refusals


def test_refusals_are_data_free_and_the_same_on_other_data(bench):
    schema = bench.target.schema("loans")
    found = error_channels(bench.target, "loans", schema, bench.canaries, other="loans_nonorth")
    assert found.passed, found.details
    assert len(bench.canaries) > 100
    for _, answer in refusals(bench.target, "small", schema):
        message = answer.error["message"]
        assert str(ROWS) not in message and "150" not in message, message


def test_a_cohort_that_exists_and_one_that_does_not_look_alike(bench):
    body = {"kind": "histogram", "column": "age", "by": "sex", "where": {"region": "north"},
            "epsilon": 0.2}
    exact = [bench.control.query(d, body).body for d in ("loans", "loans_nonorth")]
    assert sum(c["count"] for c in exact[0]["cells"]) > 300
    assert sum(c["count"] for c in exact[1]["cells"]) == 0
    full, empty = (bench.target.query(d, body) for d in ("loans", "loans_nonorth"))
    assert full.status == empty.status == 200
    assert set(full.body) == set(empty.body)
    assert [set(c) for c in full.body["cells"]] == [set(c) for c in empty.body["cells"]]
    assert [{k: c[k] for k in ("age", "sex")} for c in full.body["cells"]] == \
        [{k: c[k] for k in ("age", "sex")} for c in empty.body["cells"]]
    assert full.body["parts"] == empty.body["parts"]


def test_refusal_latency_does_not_depend_on_the_data(bench):
    """Refused before any data is read: datasets of 2,000, 1,6xx (no "north") and 150 rows
    take the same time to refuse, within the spread of the timings themselves."""
    body = {"kind": "histogram", "column": "age", "bins": 0, "where": {"region": "north"},
            "epsilon": 0.1}
    times = refusal_latency(bench.target, ["loans", "loans_nonorth", "small"], body, rounds=25)
    gap, spread = latency_gap(times)
    print(f"refusal latency: median gap {gap * 1e3:.2f} ms, median abs deviation "
          f"{spread * 1e3:.2f} ms")
    assert gap <= max(3 * spread, 0.02)
