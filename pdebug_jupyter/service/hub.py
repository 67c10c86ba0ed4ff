"""The service as a JupyterHub service: ``pdebug-jupyter serve --hub --policy FILE``.

The hub owns users, roles and tokens; this module asks it who holds a token
(:class:`jupyterhub.services.auth.HubAuth`) and turns the token's scopes into this project's
roles. The hub grants three custom scopes through its roles:

=======================  ==========================================================
``custom:pdebug:query``  analyst: schemas, new releases and costs, own budget, releases
``custom:pdebug:audit``  auditor: read and verify the audit log
``custom:pdebug:admin``  owner: everything above
=======================  ==========================================================

A token must also hold the service's access scope (``access:services!service=pdebug``, what
the hub passes in ``$JUPYTERHUB_OAUTH_ACCESS_SCOPES``), the hub's own switch for who may talk
to a service at all. A token without any of these is identified (so it gets 403, not 401) and
may do nothing. Scopes granted with a filter (``custom:pdebug:query!user=x``) grant nothing:
the service has no per-user resources to filter on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import tornado.web

from ..policy import Policy
from .app import ApiError
from .auth import Identity, TokenAuthenticator

log = logging.getLogger("pdebug_jupyter.service.hub")

SCOPE_PREFIX = "custom:pdebug"
QUERY_SCOPE = f"{SCOPE_PREFIX}:query"
AUDIT_SCOPE = f"{SCOPE_PREFIX}:audit"
ADMIN_SCOPE = f"{SCOPE_PREFIX}:admin"

#: custom scope -> the project role it grants
SCOPE_ROLES = {ADMIN_SCOPE: "owner", QUERY_SCOPE: "analyst", AUDIT_SCOPE: "auditor"}

#: how long a token's answer from the hub is trusted. HubAuth's own default is 300 s; a
#: revoked token keeps spending budget until its entry expires, so ours is shorter.
CACHE_SECONDS_ENV = "PDEBUG_HUB_CACHE_SECONDS"
DEFAULT_CACHE_SECONDS = 60


@dataclass(frozen=True)
class HubEnvironment:
    """What the hub tells a service it manages (or what an admin sets for an external one)."""

    api_token: str = field(repr=False)
    api_url: str
    name: str
    prefix: str  # e.g. /services/pdebug/
    host: str
    port: int
    access_scopes: frozenset[str]
    cache_seconds: int

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> HubEnvironment:
        env = dict(os.environ if environ is None else environ)
        token = env.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise SystemExit("--hub needs $JUPYTERHUB_API_TOKEN (the hub sets it for a service "
                             "it manages; set it from the service's api_token otherwise)")
        name = env.get("JUPYTERHUB_SERVICE_NAME") or "pdebug"
        prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or f"/services/{name}/"
        url = urlparse(env.get("JUPYTERHUB_SERVICE_URL") or "http://127.0.0.1:10101")
        scopes = env.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES")
        cache = env.get(CACHE_SECONDS_ENV, str(DEFAULT_CACHE_SECONDS))
        if not cache.isdigit():
            raise SystemExit(f"${CACHE_SECONDS_ENV} must be a whole number of seconds")
        return cls(
            api_token=token,
            api_url=env.get("JUPYTERHUB_API_URL") or "http://127.0.0.1:8081/hub/api",
            name=name, prefix="/" + prefix.strip("/") + "/",
            host=url.hostname or "127.0.0.1", port=url.port or 80,
            access_scopes=frozenset(json.loads(scopes) if scopes
                                    else [f"access:services!service={name}"]),
            cache_seconds=int(cache))


def _hub_auth(env: HubEnvironment) -> Any:
    try:
        from jupyterhub.services.auth import HubAuth
    except ImportError:
        raise SystemExit("--hub needs JupyterHub's client code: pip install jupyterhub") from None
    # HubAuth reads a max age of 0 as "cache forever"; 0 here means "ask the hub every time"
    return HubAuth(api_token=env.api_token, api_url=env.api_url, base_url=env.prefix,
                   access_scopes=set(env.access_scopes),
                   cache_max_age=max(env.cache_seconds, 1))


class HubAuthenticator(TokenAuthenticator):
    """Hub tokens, checked with the hub; the policy's own users (whose tokens are set in this
    process's environment, e.g. a CI health check) are checked first, in constant time."""

    def __init__(self, policy: Policy, env: HubEnvironment) -> None:
        super().__init__(policy)
        self._hub = _hub_auth(env)
        self._use_cache = env.cache_seconds > 0
        log.info("tokens checked with the hub at %s (answers kept %d s); access needs one of %s",
                 env.api_url, env.cache_seconds, ", ".join(sorted(env.access_scopes)))

    def identify(self, header: str | None) -> Identity | None:
        static = super().identify(header)
        if static is not None or not header:
            return static
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token.strip():
            return None
        try:  # blocks this request's thread on a cache miss, as HubAuthenticated does
            model = self._hub.user_for_token(token.strip(), use_cache=self._use_cache)
        except tornado.web.HTTPError:
            raise ApiError(503, "hub_unavailable", "the JupyterHub API could not check the "
                           "token; try again later") from None
        if not model:
            return None
        return self.identity_of(model)

    def identity_of(self, model: dict[str, Any]) -> Identity:
        """The hub's user (or service) model -> who it is here and what it may do."""
        name = str(model["name"])
        if model.get("kind") == "service":  # a service is never mistaken for a user
            name = f"service:{name}"
        if not self._hub.check_scopes(self._hub.access_scopes, model):
            return Identity(name, "")
        roles = [role for scope, role in SCOPE_ROLES.items()
                 if self._hub.check_scopes({scope}, model)]
        return Identity(name, "owner" if "owner" in roles else "+".join(roles))

