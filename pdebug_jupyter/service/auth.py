"""Who is calling and what they may do.

Standalone mode reads users and tokens from the policy; ``Authorization: token <t>``
(JupyterHub's convention; ``Bearer`` is accepted too) identifies the caller. On a JupyterHub
(``serve --hub``) the hub's tokens and scopes do so too: see :mod:`.hub`. Roles map to
permissions; every handler names the permission it needs.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from ..policy import Policy, User

#: permission -> what it allows
PERMISSIONS = {
    "read_schema": "list datasets and read their public schema",
    "query": "spend budget on new releases and preview costs",
    "read_budget": "read one's own budget",
    "read_releases": "read releases already made",
    "read_audit": "read and verify the audit log",
}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "owner": frozenset(PERMISSIONS),
    "analyst": frozenset({"read_schema", "query", "read_budget", "read_releases"}),
    "viewer": frozenset({"read_releases"}),
    "auditor": frozenset({"read_audit"}),
}


@dataclass(frozen=True)
class Identity:
    """A caller: ``role`` is one role, several joined by ``+`` (a hub user whose scopes grant
    more than one, e.g. ``analyst+auditor``) or empty (known to the hub, granted nothing)."""

    name: str
    role: str

    @property
    def permissions(self) -> frozenset[str]:
        roles = [r for r in self.role.split("+") if r]
        return frozenset().union(*(ROLE_PERMISSIONS[r] for r in roles))

    def can(self, permission: str) -> bool:
        return permission in self.permissions


class TokenAuthenticator:
    """Constant-time token lookup over the policy's users (plus the local session user)."""

    def __init__(self, policy: Policy, local: User | None = None) -> None:
        users = list(policy.users) + ([local] if local else [])
        self._users = [(u.token.encode(), Identity(u.name, u.role)) for u in users]

    def identify(self, header: str | None) -> Identity | None:
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token.strip():
            return None
        given = token.strip().encode()
        found = None
        for secret, identity in self._users:  # no early exit: timing says nothing
            if hmac.compare_digest(secret, given):
                found = identity
        return found
