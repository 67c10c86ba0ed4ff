"""The REST service (tornado): thin handlers over engine, privacy and ledger.

Every endpoint but ``/health`` requires a token. Errors are JSON
``{"error": {"code", "message"}}`` with a 4xx status and never carry a traceback or a data
value; refusals of queries are audited and spend nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

import tornado.web

from .. import __version__
from ..engine import Engine, EngineError, Version
from ..ledger import BudgetExceeded, CachedRead, GrantError, Ledger, Limits
from ..policy import DatasetPolicy, Policy
from ..privacy import plan_noise, release
from ..query import Query, QueryError, build_query, parse_body
from . import payload
from .auth import ROLE_PERMISSIONS, Identity, TokenAuthenticator
from .governance import GrantRejected, parse_grant, send_alerts
from .openapi import openapi
from .reads import CachedReads

log = logging.getLogger("pdebug_jupyter.service")
PREFIX = "/api/v1"
MAX_PURPOSE = 500


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


#: every error type with a stable code and a 4xx (or 503) status
KNOWN_ERRORS = (ApiError, QueryError, BudgetExceeded, EngineError, GrantError, GrantRejected)


@dataclass
class Service:
    policy: Policy
    engine: Engine
    ledger: Ledger
    auth: TokenAuthenticator
    pool: ThreadPoolExecutor
    reads: CachedReads = field(init=False)

    def __post_init__(self) -> None:
        self.reads = CachedReads(self.ledger)

    def limits(self, ds: DatasetPolicy) -> Limits:
        return Limits(ds.epsilon_per_user, ds.epsilon_total, self.policy.alerts)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def version(self, dataset: str) -> Version:
        """The dataset's version: at once when unchanged, else read on the engine's pool.
        Cache hits and cost previews need only this, and they must not queue behind the
        aggregates that fill the pool (1.3-2.3 s at the median under 50 clients before)."""
        return self.engine.peek(dataset) or await self.run(self.engine.version, dataset)


H = TypeVar("H", bound="Base")


def requires(permission: str) -> Callable[[Callable[..., Awaitable[None]]],
                                          Callable[..., Awaitable[None]]]:
    """Handler decorator: the caller's role must grant ``permission``."""
    def wrap(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        @wraps(method)
        async def checked(self: Base, *args: Any) -> None:
            if not self.allowed(permission, args):
                raise ApiError(403, "forbidden", f"role {self.identity.role!r} may not "
                               f"{permission.replace('_', ' ')}")
            await method(self, *args)
        checked.permission = permission  # type: ignore[attr-defined]
        return checked
    return wrap


class Base(tornado.web.RequestHandler):
    public = False  # only /health overrides this
    #: where a dataset-scoped handler names its dataset, so that role grants on that dataset
    #: apply: "path" (the first path argument) or "query" (a ``dataset`` filter it applies)
    grant_scope: str | None = None
    action: str | None = None  # the audited action of a refusal; default: the path's end

    def initialize(self, service: Service) -> None:
        self.service = service
        self.audited: tuple[str, str] | None = None  # (dataset, query text) for refusals
        self._identity: Identity | None = None

    @property
    def identity(self) -> Identity:
        assert self._identity is not None
        return self._identity

    @property
    def purpose(self) -> str:
        return (self.request.headers.get("X-Pdebug-Purpose") or "")[:MAX_PURPOSE]

    def prepare(self) -> None:
        self.set_header("Cache-Control", "no-store")
        if self.public:
            return
        self._identity = self.service.auth.identify(self.request.headers.get("Authorization"))
        if self._identity is None:
            raise ApiError(401, "unauthorized", "a valid 'Authorization: token <t>' is required")
        self.service.ledger.lapse_grants()  # lazily: a grant's lapse is audited once, on time

    def allowed(self, permission: str, args: tuple[Any, ...]) -> bool:
        """The caller's own role, or a role granted on the dataset this request is about."""
        if self.identity.can(permission):
            return True
        dataset = (args[0] if self.grant_scope == "path" and args else
                   self.get_query_argument("dataset", None) if self.grant_scope == "query"
                   else None)
        if dataset is None:
            return False
        roles = self.service.ledger.granted_roles(self.identity.name, dataset)
        return any(permission in ROLE_PERMISSIONS[r] for r in roles)

    def check_xsrf_cookie(self) -> None:  # token-authenticated API, no cookies
        return None

    def reply(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(tornado.escape.json_encode(body))

    def dataset(self, name: str) -> DatasetPolicy:
        ds = self.service.policy.datasets.get(name)
        if ds is None:
            raise ApiError(404, "unknown_dataset", f"no dataset named {name!r}")
        return ds

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, KNOWN_ERRORS):
            log.info("%s %s -> %s", self.request.method, self.request.path, value.code)
        else:
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        err = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(err, KNOWN_ERRORS):
            status, code, message = err.status, err.code, err.message
        elif isinstance(err, tornado.web.HTTPError):
            status, code, message = status_code, "http_error", err.reason or self._reason
        else:
            status, code, message = 500, "internal", "internal error (see the service log)"
        if self._identity is not None and self.audited is not None and status < 500:
            dataset, text = self.audited
            self.service.ledger.audit(user=self.identity.name, purpose=self.purpose,
                                      dataset=dataset,
                                      action=self.action or self.request.path.rsplit("/", 1)[-1],
                                      query=text, epsilon=0.0, outcome="refused", detail=code)
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(tornado.escape.json_encode({"error": {"code": code, "message": message}}))


class Health(Base):
    public = True

    async def get(self) -> None:
        self.reply({"status": "ok", "version": __version__})


class Me(Base):
    async def get(self) -> None:
        self.reply({"user": self.identity.name, "role": self.identity.role,
                    "permissions": sorted(self.identity.permissions)})


class OpenApi(Base):
    async def get(self) -> None:
        self.reply(openapi(__version__))


class Datasets(Base):
    @requires("read_schema")
    async def get(self) -> None:
        svc = self.service
        self.reply({"datasets": [schema(svc, ds, self.identity)
                                 for ds in svc.policy.datasets.values()]})


class DatasetSchema(Base):
    grant_scope = "path"

    @requires("read_schema")
    async def get(self, name: str) -> None:
        self.reply(schema(self.service, self.dataset(name), self.identity))


def schema(svc: Service, ds: DatasetPolicy, who: Identity) -> dict[str, Any]:
    """Public metadata only: domains and bounds from the policy, never from the data."""
    return {
        "name": ds.name, "description": ds.description, "synthetic": ds.synthetic,
        "privacy_unit": ds.privacy_unit, "max_rows_per_unit": ds.max_rows_per_unit,
        "min_cohort": ds.min_cohort, "model_version": ds.model_version,
        "preprocessing": ds.preprocessing, "max_epsilon_per_query": ds.max_epsilon_per_query,
        "columns": [c.public() for c in ds.columns.values()],
        "budget": svc.ledger.budget(who.name, ds.name, svc.limits(ds)).public(),
    }


class QueryBase(Base):
    grant_scope = "path"

    def parse(self, name: str) -> tuple[DatasetPolicy, Query]:
        ds = self.dataset(name)
        self.audited = (ds.name, self.request.body[:1000].decode("utf-8", "replace"))
        query = build_query(ds, parse_body(self.request.body))
        self.audited = (ds.name, query.canonical())
        return ds, query


class Cost(QueryBase):
    @requires("query")
    async def post(self, name: str) -> None:
        ds, query = self.parse(name)
        svc = self.service
        budget = svc.ledger.budget(self.identity.name, ds.name, svc.limits(ds))
        version = await svc.version(ds.name)
        key = Ledger.cache_key(query.canonical(), version.fingerprint)
        cached = svc.ledger.release_for(key) is not None
        plan = plan_noise(query, ds.max_rows_per_unit)
        self.reply({"kind": query.kind, "epsilon": 0.0 if cached else query.epsilon,
                    "cached": cached, "affordable": cached or budget.allows(query.epsilon),
                    "cells": sum(math.prod(c.shape) for c in query.cubes),
                    "threshold": ds.min_cohort, "noise_scale": plan[0][0].scale,
                    "parts": payload.parts(query, plan), "budget": budget.public()})


class Release(QueryBase):
    @requires("query")
    async def post(self, name: str) -> None:
        ds, query = self.parse(name)
        svc, who, purpose = self.service, self.identity, self.purpose
        version = await svc.version(ds.name)
        key = Ledger.cache_key(query.canonical(), version.fingerprint)
        text = query.canonical()
        hit = None
        if svc.ledger.release_for(key) is not None:  # a read first: misses need no write
            hit = await svc.reads.serve(CachedRead(key, who.name, purpose, ds.name, text))
        if hit is None:
            limits = svc.limits(ds)
            svc.ledger.budget(who.name, ds.name, limits).check(query.epsilon, ds.name)
            true, version = await svc.run(svc.engine.aggregate, query)
            key = Ledger.cache_key(text, version.fingerprint)
            noisy = release(true, query, ds.max_rows_per_unit, ds.min_cohort)
            del true  # nothing below may see the true values

            def build(release_id: str, at: str, budget: Any) -> dict[str, Any]:
                return payload.release(svc.policy, ds, version, query, noisy,
                                       release_id=release_id, created_at=at, user=who.name,
                                       purpose=purpose, budget=budget)
            hit, cached = svc.ledger.commit_release(
                cache_key=key, user=who.name, purpose=purpose, dataset=ds.name, kind=query.kind,
                query=text, epsilon=query.epsilon, fingerprint=version.fingerprint,
                limits=limits, build=build)
            if not cached:
                self.alert(hit, ds.name)
                self.reply(hit)
                return
        hit["cached"] = True
        hit["warnings"] = []  # alerts belong to the release that spent the budget
        hit["budget"] = svc.ledger.budget(who.name, ds.name, svc.limits(ds)).public()
        self.reply(hit)


    def alert(self, hit: dict[str, Any], dataset: str) -> None:
        url = self.service.policy.alert_webhook
        fired = [w for w in hit.get("warnings", []) if w.get("code") == "budget_alert"]
        if url and fired:
            send_alerts(url, [{"event": "budget_alert", "user": self.identity.name,
                               "dataset": dataset, "release_id": hit["release_id"],
                               "created_at": hit.get("provenance", {}).get("created_at"), **w}
                              for w in fired])


class BudgetHandler(Base):
    @requires("read_budget")
    async def get(self) -> None:
        svc = self.service
        self.reply({"user": self.identity.name, "datasets": {
            n: svc.ledger.budget(self.identity.name, n, svc.limits(ds)).public()
            for n, ds in svc.policy.datasets.items()}})


def _int_arg(handler: Base, name: str, default: int, hi: int) -> int:
    raw = handler.get_query_argument(name, str(default))
    # ASCII only: "²" is a digit to isdigit() but not to int(); a long one passes int's limit
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20 or not 0 <= int(raw) <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer from 0 to {hi}")
    return int(raw)


class Releases(Base):
    grant_scope = "query"

    @requires("read_releases")
    async def get(self) -> None:
        rows = self.service.ledger.releases(
            dataset=self.get_query_argument("dataset", None),
            user=self.get_query_argument("user", None), limit=_int_arg(self, "limit", 100, 1000))
        self.reply({"releases": rows})


class ReleaseById(Base):
    @requires("read_releases")
    async def get(self, release_id: str) -> None:
        body = self.service.ledger.release(release_id)
        if body is None:
            raise ApiError(404, "unknown_release", f"no release {release_id!r}")
        body["cached"] = True
        self.reply(body)


class Audit(Base):
    grant_scope = "query"

    @requires("read_audit")
    async def get(self) -> None:
        rows = self.service.ledger.audit_rows(
            dataset=self.get_query_argument("dataset", None),
            user=self.get_query_argument("user", None),
            after=_int_arg(self, "after", 0, 2**62), limit=_int_arg(self, "limit", 100, 10_000))
        self.reply({"audit": rows})


class AuditVerify(Base):
    @requires("read_audit")
    async def get(self) -> None:
        self.reply(self.service.ledger.verify().public())


def _owner(who: Identity) -> bool:
    return "owner" in who.role.split("+")  # the policy's role, never one granted


class Grants(Base):
    action = "grant"

    async def get(self) -> None:
        """Owners and auditors see every grant; anyone else sees their own."""
        who, led = self.identity, self.service.ledger
        everyone = _owner(who) or who.can("read_audit")
        user = self.get_query_argument("user", None) if everyone else who.name
        found = led.grants(user=user, dataset=self.get_query_argument("dataset", None),
                           in_force=self.get_query_argument("active", "") in ("1", "true"))
        now = led.clock()
        self.reply({"grants": [g.public(now) for g in found]})

    async def post(self) -> None:
        self.audited = ("", self.request.body[:1000].decode("utf-8", "replace"))
        if not _owner(self.identity):
            raise ApiError(403, "forbidden", "only an owner may grant elevations")
        led = self.service.ledger
        args = parse_grant(self.request.body, self.service.policy, led.clock())
        grant = led.grant(**args, granted_by=self.identity.name)
        self.reply({"grant": grant.public(led.clock())}, status=201)


class GrantById(Base):
    action = "grant_revoke"

    async def delete(self, grant_id: str) -> None:
        self.audited = ("", grant_id)
        if not _owner(self.identity):
            raise ApiError(403, "forbidden", "only an owner may revoke a grant")
        led = self.service.ledger
        grant = led.revoke(grant_id, by=self.identity.name, purpose=self.purpose)
        self.reply({"grant": grant.public(led.clock())})


class NotFound(Base):
    async def prepare(self) -> None:  # type: ignore[override]
        super().prepare()
        raise ApiError(404, "not_found", "no such endpoint")


ROUTES: list[tuple[str, type[Base]]] = [
    ("/health", Health),
    ("/me", Me),
    ("/openapi.json", OpenApi),
    ("/datasets", Datasets),
    (r"/datasets/([A-Za-z0-9_.-]+)", DatasetSchema),
    (r"/datasets/([A-Za-z0-9_.-]+)/query", Release),
    (r"/datasets/([A-Za-z0-9_.-]+)/cost", Cost),
    ("/budget", BudgetHandler),
    ("/releases", Releases),
    (r"/releases/([A-Za-z0-9_-]+)", ReleaseById),
    ("/audit", Audit),
    ("/audit/verify", AuditVerify),
    ("/grants", Grants),
    (r"/grants/([A-Za-z0-9_-]+)", GrantById),
]


def housekeeping(service: Service) -> None:
    """At start: write down grants that lapsed while the service was down, and purge
    releases past the policy's retention (audited only when something was purged)."""
    service.ledger.lapse_grants()
    service.ledger.purge(service.policy.retention_days, record_empty=False)


def make_app(service: Service, base_url: str = "/") -> tornado.web.Application:
    """The API at ``{base_url}api/v1``; a JupyterHub service's base is its prefix
    (``/services/pdebug/``), since the hub's proxy forwards the full path."""
    housekeeping(service)
    base = base_url.rstrip("/") + PREFIX
    handlers = [(base + path, cls, {"service": service}) for path, cls in ROUTES]
    return tornado.web.Application(handlers, default_handler_class=NotFound,
                                   default_handler_args={"service": service})
