"""Governance at the service: reading a grant request, and sending budget alerts out.

A grant request is checked whole before anything is written, so a bad body changes nothing.
Alerts go to the policy's ``alert_webhook`` from a background thread with a short timeout:
the release they belong to is already committed and returned whatever the webhook does.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import urllib.request
from datetime import datetime
from typing import Any

from ..policy import Policy
from .auth import ROLE_PERMISSIONS

log = logging.getLogger("pdebug_jupyter.service")

#: an elevation is temporary: at most this long
MAX_GRANT_SECONDS = 90 * 86400
MAX_GRANT_PURPOSE = 500
WEBHOOK_TIMEOUT = 3.0
_USER = re.compile(r"[A-Za-z0-9_.@+-]{1,128}")
_KEYS = ("user", "dataset", "epsilon", "role", "expires_at", "ttl", "purpose")


class GrantRejected(ValueError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str) -> GrantRejected:
    return GrantRejected(400, "invalid_grant", message)


def parse_grant(raw: bytes, policy: Policy, now: float) -> dict[str, Any]:
    """The keyword arguments of :meth:`Ledger.grant` from a ``POST /grants`` body."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays or objects
        raise _bad("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    unknown = sorted(set(body) - set(_KEYS))
    if unknown:
        raise _bad(f"unknown key {unknown[0][:100]!r} (allowed: {', '.join(_KEYS)})")
    user = body.get("user")
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise _bad("user must be a user name (1-128 letters, digits or _.@+-)")
    dataset = body.get("dataset")
    if not isinstance(dataset, str) or dataset not in policy.datasets:
        raise GrantRejected(404, "unknown_dataset", f"no dataset named {str(dataset)[:100]!r}")
    epsilon = body.get("epsilon", 0.0)
    cap = policy.datasets[dataset].epsilon_total
    if not _finite(epsilon) or not 0 <= epsilon <= cap:
        raise _bad(f"epsilon must be a number from 0 to the dataset-wide budget {cap:g}")
    role = body.get("role")
    if role is not None and (not isinstance(role, str) or role not in ROLE_PERMISSIONS):
        raise _bad(f"role must be one of {', '.join(ROLE_PERMISSIONS)}")
    if not epsilon and role is None:
        raise _bad("a grant gives a positive epsilon, a role, or both")
    purpose = body.get("purpose")
    if (not isinstance(purpose, str) or not purpose.strip()
            or len(purpose) > MAX_GRANT_PURPOSE):
        raise _bad(f"purpose is required: why the elevation (at most {MAX_GRANT_PURPOSE} "
                   "characters)")
    return {"user": user, "dataset": dataset, "epsilon": float(epsilon), "role": role,
            "purpose": " ".join(purpose.split()), "expires_at": _expiry(body, now)}


def _finite(value: Any) -> bool:
    """A JSON number that is a finite float (an integer too large for one is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _expiry(body: dict[str, Any], now: float) -> float:
    if ("ttl" in body) == ("expires_at" in body):
        raise _bad("give exactly one of ttl (seconds) and expires_at (ISO 8601 with a zone)")
    if "ttl" in body:
        ttl = body["ttl"]
        if not _finite(ttl):
            raise _bad("ttl must be a number of seconds")
        at = now + float(ttl)
    else:
        text = body["expires_at"]
        try:
            when = datetime.fromisoformat(text) if isinstance(text, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise _bad("expires_at must be an ISO 8601 time with a zone, e.g. "
                       "2030-01-31T18:00:00+00:00")
        at = when.timestamp()
    if not now < at <= now + MAX_GRANT_SECONDS:
        raise _bad(f"a grant must expire in the future and within {MAX_GRANT_SECONDS // 86400} "
                   "days")
    return at


def send_alerts(url: str, events: list[dict[str, Any]]) -> threading.Thread:
    """POST each alert to ``url`` from a daemon thread; failures are logged, never raised."""
    def post() -> None:
        for event in events:
            request = urllib.request.Request(  # noqa: S310 (http(s) only: the policy checks)
                url, data=json.dumps(event).encode(), method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "pdebug-jupyter"})
            try:
                with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as reply:  # noqa: S310
                    reply.read(1024)
            except Exception as exc:  # noqa: BLE001 (an alert must never fail a release)
                log.warning("budget alert webhook %s failed: %s", url, exc)
    thread = threading.Thread(target=post, name="pdebug-alert-webhook", daemon=True)
    thread.start()
    return thread
