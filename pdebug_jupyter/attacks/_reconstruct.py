"""Dinur-Nissim reconstruction: many cohort counts, one linear program, a secret column back.

The attacker knows each row's quasi-identifiers (the public-domain columns) but not a secret
binary column. Every released cell of a histogram that has the secret as one dimension says
how many rows of a cohort hold each secret value; with enough different cohorts (random bin
counts and groupings) the least-L1 solution of those equations, rounded, is the secret
column. Exact answers give it away; noisy, suppressed and budget-limited ones should not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linprog

from ._targets import Target


@dataclass(frozen=True)
class Reconstruction:
    accuracy: float  # share of rows whose secret was guessed right
    baseline: float  # the majority-class guess's accuracy
    answered: int  # queries answered before the first refusal
    refused: str | None  # the code of the refusal that stopped the attack
    equations: int


def cell_positions(frame: pd.DataFrame, dim: Mapping[str, Any]) -> np.ndarray:
    """The index of each row's cell along one released dimension (``other`` last)."""
    labels = dim["labels"]
    values = frame[dim["column"]]
    if "bins" in dim:
        edges = np.asarray(dim["bins"], dtype=float)
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        pos = np.searchsorted(edges, np.clip(x, edges[0], edges[-1]), side="right") - 1
        pos = np.minimum(pos, len(edges) - 2)  # the last bin is closed
        return np.where(np.isnan(x), len(labels) - 1, pos)
    lookup = {label: i for i, label in enumerate(labels[:-1])}
    text = values.map(lambda v: str(v).lower() if isinstance(v, bool) else str(v))
    return np.asarray([lookup.get(t, len(labels) - 1) for t in text], dtype=np.int64)


def equations(release: Mapping[str, Any], frame: pd.DataFrame, secret: str,
              positive: str) -> tuple[list[np.ndarray], list[float]]:
    """Rows and right-hand sides ``a . x = b`` (x: 1 where the secret is positive) from every
    released cell; suppressed cells say nothing."""
    part = release["parts"][0]
    dims = part["dims"]
    shape = tuple(len(d["labels"]) for d in dims)
    s = [d["column"] for d in dims].index(secret)
    axes = [cell_positions(frame, d) for d in dims]
    axes[s] = np.zeros(len(frame), dtype=np.int64)  # the cohort: every dimension but the secret
    cohort = np.ravel_multi_index(tuple(axes), shape)
    members = {int(c): cohort == c for c in np.unique(cohort)}  # cohorts nobody is in say nothing
    rows, rhs = [], []
    for index, cell in zip(np.ndindex(*shape), release["cells"], strict=True):
        key = list(index)
        key[s] = 0
        inside = members.get(int(np.ravel_multi_index(tuple(key), shape)))
        if cell["count"] is None or inside is None:  # suppressed, or an empty cohort
            continue
        value = dims[s]["labels"][index[s]]
        if value == positive:
            rows.append(inside.astype(float))
            rhs.append(float(cell["count"]))
        elif value != "other":  # the negative value: |cohort| - positives
            rows.append(-inside.astype(float))
            rhs.append(float(cell["count"]) - float(inside.sum()))
    return rows, rhs


def solve(rows: Sequence[np.ndarray], rhs: Sequence[float], n: int) -> np.ndarray:
    """x in [0, 1]^n minimising sum |A x - b| (slack variables for the L1 norm)."""
    m = len(rows)
    a = sparse.csr_matrix(np.vstack(rows)) if m else sparse.csr_matrix((0, n))
    eye = sparse.identity(m, format="csr")
    a_eq = sparse.hstack([a, eye, -eye], format="csr")
    cost = np.concatenate([np.zeros(n), np.ones(2 * m)])
    bounds = [(0.0, 1.0)] * n + [(0.0, None)] * (2 * m)
    result = linprog(cost, A_eq=a_eq, b_eq=np.asarray(rhs), bounds=bounds, method="highs")
    if result.x is None:
        return np.full(n, 0.5)
    return np.asarray(result.x[:n])


def cohort_queries(rng: np.random.Generator, numeric: Sequence[str], groups: Sequence[str],
                   secret: str, count: int, epsilon: float) -> list[dict[str, Any]]:
    """Histograms of random bin counts over a numeric column, by the secret and a random
    subset of the categorical columns: each partitions the rows differently."""
    out = []
    for i in range(count):
        k = int(rng.integers(0, min(2, len(groups)) + 1))
        by = [secret, *rng.choice(list(groups), size=k, replace=False).tolist()]
        # distinct epsilons keep every query fresh, so none is answered from the cache
        out.append({"kind": "histogram", "column": str(rng.choice(list(numeric))),
                    "bins": int(rng.integers(2, 60)), "by": by,
                    "epsilon": epsilon * (1 - i * 1e-9)})
    return out


def reconstruct(target: Target, dataset: str, frame: pd.DataFrame, secret: str,
                positive: str, queries: Sequence[Mapping[str, Any]]) -> Reconstruction:
    """Ask the queries in turn until one is refused, then solve for the secret column."""
    rows: list[np.ndarray] = []
    rhs: list[float] = []
    answered, refused = 0, None
    for body in queries:
        answer = target.query(dataset, body)
        if not answer.ok:
            refused = str(answer.error.get("code", answer.status))
            break
        answered += 1
        r, b = equations(answer.body, frame, secret, positive)
        rows += r
        rhs += b
    truth = frame[secret].map(str).to_numpy() == positive
    guess = solve(rows, rhs, len(frame)) >= 0.5
    share = float(truth.mean())
    return Reconstruction(float((guess == truth).mean()), max(share, 1 - share), answered,
                          refused, len(rows))
