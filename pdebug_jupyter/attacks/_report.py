"""The black-box suite as one run against a deployment, and its report for data owners."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from ._probes import (
    Finding,
    averaging,
    budget_exposure,
    data_dependent_bins,
    error_channels,
    precision,
    release_bodies,
)
from ._targets import ServiceTarget


def planned_spend(schema: Mapping[str, Any], epsilon: float) -> float:
    """Epsilon the suite spends: one release per query kind the dataset allows, and the
    averaging probe's one release (its repeats are free)."""
    return epsilon * (len(release_bodies(schema, epsilon)) + 1)


def run_suite(target: ServiceTarget, dataset: str, epsilon: float,
              canaries: Iterable[str] = ()) -> list[Finding]:
    """Refusal probes first (free), then the releases, then what the budget left allows."""
    schema = target.schema(dataset)
    if "columns" not in schema:
        raise ValueError(f"dataset {dataset!r} cannot be read: {schema.get('error')}")
    found = [data_dependent_bins(target, dataset, schema),
             error_channels(target, dataset, schema, canaries)]
    found.append(averaging(target, dataset, schema, epsilon))
    found.append(precision(target, dataset, schema, epsilon))
    found.append(budget_exposure(target, dataset, epsilon))
    return found


def report_json(dataset: str, findings: list[Finding]) -> str:
    return json.dumps({"dataset": dataset, "passed": all(f.passed for f in findings),
                       "findings": [asdict(f) for f in findings]}, indent=1, default=str)


def report_html(dataset: str, findings: list[Finding]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(f.name)}</td><td>{'held' if f.passed else '<b>FAILED</b>'}"
        f"</td><td>{html.escape(f.summary)}</td><td>{f.epsilon_spent:g}</td></tr>"
        for f in findings)
    verdict = "every defence held" if all(f.passed for f in findings) else "a defence FAILED"
    return (f"<!doctype html><meta charset=utf-8><title>pdebug attack report: "
            f"{html.escape(dataset)}</title><h1>Attack report: {html.escape(dataset)}</h1>"
            f"<p>{verdict}. Each probe ran as an ordinary user with a token.</p>"
            "<table border=1 cellpadding=4><tr><th>probe</th><th>result</th><th>what happened"
            f"</th><th>epsilon spent</th></tr>{rows}</table>")
