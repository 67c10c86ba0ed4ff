"""Dinur-Nissim reconstruction of the ``default`` label of 150 people from cohort counts.

The attacker knows everyone's age, income, sex, region and window, and asks histograms of
random bin counts by the label. Exact counts give the label column back; the service's
budget (5) stops the attack after 20 queries at epsilon 0.25, and what those answer (noisy,
small cells suppressed) is no better than guessing the majority label.
"""

from __future__ import annotations

import numpy as np

from pdebug_jupyter.attacks import cohort_queries, reconstruct

QUERIES = 40
EPS = 0.25


def _queries(seed: int) -> list[dict]:
    return cohort_queries(np.random.default_rng(seed), ["age", "income"],
                          ["sex", "region", "window"], "default", QUERIES, EPS)


def test_reconstruction_recovers_the_label_column_from_exact_counts(bench):
    frame = bench.frames["small"]
    result = reconstruct(bench.control, "small", frame, "default", "1", _queries(3))
    print(f"control: {result}")
    assert result.answered == QUERIES and result.refused is None
    assert result.accuracy >= 0.95 and result.accuracy > result.baseline + 0.1


def test_the_budget_stops_reconstruction_near_the_majority_guess(bench):
    frame = bench.frames["small"]
    result = reconstruct(bench.target, "small", frame, "default", "1", _queries(3))
    print(f"service: {result}")
    assert result.answered == 20 and result.refused == "budget_exceeded"
    assert result.accuracy <= result.baseline + 0.1
    assert bench.target.remaining("small") < EPS
