"""Averaging: repeats, rephrasings and re-reads of one query must all be the one cached
release, so averaging them removes no noise and spends nothing more."""

from __future__ import annotations

from pdebug_jupyter.attacks import averaging, equivalent_bodies


def test_repeats_rephrasings_and_rereads_return_one_release_for_one_charge(bench):
    schema = bench.target.schema("loans")
    body = {"kind": "histogram", "column": "income", "by": "sex", "where": {"window": "current"},
            "epsilon": 0.3}
    variants = equivalent_bodies(schema, body)
    # key order, a one-element list filter, by as a list, and the policy's 10 bins spelled out
    assert {"bins": 10}.items() <= variants[-1].items() and len(variants) == 4
    found = averaging(bench.target, "loans", schema, 0.3, body=body)
    assert found.passed, found.details
    assert all(found.details["identical"]) and all(found.details["rereads_identical"])
    assert abs(found.details["spent"] - 0.3) < 1e-9 and found.epsilon_spent == found.details[
        "spent"]


def test_averaging_many_repeats_gives_the_single_release_variance(bench):
    body = {"kind": "histogram", "column": "age", "epsilon": 0.2}
    answers = [bench.target.query("loans", body) for _ in range(10)]
    values = {tuple(c["count"] for c in a.body["cells"]) for a in answers}
    assert len(values) == 1 and [a.body["cached"] for a in answers][1:] == [True] * 9


def test_a_different_bin_count_is_a_different_query_and_is_charged(bench):
    before = bench.target.spent("loans")
    a = bench.target.query("loans", {"kind": "histogram", "column": "income", "bins": 20,
                                     "epsilon": 0.1})
    assert a.ok and not a.body["cached"] and len(a.body["cells"]) == 21
    assert abs(bench.target.spent("loans") - before - 0.1) < 1e-9
