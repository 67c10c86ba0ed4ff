"""Privacy attacks and an empirical DP audit, to check a deployment's defences.

Black-box probes (:mod:`._probes`) run as a user with a token against the service; the
exact control (:class:`ExactTarget`) answers the same queries without noise from the
project's own engine, in the attacker's process, to show each attack works when the
defences are off. :func:`audit` bounds a mechanism's epsilon from below on neighbouring
datasets; :func:`reconstruct` is Dinur-Nissim's linear-programming reconstruction.
"""

from __future__ import annotations

from ._audit import AuditResult, audit, measures, touched
from ._probes import (
    Finding,
    averaging,
    budget_exposure,
    data_dependent_bins,
    data_dependent_bodies,
    equivalent_bodies,
    error_channels,
    latency_gap,
    non_integer_cells,
    precision,
    refusal_bodies,
    refusal_latency,
    release_bodies,
)
from ._reconstruct import Reconstruction, cohort_queries, reconstruct
from ._report import planned_spend, report_html, report_json, run_suite
from ._stats import (
    accuracy_exceeds,
    clopper_pearson,
    epsilon_from_rates,
    epsilon_lower_bound,
    max_accuracy,
)
from ._targets import Answer, ExactTarget, ServiceTarget, Target, cell_value

__all__ = [
    "Answer", "AuditResult", "ExactTarget", "Finding", "Reconstruction", "ServiceTarget",
    "Target", "accuracy_exceeds", "audit", "measures", "averaging", "budget_exposure", "cell_value",
    "clopper_pearson", "cohort_queries", "data_dependent_bins", "data_dependent_bodies",
    "epsilon_from_rates", "epsilon_lower_bound", "equivalent_bodies", "error_channels",
    "latency_gap", "max_accuracy", "non_integer_cells", "planned_spend", "precision",
    "reconstruct", "refusal_bodies", "refusal_latency", "release_bodies", "report_html",
    "report_json", "run_suite", "touched",
]
