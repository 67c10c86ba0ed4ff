"""The kernel side: connect to a service, ask for releases, get :class:`Release` objects."""

from __future__ import annotations

from .release import Release
from .session import Dataset, Session, connect
from .transport import PdebugError

__all__ = ["Dataset", "PdebugError", "Release", "Session", "connect"]
