"""What an attack talks to: the real service over HTTP, or an exact control in-process.

The control answers the same request bodies from the project's own engine with the noise
and suppression left out. It lives only here, in the attacker's process: the service has no
switch that turns noise off, so no deployment can be configured into the control.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import requests

from ..engine import Engine
from ..policy import load_policy
from ..privacy import NoisyCube
from ..query import QueryError, build_query
from ..service.payload import cells


@dataclass(frozen=True)
class Answer:
    """One response: HTTP status, JSON body and the seconds it took."""

    status: int
    body: dict[str, Any]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def error(self) -> dict[str, Any]:
        err = self.body.get("error")
        return err if isinstance(err, dict) else {}


class Target(Protocol):
    def query(self, dataset: str, body: Mapping[str, Any]) -> Answer: ...


@dataclass
class ServiceTarget:
    """A deployment reached over its REST API with one user's token."""

    url: str
    token: str
    timeout: float = 120.0
    http: requests.Session = field(default_factory=requests.Session, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.http.headers["Authorization"] = f"token {self.token}"
        self.http.headers["X-Pdebug-Purpose"] = "privacy attack suite (pdebug-jupyter attack)"

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Answer:
        start = time.perf_counter()
        resp = self.http.request(method, self.url + path, json=None if raw else body, data=raw,
                                 timeout=self.timeout)
        seconds = time.perf_counter() - start
        try:
            data = resp.json()
        except ValueError:
            data = {"error": {"code": "not_json", "message": resp.text[:200]}}
        return Answer(resp.status_code, data if isinstance(data, dict) else {"value": data},
                      seconds)

    def query(self, dataset: str, body: Mapping[str, Any]) -> Answer:
        return self.call("POST", f"/datasets/{dataset}/query", dict(body))

    def spent(self, dataset: str) -> float:
        answer = self.call("GET", "/budget")
        return float(answer.body["datasets"][dataset]["spent"])

    def remaining(self, dataset: str) -> float:
        budget = self.call("GET", "/budget").body["datasets"][dataset]
        return float(budget.get("remaining", budget["limit"] - budget["spent"]))

    def schema(self, dataset: str) -> dict[str, Any]:
        return self.call("GET", f"/datasets/{dataset}").body


class ExactTarget:
    """The noise-off control: exact cubes from the engine, in the release's cell format."""

    def __init__(self, policy: str | Path) -> None:
        self.policy = load_policy(policy, require_tokens=False)
        self.engine = Engine(self.policy)

    def cubes(self, dataset: str, body: Mapping[str, Any]) -> tuple[Any, list[np.ndarray]]:
        """The canonical query and its exact cubes."""
        query = build_query(self.policy.datasets[dataset], body)
        true, _ = self.engine.aggregate(query)
        return query, true

    def query(self, dataset: str, body: Mapping[str, Any]) -> Answer:
        try:
            query, true = self.cubes(dataset, json.loads(json.dumps(body)))
        except QueryError as err:
            return Answer(err.status, {"error": {"code": err.code, "message": err.message}})
        out: list[dict[str, Any]] = []
        several = len(query.cubes) > 1
        for cube, values in zip(query.cubes, true, strict=True):
            exact = NoisyCube(values, np.zeros(cube.shape, bool), (), 0)
            out += cells(cube, exact, cube.name if several else None)[0]
        parts = [{"name": c.name, "dims": [{"column": d.column, "labels": list(d.labels),
                                            **({"bins": list(d.edges)} if d.edges else {})}
                                           for d in c.dims],
                  "measures": [m.name for m in c.measures]} for c in query.cubes]
        return Answer(200, {"kind": query.kind, "epsilon": query.epsilon, "cached": False,
                            "cells": out, "suppressed": [], "parts": parts,
                            "params": dict(query.params)})

    def close(self) -> None:
        self.engine.close()


def cell_value(release: Mapping[str, Any], measure: str = "count", **keys: str) -> int | None:
    """The measure of the one cell whose keys match (None when suppressed)."""
    found = [c for c in release["cells"] if all(c.get(k) == v for k, v in keys.items())]
    if len(found) != 1:
        raise KeyError(f"{len(found)} cells match {keys}")
    value = found[0][measure]
    return None if value is None else int(value)
