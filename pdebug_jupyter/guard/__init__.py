"""The kernel guard: an IPython extension that prevents accidental display of personal data.

``%load_ext pdebug_jupyter`` (or ``connect()`` inside IPython) installs it:

* tables (pandas, polars, pyarrow, numpy structured arrays) with identifier or sensitive
  columns render as a masked schema summary, with no cell values at all;
* emails, phones, SSN-shaped numbers, card numbers (Luhn) and IBANs (mod 97) in display
  output, tracebacks and the kernel's stdout/stderr are replaced by ``[redacted ...]``;
* ``%pdebug status | budget | purpose "..."`` shows and steers the connection.

It runs in the user's own kernel, so the user can switch it off: it is accident prevention.
The privacy service is the boundary. IPython is imported only when a shell is at hand, so
``import pdebug_jupyter`` works without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._columns import DEFAULT_PATTERNS, PolicyColumn, SensitiveColumns
from ._display import DisplayGuard
from ._patterns import iban_valid, luhn_valid, redact, redact_bundle

if TYPE_CHECKING:
    from ..client.session import Session

__all__ = [
    "DEFAULT_PATTERNS", "DisplayGuard", "SensitiveColumns", "active_guard", "disable", "enable",
    "enable_for_session", "iban_valid", "load_ipython_extension", "luhn_valid", "redact",
    "redact_bundle", "unload_ipython_extension",
]

_guard: DisplayGuard | None = None


def active_guard() -> DisplayGuard | None:
    """The guard installed now, if any."""
    return _guard


def _shell(ipython: Any = None) -> Any:
    if ipython is not None:
        return ipython
    from IPython import get_ipython

    return get_ipython()


def enable(ipython: Any = None, *, schemas: Iterable[Mapping[str, Any]] | None = None,
           columns: Iterable[str] = (), extra_patterns: Iterable[str] = (),
           patterns: Iterable[str] | None = None) -> DisplayGuard:
    """Install the guard on ``ipython`` (default: the running shell), or update it.

    Parameters
    ----------
    schemas
        Dataset schemas as ``GET /datasets`` gives them: their identifier and protected
        columns are sensitive. Added to those already known.
    columns
        More column names to treat as sensitive, exactly (case and separators aside).
    extra_patterns
        More name patterns: plain words (``"NHS number"``) or regular expressions over the
        normal name (lower case, ``_`` between words), matched on whole words.
    patterns
        Replace :data:`DEFAULT_PATTERNS` altogether (``patterns=()``: policy columns only).
    """
    global _guard
    shell = _shell(ipython)
    if shell is None:
        raise RuntimeError("the pdebug guard needs a running IPython shell")
    known = _guard.columns if _guard is not None else SensitiveColumns()
    if patterns is not None:
        known = SensitiveColumns(known.policy, ()).with_patterns(patterns)
    known = known.with_patterns(extra_patterns)
    if schemas is not None:
        known = known.with_policy(SensitiveColumns.from_schemas(schemas))
    declared = {name: PolicyColumn(name, "sensitive", "guard settings") for name in columns}
    if declared:
        known = known.with_policy(SensitiveColumns.from_declared(declared))
    if _guard is not None and _guard.shell is shell:
        _guard.columns = known  # the hooks read it on every display
        return _guard
    disable()
    _guard = DisplayGuard(shell, known)
    _guard.install()
    return _guard


def disable() -> None:
    """Remove the guard, restoring every hook it installed."""
    global _guard
    if _guard is not None:
        _guard.uninstall()
        _guard = None


def enable_for_session(session: Session) -> DisplayGuard | None:
    """Called by ``connect()``: inside IPython, the guard with the policy's columns and the
    ``%pdebug`` magics. Outside IPython, nothing."""
    from ..client.transport import PdebugError

    shell = _shell()
    if shell is None:
        return None
    try:
        schemas = session.request("GET", "/datasets")["datasets"]
    except PdebugError:
        schemas = []  # a viewer or auditor may not read schemas: name patterns only
    return load_ipython_extension(shell, schemas=schemas)


def load_ipython_extension(ipython: Any, *,
                           schemas: Iterable[Mapping[str, Any]] | None = None) -> DisplayGuard:
    """``%load_ext pdebug_jupyter``: the guard and the ``%pdebug`` magics."""
    from . import _magics

    guard = enable(ipython, schemas=schemas)
    _magics.register(ipython)
    return guard


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext pdebug_jupyter``: everything back as it was."""
    from . import _magics

    if _guard is not None and _guard.shell is ipython:
        disable()
    _magics.unregister(ipython)
