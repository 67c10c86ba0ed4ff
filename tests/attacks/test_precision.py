"""Precision (Mironov), thresholds on true counts, and data-dependent bins."""

from __future__ import annotations

from conftest import ALICE

from attacks.conftest import THRESHOLD_QUERY
from pdebug_jupyter.attacks import (
    ServiceTarget,
    cell_value,
    data_dependent_bins,
    non_integer_cells,
    precision,
    release_bodies,
)


def test_every_released_number_of_every_kind_is_an_integer(bench):
    schema = bench.target.schema("loans")
    assert set(release_bodies(schema, 0.5)) == {
        "histogram", "calibration", "confusion", "drift", "cohort_errors", "attribution",
        "performance_estimate", "marginals"}
    found = precision(bench.target, "loans", schema, 0.5)
    assert found.passed, found.details
    kinds = found.details["kinds"]
    assert all(v["cells"] > 0 and v["non_integer"] == [] for v in kinds.values())
    assert abs(found.epsilon_spent - 0.5 * 8) < 1e-9


def test_the_precision_scan_flags_a_float_cell():
    release = {"parts": [{"dims": [{"column": "age"}]}],
               "cells": [{"age": "[18, 25)", "count": 3}, {"age": "other", "count": 2.0000001},
                         {"age": "x", "count": None}, {"age": "y", "count": True}]}
    assert [b["type"] for b in non_integer_cells(release)] == ["float", "bool"]


def test_suppression_is_decided_on_the_noisy_count(bench):
    """A cell one below min_cohort is sometimes released, one above sometimes suppressed."""
    exact = bench.control.query("threshold", {**THRESHOLD_QUERY, "epsilon": 1.0}).body
    assert cell_value(exact, **bench.below) == bench.min_cohort - 1
    assert cell_value(exact, **bench.above) == bench.min_cohort + 1
    target = ServiceTarget(bench.service.url, ALICE)
    below_shown = above_hidden = 0
    releases = 40
    for i in range(releases):  # at epsilon 0.3: P(shown) = 0.43 and P(hidden) = 0.32
        answer = target.query("threshold", {**THRESHOLD_QUERY, "epsilon": 0.3 * (1 - i * 1e-9)})
        assert answer.ok and not answer.body["cached"]
        below_shown += cell_value(answer.body, **bench.below) is not None
        above_hidden += cell_value(answer.body, **bench.above) is None
    print(f"threshold {bench.min_cohort}: below shown {below_shown}/{releases}, "
          f"above hidden {above_hidden}/{releases}")
    assert below_shown > 0 and above_hidden > 0
    assert below_shown < releases and above_hidden < releases


def test_bins_bounds_and_extremes_never_come_from_the_data(bench):
    found = data_dependent_bins(bench.target, "loans", bench.target.schema("loans"))
    assert found.passed, found.details
    assert all(400 <= s < 500 for s in found.details["statuses"])
    assert len(found.details["statuses"]) == 15
