"""``%pdebug status | budget | purpose "..."``: the connection, the budget and the purpose.

The magics read the session that the last ``connect()`` registered
(:func:`pdebug_jupyter.client.session.current_session`). Failures are one-line errors
(IPython's ``UsageError``), never a traceback.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from ..client.session import Session, current_session
from ..client.transport import PdebugError

__all__ = ["USAGE", "pdebug"]

USAGE = 'usage: %pdebug status | budget | purpose "why I am looking"'


def _usage_error(message: str) -> Exception:
    from IPython.core.error import UsageError

    return UsageError(message)


def _session() -> Session:
    session = current_session()
    if session is None:
        raise _usage_error("pdebug: not connected; call pdebug_jupyter.connect() first")
    return session


def status(args: list[str]) -> str:
    from . import active_guard  # the package holds the installed guard

    guard = active_guard()
    if guard is None:
        guard_line = "guard: off (%load_ext pdebug_jupyter turns it on)"
    else:
        streams = " and ".join(guard.streams) or "no streams (not a Jupyter kernel)"
        guard_line = (f"guard: on; masks tables with {guard.columns.describe()}; redacts "
                      f"emails, phones, SSNs, cards and IBANs in display output, tracebacks "
                      f"and {streams}")
    session = current_session()
    if session is None:
        return ("pdebug: not connected (pdebug_jupyter.connect() starts or joins a service)\n"
                + guard_line)
    me = session.me
    try:
        datasets = ", ".join(session.datasets()) or "(none)"
    except PdebugError as err:
        datasets = f"(not listed: {err.message})"
    return "\n".join([
        f"pdebug: connected to {session.url} as {me['user']} ({me['role']})",
        f"purpose: {session.purpose or '(none given)'}",
        f"datasets: {datasets}",
        guard_line,
    ])


def budget(args: list[str]) -> str:
    rows = [("dataset", "spent", "remaining", "limit", "all users: spent / limit")]
    for name, b in _session().budget().items():
        rows.append((name, f"{b['spent']:g}", f"{b['remaining']:g}", f"{b['limit']:g}",
                     f"{b['dataset_spent']:g} / {b['dataset_limit']:g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def purpose(args: list[str]) -> str:
    session = _session()
    if not args:
        return f"purpose: {session.purpose or '(none given)'}"
    session.purpose = " ".join(args)
    return (f"purpose: {session.purpose or '(none given)'}\n(recorded with every release and "
            "audit row from the next request on)")


COMMANDS: dict[str, Callable[[list[str]], str]] = {
    "status": status, "budget": budget, "purpose": purpose}


def pdebug(line: str) -> None:
    """%pdebug status | budget | purpose "why I am looking" """
    try:
        words = shlex.split(line)
    except ValueError as err:
        raise _usage_error(f"pdebug: {err}; {USAGE}") from None
    if not words or words[0] not in COMMANDS:
        what = f"unknown subcommand {words[0]!r}; " if words else ""
        raise _usage_error(f"pdebug: {what}{USAGE}")
    if words[0] != "purpose" and len(words) > 1:
        raise _usage_error(f"pdebug: {words[0]} takes no arguments; {USAGE}")
    try:
        print(COMMANDS[words[0]](words[1:]))
    except PdebugError as err:
        raise _usage_error(f"pdebug: {err}") from None


def register(shell: Any) -> None:
    shell.register_magic_function(pdebug, magic_kind="line", magic_name="pdebug")


def unregister(shell: Any) -> None:
    shell.magics_manager.magics["line"].pop("pdebug", None)
