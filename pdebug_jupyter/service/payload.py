"""The release wire format: the one place that turns a noisy cube into JSON.

A release holds released aggregates and their metadata only (rule 1). Every cell of the
declared domain appears, ``other`` cells included (rule 2); a suppressed cell keeps its
keys, its measures are ``null``, and it is listed in ``suppressed`` with the reason.
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
from ..query import Query


def cells(query: Query, cube: NoisyCube) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    labels = [d.labels for d in query.dims]
    names = [m.name for m in query.measures]
    out, hidden = [], []
    reason = f"noisy count below the minimum cohort size {cube.threshold}"
    for index in np.ndindex(*query.shape):
        keys = {d.column: labels[i][index[i]] for i, d in enumerate(query.dims)}
        if cube.suppressed[index]:
            out.append({**keys, **dict.fromkeys(names)})
            hidden.append({**keys, "reason": reason})
        else:
            values = cube.values[index]
            out.append({**keys, **{n: int(values[j]) for j, n in enumerate(names)}})
    return out, hidden


def noise_summary(noise: tuple[Noise, ...]) -> dict[str, Any]:
    """``noise_scale`` is the count measure's Laplace-equivalent scale; details per measure."""
    return {"noise_scale": noise[0].scale, "noise": [n.public() for n in noise]}


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


def release(policy: Policy, ds: DatasetPolicy, version: Version, query: Query, cube: NoisyCube,
            *, release_id: str, created_at: str, user: str, purpose: str,
            budget: Budget) -> dict[str, Any]:
    released, suppressed = cells(query, cube)
    return {
        "release_id": release_id,
        "kind": query.kind,
        "dataset": ds.name,
        "epsilon": query.epsilon,
        "cached": False,
        "mechanism": MECHANISM,
        **noise_summary(cube.noise),
        "threshold": cube.threshold,
        "dims": [{"column": d.column, "labels": list(d.labels),
                  **({"bins": list(d.edges)} if d.edges else {})} for d in query.dims],
        "measures": [m.name for m in query.measures],
        "cells": released,
        "suppressed": suppressed,
        "params": dict(query.params),
        "provenance": provenance(policy, ds, version, query, user=user, purpose=purpose,
                                 created_at=created_at, threshold=cube.threshold),
        "budget": budget.public(),
    }
