"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from ..query import BUILDERS

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
_NAME = {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}
_QUERY_BODY = {"required": True, "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Query"}}}}


def _op(summary: str, *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, auth: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": _OK}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    if auth:
        op["security"] = [{"token": []}]
        op["responses"].update({"401": _ERROR, "403": _ERROR})
    else:
        op["security"] = []
    if body:
        op["responses"].update({"400": _ERROR, "404": _ERROR, "422": _ERROR})
    return op


def _q(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def openapi(version: str) -> dict[str, Any]:
    filters = [_q("dataset", {"type": "string"}), _q("user", {"type": "string"}),
               _q("limit", {"type": "integer", "minimum": 0, "maximum": 1000})]
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
                params=[_NAME], body=_QUERY_BODY)},
            "/datasets/{name}/cost": {"post": _op(
                "what a query would cost and its expected error; spends nothing",
                params=[_NAME], body=_QUERY_BODY)},
            "/budget": {"get": _op("the caller's budget on every dataset")},
            "/releases": {"get": _op("releases made so far (metadata)", params=filters)},
            "/releases/{release_id}": {"get": _op("one release", params=[{
                "name": "release_id", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}])},
            "/audit": {"get": _op("audit rows", params=filters[:2] + [
                _q("after", {"type": "integer", "minimum": 0}),
                _q("limit", {"type": "integer", "minimum": 0, "maximum": 10000})])},
            "/audit/verify": {"get": _op("verify the audit hash chain")},
            "/grants": {
                "get": _op("temporary grants (all for owners and auditors, else one's own)",
                           params=[_q("user", {"type": "string"}),
                                   _q("dataset", {"type": "string"}),
                                   _q("active", {"type": "string", "enum": ["1", "true"]})]),
                "post": _op("owners: grant a user extra epsilon and/or a role on a dataset "
                            "until an expiry (audited; lapses by itself)", body={
                                "required": True, "content": {"application/json": {"schema": {
                                    "$ref": "#/components/schemas/Grant"}}}})},
            "/grants/{grant_id}": {"delete": _op("owners: revoke a grant (audited)", params=[{
                "name": "grant_id", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}}])},
        },
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header",
                                          "name": "Authorization",
                                          "description": "'token <t>' (JupyterHub style)"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Grant": {"type": "object", "required": ["user", "dataset", "purpose"],
                          "additionalProperties": False, "properties": {
                              "user": {"type": "string"}, "dataset": {"type": "string"},
                              "epsilon": {"type": "number", "minimum": 0},
                              "role": {"type": "string"}, "purpose": {"type": "string"},
                              "ttl": {"type": "number", "exclusiveMinimum": 0},
                              "expires_at": {"type": "string", "format": "date-time"}}},
                "Query": {"type": "object", "required": ["kind", "epsilon"], "properties": {
                    "kind": {"type": "string", "enum": sorted(BUILDERS)},
                    "epsilon": {"type": "number", "exclusiveMinimum": 0},
                    "column": {"type": "string"},
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "by": {"oneOf": [{"type": "string"},
                                     {"type": "array", "items": {"type": "string"}}]},
                    "bins": {"type": "integer", "minimum": 1, "maximum": 500},
                    "where": {"type": "object", "additionalProperties": {}}}},
            },
        },
    }
