"""Black-box probes a user with a token can run against a deployment.

Each probe returns a :class:`Finding`; ``passed`` means the defence held. The probes spend
budget only where a release is needed (averaging: one; precision: one per query kind);
everything else is a refusal, which must cost nothing.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._stats import max_accuracy
from ._targets import Answer, ServiceTarget


@dataclass(frozen=True)
class Finding:
    """The outcome of one probe, for the data owner's report."""

    name: str
    passed: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    epsilon_spent: float = 0.0


def _columns(schema: Mapping[str, Any], *kinds: str) -> list[dict[str, Any]]:
    return [c for c in schema["columns"] if c["kind"] in kinds]


def _equal_width(col: Mapping[str, Any]) -> int | None:
    """The bin count whose equal-width edges are the policy's, if they are equal width."""
    edges = col.get("bins") or []
    if len(edges) < 2:
        return None
    steps = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return len(steps) if max(steps) - min(steps) <= 1e-9 * abs(edges[-1] - edges[0]) else None


def base_histogram(schema: Mapping[str, Any], epsilon: float) -> dict[str, Any]:
    """A histogram over the first binned column, by the first categorical one, filtered on
    the first category of another categorical column when there is one."""
    binned = _columns(schema, "numeric", "score")
    cats = _columns(schema, "protected", "categorical", "split", "label")
    if not binned:
        raise ValueError("the dataset declares no numeric or score column")
    body: dict[str, Any] = {"kind": "histogram", "column": binned[0]["name"], "epsilon": epsilon}
    if cats:
        body["by"] = cats[0]["name"]
    if len(cats) > 1:
        body["where"] = {cats[1]["name"]: cats[1]["categories"][0]}
    return body


def equivalent_bodies(schema: Mapping[str, Any], body: Mapping[str, Any]
                      ) -> list[dict[str, Any]]:
    """Rephrasings of ``body`` that mean the same query: reordered keys, a one-element list
    for a scalar filter, ``by`` as a list, and the policy's bins spelled out."""
    out = [dict(reversed(list(body.items())))]
    if "where" in body:
        out.append({**body, "where": {k: [v] for k, v in body["where"].items()}})
    if "by" in body and not isinstance(body["by"], list):
        out.append({**body, "by": [body["by"]]})
    col = next(c for c in schema["columns"] if c["name"] == body.get("column"))
    bins = _equal_width(col)
    if bins is not None:
        out.append({**body, "bins": bins})
    return out


def averaging(target: ServiceTarget, dataset: str, schema: Mapping[str, Any],
              epsilon: float, repeats: int = 5, body: Mapping[str, Any] | None = None
              ) -> Finding:
    """Repeat, rephrase and re-read one release: every answer must be the first one, free."""
    body = dict(body) if body is not None else base_histogram(schema, epsilon)
    before = target.spent(dataset)
    first = target.query(dataset, body)
    if not first.ok:
        return Finding("averaging", False, f"the base query was refused: {first.error}")
    after_first = target.spent(dataset)
    variants = [body] * repeats + equivalent_bodies(schema, body)
    answers = [target.query(dataset, v) for v in variants]
    rereads = [target.call("GET", f"/releases/{first.body['release_id']}")
               for _ in range(repeats)]
    spent = target.spent(dataset) - before
    cells = first.body["cells"]
    same = [a.ok and a.body["cells"] == cells and a.body["release_id"] ==
            first.body["release_id"] for a in answers]
    reread_same = [a.ok and a.body.get("cells") == cells for a in rereads]
    passed = all(same) and all(reread_same) and abs(spent - (after_first - before)) < 1e-9
    return Finding(
        "averaging", passed,
        f"{len(variants)} repeated or rephrased queries and {repeats} re-reads returned "
        f"{sum(same) + sum(reread_same)} identical copies of one release; epsilon spent "
        f"{spent:g} in all (one release)",
        {"variants": variants, "identical": same, "rereads_identical": reread_same,
         "spent": spent, "first_release_spent": after_first - before}, spent)


def release_bodies(schema: Mapping[str, Any], epsilon: float) -> dict[str, dict[str, Any]]:
    """One small query of every kind the dataset's columns allow."""
    binned = _columns(schema, "numeric")
    score = _columns(schema, "score")
    label = _columns(schema, "label")
    cats = _columns(schema, "protected", "categorical")
    split = [c for c in _columns(schema, "split") if len(c.get("categories", [])) >= 2]
    attr = _columns(schema, "attribution")
    out: dict[str, dict[str, Any]] = {}
    if binned:
        out["histogram"] = {"kind": "histogram", "column": binned[0]["name"]}
    if score and label:
        by = {"by": cats[0]["name"]} if cats else {}
        out["calibration"] = {"kind": "calibration", "bins": 5, **by}
        out["confusion"] = {"kind": "confusion", "bins": 5, **by}
        if cats:
            out["cohort_errors"] = {"kind": "cohort_errors", "features": [cats[0]["name"]]}
    if split and binned:
        s = split[0]
        out["drift"] = {"kind": "drift", "columns": [binned[0]["name"]],
                        "reference": {s["name"]: s["categories"][0]},
                        "current": {s["name"]: s["categories"][1]}}
    if attr:
        out["attribution"] = {"kind": "attribution", "columns": [attr[0]["name"]]}
    if score:
        out["performance_estimate"] = {"kind": "performance_estimate", "bins": 5}
    if cats:
        out["marginals"] = {"kind": "marginals", "columns": [c["name"] for c in cats[:2]]}
    return {k: {**v, "epsilon": epsilon} for k, v in out.items()}


def non_integer_cells(release: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cells holding a released number that is not an integer (a floating-point leak)."""
    keys = {d["column"] for p in release.get("parts", []) for d in p["dims"]} | {"part"}
    bad = []
    for cell in release["cells"]:
        for name, value in cell.items():
            if name in keys or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                bad.append({"cell": {k: cell[k] for k in cell if k in keys}, "measure": name,
                            "type": type(value).__name__})
    return bad


def precision(target: ServiceTarget, dataset: str, schema: Mapping[str, Any],
              epsilon: float) -> Finding:
    """Every released cell value of every kind must be an integer (Mironov's attack reads
    the low-order bits of floating-point noise)."""
    before = target.spent(dataset)
    found: dict[str, Any] = {}
    for kind, body in release_bodies(schema, epsilon).items():
        answer = target.query(dataset, body)
        found[kind] = ({"refused": answer.error} if not answer.ok else
                       {"cells": len(answer.body["cells"]),
                        "non_integer": non_integer_cells(answer.body)})
    spent = target.spent(dataset) - before
    bad = {k: v for k, v in found.items() if v.get("non_integer") or "refused" in v}
    cells = sum(v.get("cells", 0) for v in found.values())
    return Finding("precision", not bad, f"{cells} released cells over {len(found)} kinds; "
                   f"{sum(len(v.get('non_integer', [])) for v in found.values())} not integer",
                   {"kinds": found}, spent)


def data_dependent_bodies(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Queries that would need the data to choose bins or report extremes."""
    col = _columns(schema, "numeric", "score")[0]["name"]
    eps = 0.1
    h = {"kind": "histogram", "column": col, "epsilon": eps}
    return [{**h, "bins": "auto"}, {**h, "bins": "quantile"}, {**h, "bins": "fd"},
            {**h, "bins": [0, 1, 2]}, {**h, "bins": 0}, {**h, "bins": 501},
            {**h, "quantiles": [0.25, 0.5, 0.75]}, {**h, "bounds": "data"},
            {**h, "range": [0, 1]}, {**h, "edges": [0, 1]},
            {"kind": "quantile", "column": col, "epsilon": eps},
            {"kind": "min", "column": col, "epsilon": eps},
            {"kind": "max", "column": col, "epsilon": eps},
            {"kind": "median", "column": col, "epsilon": eps},
            {"kind": "describe", "epsilon": eps}]


def data_dependent_bins(target: ServiceTarget, dataset: str,
                        schema: Mapping[str, Any]) -> Finding:
    """Bins, bounds and extremes come from the policy only: each such request is a 4xx."""
    before = target.spent(dataset)
    answers = [(b, target.query(dataset, b)) for b in data_dependent_bodies(schema)]
    spent = target.spent(dataset) - before
    accepted = [b for b, a in answers if not 400 <= a.status < 500]
    return Finding("data_dependent_bins", not accepted and spent == 0,
                   f"{len(answers) - len(accepted)} of {len(answers)} data-dependent requests "
                   f"refused with a 4xx; epsilon spent {spent:g}",
                   {"accepted": accepted, "statuses": [a.status for _, a in answers]})


def refusal_bodies(schema: Mapping[str, Any]) -> list[Any]:
    """Malformed or disallowed requests; none names a data value."""
    col = _columns(schema, "numeric", "score")[0]["name"]
    ident = _columns(schema, "identifier")
    h = {"kind": "histogram", "column": col, "epsilon": 0.1}
    out: list[Any] = [{**h, "epsilon": -1}, {**h, "epsilon": 1e9}, {"kind": "histogram"},
                      {**h, "column": "no_such_column"}, {**h, "where": {col: 1}},
                      {**h, "unknown_parameter": 1}, {**h, "kind": "rows"}, [1, 2], "text"]
    if ident:
        name = ident[0]["name"]
        out += [{**h, "column": name}, {**h, "by": name}, {**h, "where": {name: "x"}}]
    return out


def refusals(target: ServiceTarget, dataset: str, schema: Mapping[str, Any]
             ) -> list[tuple[Any, Answer]]:
    out = []
    for body in refusal_bodies(schema):
        if isinstance(body, dict):
            out.append((body, target.query(dataset, body)))
        else:  # not an object: sent as raw JSON
            import json

            out.append((body, target.call("POST", f"/datasets/{dataset}/query",
                                          raw=json.dumps(body).encode())))
    return out


def error_channels(target: ServiceTarget, dataset: str, schema: Mapping[str, Any],
                   canaries: Iterable[str] = (), other: str | None = None) -> Finding:
    """Refusals are 4xx with ``{"error": {"code", "message"}}`` only, name no data value
    (canaries), and do not change with the data (``other``: a dataset with other rows)."""
    marks = [c for c in canaries if len(c) >= 4]
    before = target.spent(dataset)
    answers = refusals(target, dataset, schema)
    problems = []
    for body, a in answers:
        text = str(a.body)
        if not 400 <= a.status < 500:
            problems.append({"body": body, "status": a.status})
        elif set(a.body) != {"error"} or set(a.error) != {"code", "message"}:
            problems.append({"body": body, "shape": sorted(a.body)})
        elif "Traceback" in text or any(m in text for m in marks):
            problems.append({"body": body, "leak": "traceback or canary in the message"})
    if other is not None:
        for (body, a), (_, b) in zip(answers, refusals(target, other, schema), strict=True):
            if (a.status, a.error.get("code")) != (b.status, b.error.get("code")) or \
                    a.error.get("message", "").replace(dataset, "?") != \
                    b.error.get("message", "").replace(other, "?"):
                problems.append({"body": body, "differs_between": [dataset, other]})
    spent = target.spent(dataset) - before
    if spent:
        problems.append({"spent": spent})
    return Finding("error_channels", not problems,
                   f"{len(answers)} refusals checked{' on two datasets' if other else ''}: "
                   f"{len(problems)} problem(s)", {"problems": problems})


def refusal_latency(target: ServiceTarget, datasets: Sequence[str], body: Mapping[str, Any],
                    rounds: int = 30) -> dict[str, list[float]]:
    """Seconds per refusal of ``body`` on each dataset, interleaved so that load on the
    machine falls on every dataset alike."""
    times: dict[str, list[float]] = {d: [] for d in datasets}
    for _ in range(rounds):
        for d in datasets:
            times[d].append(target.query(d, body).seconds)
    return times


def latency_gap(times: Mapping[str, list[float]]) -> tuple[float, float]:
    """(largest difference of medians, pooled median absolute deviation) in seconds."""
    medians = [statistics.median(t) for t in times.values()]
    mads = [statistics.median(abs(x - m) for x in t)
            for t, m in zip(times.values(), medians, strict=True)]
    return max(medians) - min(medians), statistics.median(mads)


def budget_exposure(target: ServiceTarget, dataset: str, epsilon: float) -> Finding:
    """What the user's budget allows against one person's secret bit: one release of
    ``epsilon`` (differencing), and the whole budget (averaging, reconstruction: every
    query composes)."""
    budget = target.call("GET", "/budget").body["datasets"][dataset]
    spent, remaining = float(budget["spent"]), float(budget["remaining"])
    one, worst = max_accuracy(epsilon), max_accuracy(spent + remaining)
    queries = int(remaining // epsilon) if epsilon > 0 else 0
    return Finding("budget_exposure", True,
                   f"differencing with one release of epsilon {epsilon:g}: a secret bit is "
                   f"guessed right with probability at most {one:.3f}; {queries} more such "
                   f"queries fit the budget; after the whole budget (epsilon "
                   f"{spent + remaining:g}) at most {worst:.3f}",
                   {"spent": spent, "remaining": remaining, "per_release_max_accuracy": one,
                    "queries_left": queries, "max_accuracy": worst})
