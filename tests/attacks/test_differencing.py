"""Differencing: two answers that differ by one person reveal that person, unless noised.

The strongest adversary knows every row but the target's and asks for the cell the target
would fall in, on a dataset that holds the target or its neighbour without it (the secret
bit). Exact answers give the bit away; the service's answers may not beat
``e^eps / (1 + e^eps)``.
"""

from __future__ import annotations

import numpy as np
from conftest import ALICE

from pdebug_jupyter.attacks import ServiceTarget, accuracy_exceeds, cell_value, max_accuracy

EPS = 0.5
TRIALS = 120
QUERY = {"kind": "histogram", "column": "age", "by": "sex"}


def _target_cell(bench) -> tuple[dict[str, str], int]:
    """The one cell where the neighbours differ, and its exact count without the target."""
    with_, without = (bench.control.query(d, {**QUERY, "epsilon": EPS}).body["cells"]
                      for d in ("loans", "loans_minus"))
    diff = [(a, b) for a, b in zip(with_, without, strict=True) if a["count"] != b["count"]]
    assert len(diff) == 1 and diff[0][0]["count"] - diff[0][1]["count"] == 1
    keys = {"age": diff[0][0]["age"], "sex": diff[0][0]["sex"]}
    assert keys["sex"] == bench.person["sex"]
    return keys, diff[0][1]["count"]


def _membership_trials(target, keys, known: int, trials: int, seed: int) -> int:
    """Right guesses of whether the target is in the data, one fresh release per trial."""
    rng = np.random.default_rng(seed)
    right = 0
    for i in range(trials):
        inside = bool(rng.integers(2))
        # distinct epsilons make every release fresh (and charged), never a cached copy
        answer = target.query("loans" if inside else "loans_minus",
                              {**QUERY, "epsilon": EPS * (1 + i * 1e-9)})
        assert answer.ok, answer.body
        value = cell_value(answer.body, **keys)
        right += (value is not None and value >= known + 1) == inside
    return right


def test_membership_differencing_wins_on_the_control_and_is_bounded_on_the_service(bench):
    keys, known = _target_cell(bench)
    assert _membership_trials(bench.control, keys, known, 30, seed=1) == 30
    spent = bench.target.spent("loans") + bench.target.spent("loans_minus")
    right = _membership_trials(bench.target, keys, known, TRIALS, seed=2)
    bound = max_accuracy(EPS)
    print(f"membership differencing: {right}/{TRIALS} = {right / TRIALS:.3f} right; "
          f"bound {bound:.3f}")
    assert not accuracy_exceeds(right, TRIALS, bound, alpha=1e-3)
    total = bench.target.spent("loans") + bench.target.spent("loans_minus") - spent
    assert abs(total - EPS * TRIALS) < 1e-4  # every trial was a charged, fresh release


def test_a_person_alone_in_a_cohort_is_read_off_the_control_but_suppressed_by_the_service(bench):
    query = {"kind": "histogram", "column": "income", "bins": 500, "by": ["default", "region"],
             "epsilon": EPS}
    exact = bench.control.query("loans", query).body["cells"]
    size: dict[tuple[str, str], int] = {}
    for c in exact:
        size[c["income"], c["region"]] = size.get((c["income"], c["region"]), 0) + c["count"]
    alone = {k for k, n in size.items() if n == 1}
    labels = {(c["income"], c["region"]): c["default"] for c in exact
              if (c["income"], c["region"]) in alone and c["count"] == 1}
    assert len(alone) >= 50 and len(labels) == len(alone)  # the control reads each label
    released = bench.target.query("loans", query)
    assert released.ok
    cells = [c for c in released.body["cells"] if (c["income"], c["region"]) in alone]
    shown = [c for c in cells if c["count"] is not None]
    # a true count of 0 or 1 clears min_cohort 25 only if the noise reaches +24
    assert len(cells) == 3 * len(alone) and not shown


def test_no_filter_can_single_out_a_person(bench):
    person = bench.person
    bodies = [{"where": {"customer_id": person["customer_id"]}}, {"where": {"name": "x"}},
              {"by": "email"}, {"where": {"age": int(person["age"])}},
              {"where": {"income": float(person["income"])}}, {"column": "ssn"}]
    target = ServiceTarget(bench.service.url, ALICE)
    before = target.spent("loans")
    for extra in bodies:
        answer = target.query("loans", {**QUERY, "epsilon": EPS, **extra})
        assert answer.status in (403, 422), (extra, answer.body)
        assert str(person["customer_id"]) not in str(answer.body)
    assert target.spent("loans") == before
