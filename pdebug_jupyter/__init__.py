"""pdebug-jupyter: privacy-aware model debugging for Jupyter.

The data stays in a service that answers only differentially private aggregates; the
kernel gets releases, never rows.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .client import Dataset, PdebugError, Release, Session, connect  # noqa: E402

__all__ = ["Dataset", "PdebugError", "Release", "Session", "__version__", "connect"]

# typed releases (calibration, confusion, drift, ...) register themselves with the client,
# and so do the chart builders (Altair itself is imported on the first chart)
from . import charts as _charts  # noqa: E402, F401
from .metrics import releases as _releases  # noqa: E402, F401
