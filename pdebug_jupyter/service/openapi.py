"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json``.

Request bodies are described per query kind, with the types and ranges the service checks,
so a client generator (or a fuzzer: tests/test_fuzz.py) can build valid bodies and, by
breaking one constraint, near-valid ones. What only the policy knows (column names, their
kinds and categories, ``max_epsilon_per_query``) is in ``GET /datasets/{name}``, not here.
"""

from __future__ import annotations

from typing import Any

from ..policy import MAX_BINS, ROLES
from ..query import BUILDERS, MAX_DIMENSIONS
from ..query.kinds import MAX_MARGINAL_COLUMNS
from .governance import MAX_GRANT_PURPOSE, MAX_GRANT_SECONDS

_ERROR = {"description": "error: a stable code and a message without data values",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_NAME = {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}
_PURPOSE = {"name": "X-Pdebug-Purpose", "in": "header", "required": False,
            "description": "why (audited with the request; the first 500 characters)",
            "schema": {"type": "string"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, *, params: list[dict[str, Any]] | None = None,
        body: str | None = None, ok: dict[str, Any] | None = None, status: str = "200",
        auth: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary,
                          "responses": {status: _json(ok or {"type": "object"})}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": _ref(body)}}}
    op["security"] = [{"token": []}] if auth else []
    if auth:  # 401 without a valid token, 403 without the permission; 404, 409, 422 ...
        op["responses"]["4XX"] = _ERROR
        op["responses"]["503"] = _ERROR  # the data source is unavailable
    return op


def _q(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _kind_body(kind: str, params: dict[str, Any], required: tuple[str, ...] = ()
               ) -> dict[str, Any]:
    """One query kind's body: its own parameters plus the common ones, nothing else. An
    optional parameter may be null: the service then uses its default."""
    optional = {name: {"anyOf": [schema, {"type": "null"}]}
                for name, schema in {"where": _ref("Where"), **params}.items()
                if name not in required}
    return {"type": "object", "title": kind, "additionalProperties": False,
            "required": ["kind", "epsilon", *required],
            "properties": {"kind": {"const": kind}, "epsilon": _ref("Epsilon"),
                           **{name: params[name] for name in required}, **optional}}


def _query_bodies() -> dict[str, dict[str, Any]]:
    col, cols, by, bins = _ref("Column"), _ref("Columns"), _ref("By"), _ref("Bins")
    scored = {"score": col, "label": col, "bins": bins, "by": by}
    threshold = {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                 "description": "in (low, high] of the score's bounds; default 0.5"}
    features = {"type": "array", "items": col, "minItems": 1, "maxItems": 3}
    filters = {"reference": _ref("Filter"), "current": _ref("Filter")}
    bodies = {
        "histogram": _kind_body("histogram", {"column": col, "bins": bins, "by": by},
                                ("column",)),
        "calibration": _kind_body("calibration", scored),
        "confusion": _kind_body("confusion", scored),
        "drift": _kind_body("drift", {"columns": cols, "bins": bins, **filters},
                            ("reference", "current")),
        "cohort_errors": _kind_body("cohort_errors", {
            "features": features, "label": col, "score": col, "prediction": col,
            "threshold": threshold}, ("features",)),
        "attribution": _kind_body("attribution", {"columns": cols, "by": by}),
        "performance_estimate": _kind_body("performance_estimate", {"score": col, "bins": bins}),
        "marginals": _kind_body("marginals", {"columns": {
            "type": "array", "items": col, "minItems": 1, "maxItems": MAX_MARGINAL_COLUMNS}}),
    }
    assert set(bodies) == set(BUILDERS), "every query kind is documented"
    return {f"Query_{k}": v for k, v in bodies.items()}


def _schemas() -> dict[str, Any]:
    category = _ref("Category")
    filter_ = {"type": "object", "description": "{column: category or [categories]}; "
               "categorical, protected, split and label columns only",
               "propertyNames": _ref("Column"),
               "additionalProperties": {"oneOf": [category, {
                   "type": "array", "items": category, "minItems": 1}]}}
    bodies = _query_bodies()
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}}}}},
        "Column": {"type": "string", "minLength": 1, "maxLength": 128,
                   "description": "a column the dataset's policy declares (not an identifier)"},
        "Category": {"type": ["string", "integer", "boolean"],
                     "description": "one of the column's declared categories"},
        "Columns": {"type": "array", "items": _ref("Column"), "minItems": 1},
        "By": {"oneOf": [_ref("Column"), {"type": "array", "items": _ref("Column"),
                                          "maxItems": MAX_DIMENSIONS - 1}]},
        "Bins": {"type": "integer", "minimum": 1, "maximum": MAX_BINS,
                 "description": "equal-width bins over the column's policy bounds"},
        "Epsilon": {"type": "number", "minimum": 1e-6,
                    "description": "at most the dataset's max_epsilon_per_query"},
        "Filter": {**filter_, "minProperties": 1},
        "Where": filter_,
        **bodies,
        "Query": {"oneOf": [_ref(k) for k in bodies], "discriminator": {
            "propertyName": "kind",
            "mapping": {k.removeprefix("Query_"): f"#/components/schemas/{k}" for k in bodies}}},
        "Grant": {
            "type": "object", "required": ["user", "dataset", "purpose"],
            "additionalProperties": False,
            "description": "a positive epsilon, a role or both; exactly one of ttl and expires_at",
            "properties": {
                "user": {"type": "string", "pattern": "^[A-Za-z0-9_.@+-]{1,128}$"},
                "dataset": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
                "epsilon": {"type": "number", "minimum": 0,
                            "description": "at most the dataset-wide budget"},
                "role": {"type": "string", "enum": list(ROLES)},
                "purpose": {"type": "string", "minLength": 1, "maxLength": MAX_GRANT_PURPOSE,
                            "pattern": "\\S"},
                "ttl": {"type": "number", "exclusiveMinimum": 0,
                        "maximum": MAX_GRANT_SECONDS},
                "expires_at": {"type": "string", "format": "date-time"}},
            "oneOf": [{"required": ["ttl"]}, {"required": ["expires_at"]}]},
        "Release": {"type": "object", "required": [
            "release_id", "kind", "epsilon", "cached", "mechanism", "noise_scale", "threshold",
            "cells", "suppressed", "provenance", "budget"], "properties": {
                "release_id": {"type": "string"}, "kind": {"type": "string"},
                "epsilon": {"type": "number"}, "cached": {"type": "boolean"},
                "cells": {"type": "array", "items": {"type": "object"}},
                "suppressed": {"type": "array", "items": {"type": "object"}},
                "budget": _ref("Budget")}},
        "Budget": {"type": "object", "required": ["limit", "spent", "remaining"],
                   "properties": {k: {"type": "number"} for k in ("limit", "spent", "remaining")}},
    }


def openapi(version: str) -> dict[str, Any]:
    filters = [_q("dataset", {"type": "string"}), _q("user", {"type": "string"}),
               _q("limit", {"type": "integer", "minimum": 0, "maximum": 1000})]
    grant_id = {"name": "grant_id", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "pdebug-jupyter privacy service", "version": version},
        "servers": [{"url": "/api/v1"}],
        "paths": {
            "/health": {"get": _op("liveness; the only endpoint without a token", auth=False)},
            "/me": {"get": _op("the caller's identity, role and permissions")},
            "/openapi.json": {"get": _op("this document")},
            "/datasets": {"get": _op("datasets with public schema and the caller's budget")},
            "/datasets/{name}": {"get": _op("one dataset's public schema", params=[_NAME])},
            "/datasets/{name}/query": {"post": _op(
                "release a differentially private cube (charged once, cached after)",
                params=[_NAME, _PURPOSE], body="Query", ok=_ref("Release"))},
            "/datasets/{name}/cost": {"post": _op(
                "what a query would cost and its expected error; spends nothing",
                params=[_NAME, _PURPOSE], body="Query")},
            "/budget": {"get": _op("the caller's budget on every dataset")},
            "/releases": {"get": _op("releases made so far (metadata)", params=filters)},
            "/releases/{release_id}": {"get": _op("one release", params=[{
                "name": "release_id", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}])},
            "/audit": {"get": _op("audit rows", params=filters[:2] + [
                _q("after", {"type": "integer", "minimum": 0, "maximum": 2**62}),
                _q("limit", {"type": "integer", "minimum": 0, "maximum": 10000})])},
            "/audit/verify": {"get": _op("verify the audit hash chain")},
            "/grants": {
                "get": _op("temporary grants (all for owners and auditors, else one's own)",
                           params=[*filters[:2], _q("active", {
                               "type": "string", "description": "1 or true: only those in force"})]),
                "post": _op("owners: grant a user extra epsilon and/or a role on a dataset "
                            "until an expiry (audited; lapses by itself)", body="Grant",
                            status="201", params=[_PURPOSE])},
            "/grants/{grant_id}": {"delete": _op("owners: revoke a grant (audited)",
                                                 params=[grant_id, _PURPOSE])},
        },
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header",
                                          "name": "Authorization",
                                          "description": "'token <t>' (JupyterHub style)"}},
            "schemas": _schemas(),
        },
    }
