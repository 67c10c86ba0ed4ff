"""pdebug-jupyter: privacy-aware model debugging for Jupyter.

The data stays in a service that answers only differentially private aggregates; the
kernel gets releases, never rows.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .client import Dataset, PdebugError, Release, Session, connect  # noqa: E402

__all__ = ["Dataset", "PdebugError", "Release", "Session", "__version__", "connect"]

# typed releases (calibration, confusion, drift, ...) register themselves with the client,
# and so do the chart builders (Altair itself is imported on the first chart)
from . import charts as _charts  # noqa: E402, F401
from .metrics import releases as _releases  # noqa: E402, F401


def __getattr__(name: str) -> Any:
    # ``pdj.widgets`` on first use: ipywidgets is slow to import, and the service process
    # (which imports this package too) never needs it
    if name == "widgets":
        from importlib import import_module

        return import_module(f"{__name__}.widgets")
    if name == "replay":  # recipes compare through the metrics and draw with Altair
        from .recipe import replay

        return replay
    raise AttributeError(f"module 'pdebug_jupyter' has no attribute {name!r}")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """jupyter_server: the panel's proxy lives in :mod:`pdebug_jupyter.server`."""
    return [{"module": "pdebug_jupyter.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """``jupyter labextension develop``: the prebuilt panel inside the package."""
    return [{"src": "labextension", "dest": "pdebug-jupyter"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext pdebug_jupyter``: the kernel guard (masked tables, redacted personal data
    in outputs) and the ``%pdebug`` magics; see :mod:`pdebug_jupyter.guard`."""
    from .guard import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext pdebug_jupyter``: every hook of the guard removed."""
    from .guard import unload_ipython_extension as unload

    unload(ipython)
