"""The release wire format: the one place that turns a noisy cube into JSON.

A release holds released aggregates and their metadata only (rule 1). Every cell of the
declared domain appears, ``other`` cells included (rule 2); a suppressed cell keeps its
keys, its measures are ``null``, and it is listed in ``suppressed`` with the reason. A
query of several cubes (drift: one per column) tags each cell with its cube's ``part``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from .. import __version__
from ..engine import Version
from ..ledger import Budget
from ..policy import DatasetPolicy, Policy
from ..privacy import MECHANISM, Noise, NoisyCube
from ..query import Cube, Query


def cells(cube: Cube, noisy: NoisyCube, part: str | None
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every cell of the cube's domain in C order; ``part`` names the cube when there are
    several."""
    labels = [d.labels for d in cube.dims]
    names = [m.name for m in cube.measures]
    tag = {"part": part} if part else {}
    out, hidden = [], []
    reason = f"noisy count below the minimum cohort size {noisy.threshold}"
    for index in np.ndindex(*cube.shape):
        keys = {**tag, **{d.column: labels[i][index[i]] for i, d in enumerate(cube.dims)}}
        if noisy.suppressed[index]:
            out.append({**keys, **dict.fromkeys(names)})
            hidden.append({**keys, "reason": reason})
        else:
            values = noisy.values[index]
            out.append({**keys, **{n: int(values[j]) for j, n in enumerate(names)}})
    return out, hidden


def parts(query: Query, plan: tuple[tuple[Noise, ...], ...]) -> list[dict[str, Any]]:
    """What each cube is: its dimensions with their public labels, measures and noise."""
    return [{"name": c.name,
             "dims": [{"column": d.column, "labels": list(d.labels),
                       **({"bins": list(d.edges)} if d.edges else {})} for d in c.dims],
             "measures": [m.name for m in c.measures],
             "noise": [n.public() for n in noise]}
            for c, noise in zip(query.cubes, plan, strict=True)]


def provenance(policy: Policy, ds: DatasetPolicy, version: Version, query: Query, *,
               user: str, purpose: str, created_at: str, threshold: int) -> dict[str, Any]:
    return {
        "dataset": ds.name,
        "source": ds.source.name,
        "fingerprint": version.fingerprint,
        "version": datetime.fromtimestamp(version.modified, UTC).isoformat(timespec="seconds"),
        "policy_hash": policy.digest,
        "dataset_policy_hash": ds.digest,
        "model_version": ds.model_version,
        "preprocessing": ds.preprocessing,
        "synthetic": ds.synthetic,
        "mechanism": MECHANISM,
        "epsilon": query.epsilon,
        "threshold": threshold,
        "max_rows_per_unit": ds.max_rows_per_unit,
        "created_at": created_at,
        "user": user,
        "purpose": purpose,
        "query": query.canonical(),
        "query_hash": query.digest,
        "service": f"pdebug-jupyter {__version__}",
    }


def release(policy: Policy, ds: DatasetPolicy, version: Version, query: Query,
            noisy: tuple[NoisyCube, ...], *, release_id: str, created_at: str, user: str,
            purpose: str, budget: Budget) -> dict[str, Any]:
    released: list[dict[str, Any]] = []
    suppressed: list[dict[str, Any]] = []
    several = len(query.cubes) > 1
    for cube, cube_noisy in zip(query.cubes, noisy, strict=True):
        c, h = cells(cube, cube_noisy, cube.name if several else None)
        released += c
        suppressed += h
    threshold = ds.min_cohort
    return {
        "release_id": release_id,
        "kind": query.kind,
        "dataset": ds.name,
        "epsilon": query.epsilon,
        "cached": False,
        "mechanism": MECHANISM,
        # the Laplace-equivalent scale of the first cube's counts; every measure in "parts"
        "noise_scale": noisy[0].noise[0].scale,
        "threshold": threshold,
        "parts": parts(query, tuple(n.noise for n in noisy)),
        "cells": released,
        "suppressed": suppressed,
        "params": dict(query.params),
        "provenance": provenance(policy, ds, version, query, user=user, purpose=purpose,
                                 created_at=created_at, threshold=threshold),
        "budget": budget.public(),
        # budget alerts this release set off (filled in by the ledger for its first reply
        # only: the stored release is everybody's cache)
        "warnings": [],
    }
