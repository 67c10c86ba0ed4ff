"""Empirical DP audit of every release kind on neighbouring datasets.

``loans`` and ``loans_minus`` differ by one privacy unit. The exact cubes of one query of
each kind on both go through the service's mechanism (``plan_noise`` and ``release_cube``)
2,000 times each; half the samples pick a distinguishing event, the other half bound
epsilon from below with Clopper-Pearson limits (alpha 1e-3, Bonferroni over the kinds). The
bound must not exceed the claimed epsilon, and it must exceed it for a mechanism that adds
less noise than it claims (the audit can see a leak).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from privacy_estimates import compute_eps_lo
from privacy_estimates.utils import AttackResults

from pdebug_jupyter.attacks import (
    audit,
    cell_value,
    clopper_pearson,
    epsilon_lower_bound,
    max_accuracy,
    measures,
    release_bodies,
    touched,
)
from pdebug_jupyter.privacy import plan_noise, release_cube

EPS = 1.0
ALPHA = 1e-3
KINDS = 8


def test_clopper_pearson_matches_known_values():
    assert clopper_pearson(0, 10, 0.05) == pytest.approx((0.0, 1 - 0.05 ** 0.1))
    assert clopper_pearson(10, 10, 0.05) == pytest.approx((0.05 ** 0.1, 1.0))
    # the two-sided 95% interval for 5 of 10 is (0.1871, 0.8129)
    assert clopper_pearson(5, 10, 0.025) == pytest.approx((0.18709, 0.81291), abs=1e-5)
    assert max_accuracy(0.0) == 0.5 and max_accuracy(math.log(3)) == pytest.approx(0.75)


@pytest.mark.parametrize("fp,n0,fn,n1", [(100, 1000, 400, 1000), (5, 2000, 1500, 2000),
                                         (300, 1000, 280, 1000), (0, 500, 480, 500),
                                         (27, 1000, 731, 1000), (900, 1000, 600, 1000)])
def test_the_epsilon_bound_agrees_with_privacy_estimates(fp, n0, fn, n1):
    ours = epsilon_lower_bound(fp, n0, fn, n1, ALPHA)
    theirs = compute_eps_lo(AttackResults(FN=fn, FP=fp, TN=n0 - fp, TP=n1 - fn), delta=0.0,
                            alpha=ALPHA, method="beta")
    assert ours == pytest.approx(theirs, abs=1e-9)


def _schema(bench) -> dict:
    ds = bench.control.policy.datasets["loans"]
    return {"columns": [c.public() for c in ds.columns.values()]}


def test_every_kind_stays_within_its_epsilon_on_neighbouring_datasets(bench):
    bodies = release_bodies(_schema(bench), EPS)
    assert len(bodies) == KINDS
    ds = bench.control.policy.datasets["loans"]
    bounds = {}
    for kind, body in bodies.items():
        query, with_ = bench.control.cubes("loans", body)
        _, without = bench.control.cubes("loans_minus", body)
        assert sum(len(c) for c in touched(with_, without)) >= 1
        result = audit(query, without, with_, ds.max_rows_per_unit, ds.min_cohort,
                       samples=2000, alpha=ALPHA / KINDS)
        bounds[kind] = result
        assert result.bound <= result.claimed, result
    print("\n".join(f"audit {k}: epsilon >= {r.bound:.3f} (claimed {r.claimed:g}) by {r.test}"
                    for k, r in bounds.items()))
    # the audit has power: the count-only kinds come close to what they claim
    assert bounds["histogram"].bound > 0.5 * EPS


def _per_measure(bench) -> list[tuple[str, tuple[int, int], object, list, list]]:
    ds = bench.control.policy.datasets["loans"]
    out = []
    for kind, body in release_bodies(_schema(bench), EPS).items():
        query, with_ = bench.control.cubes("loans", body)
        _, without = bench.control.cubes("loans_minus", body)
        out += [(kind, m, query, without, with_) for m in measures(query, without, with_)]
    assert ds.max_rows_per_unit == 1
    return out


def test_every_measure_stays_within_its_share_of_epsilon(bench):
    """Calibration splits epsilon over five measures and performance_estimate over two, so
    the whole-query audit barely sees them (bounds near 0): each measure is audited against
    its own share instead, Bonferroni over every measure audited."""
    ds = bench.control.policy.datasets["loans"]
    todo = _per_measure(bench)
    assert {k for k, *_ in todo} == set(release_bodies(_schema(bench), EPS))
    lines, counts = [], []
    for kind, m, query, without, with_ in todo:
        r = audit(query, without, with_, ds.max_rows_per_unit, ds.min_cohort, samples=2000,
                  alpha=ALPHA / len(todo), measure=m)
        share = plan_noise(query, ds.max_rows_per_unit)[m[0]][m[1]]
        assert r.claimed == pytest.approx(share.epsilon)
        assert r.bound <= r.claimed, (kind, m, r)
        lines.append(f"audit {kind} {share.measure}: epsilon >= {r.bound:.3f} "
                     f"(share {r.claimed:.3f}) by {r.test}")
        if m[1] == 0:
            counts.append((kind, r.bound, r.claimed))
    print("\n".join(lines))
    # No power check here: which event wins on the held-out half varies (in one CI run the
    # histogram's count came out at 0.07 of its share, in another at 0.76), and a share of
    # 0.2 or a sum the unit fills to half its bound is below what 1,000 samples can see. The
    # audit's power is shown by the whole-query test above (histogram) and by the
    # wrong-sensitivity test below, on a sum.


def test_a_sum_noised_for_the_wrong_sensitivity_is_caught(bench):
    """A mechanism that forgets the fixed-point scale (sensitivity 1 for every measure):
    the whole calibration query's audit stays below 1, the score sum's own audit does not."""
    def unit_sensitivity(true, cube, noise, min_cohort):
        from dataclasses import replace
        return release_cube(true, cube, tuple(replace(n, sensitivity=1) for n in noise),
                            min_cohort)

    ds = bench.control.policy.datasets["loans"]
    ((_, m, query, without, with_),) = [
        x for x in _per_measure(bench) if x[0] == "calibration"
        and plan_noise(x[2], ds.max_rows_per_unit)[x[1][0]][x[1][1]].measure == "score_sum"]
    r = audit(query, without, with_, ds.max_rows_per_unit, ds.min_cohort, samples=2000,
              alpha=ALPHA, measure=m, mechanism=unit_sensitivity)
    assert r.bound > 2 * r.claimed, r


def test_the_audit_catches_a_mechanism_with_less_noise_than_it_claims(bench):
    def five_times_less_noise(true, cube, noise, min_cohort):
        from dataclasses import replace
        return release_cube(true, cube, tuple(replace(n, epsilon=5 * n.epsilon) for n in noise),
                            min_cohort)

    body = release_bodies(_schema(bench), EPS)["histogram"]
    query, with_ = bench.control.cubes("loans", body)
    _, without = bench.control.cubes("loans_minus", body)
    result = audit(query, without, with_, 1, 25, samples=2000, alpha=ALPHA,
                   mechanism=five_times_less_noise)
    assert result.bound > 2 * EPS, result


def test_end_to_end_releases_through_the_service_stay_within_epsilon(bench):
    """Fresh releases (distinct epsilons, each charged) of the target's cell on both
    datasets; the event is fixed in advance: the count exceeds the count without it."""
    query = {"kind": "histogram", "column": "age", "by": "sex"}
    with_, without = (bench.control.query(d, {**query, "epsilon": EPS}).body["cells"]
                      for d in ("loans", "loans_minus"))
    cell, known = next((a, b["count"]) for a, b in zip(with_, without, strict=True)
                       if a["count"] != b["count"])
    keys = {"age": cell["age"], "sex": cell["sex"]}
    samples = 50
    hits = {}
    for dataset in ("loans_minus", "loans"):
        values = [cell_value(bench.target.query(dataset, {**query, "epsilon": EPS * (
            1 - (1000 + i) * 1e-9)}).body, **keys) for i in range(samples)]
        hits[dataset] = int(np.sum([v is not None and v > known for v in values]))
    bound = epsilon_lower_bound(hits["loans_minus"], samples, samples - hits["loans"], samples,
                                ALPHA)
    print(f"end to end: {hits}, epsilon >= {bound:.3f}")
    assert bound <= EPS
