"""Where the privacy service is, and one blocking call to it.

The user's Jupyter server is not a privacy boundary (the kernel runs as the same user and can
read this process's environment), so this object is only a courier: it reads the service's
address and the user's service token from the server's configuration, forwards fixed read-only
paths, and keeps nothing it receives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from traitlets import Float, Unicode, default
from traitlets.config import Configurable

from ..client.transport import PdebugError, Transport

NOT_CONFIGURED = (
    "No privacy service is configured for this Jupyter server: set PDEBUG_URL and "
    "PDEBUG_TOKEN in its environment (or c.PdebugProxy.url and c.PdebugProxy.token in its "
    "configuration) and restart it."
)


@dataclass(frozen=True)
class Answer:
    """The service's reply as the panel gets it: a status and a JSON body."""

    status: int
    body: Any


def error(status: int, code: str, message: str) -> Answer:
    return Answer(status, {"error": {"code": code, "message": message}})


class PdebugProxy(Configurable):
    """The privacy service the JupyterLab panel reads through this server."""

    url = Unicode(help="Base URL of the pdebug service API, e.g. http://127.0.0.1:8765/api/v1 "
                  "(default: $PDEBUG_URL).").tag(config=True)
    token = Unicode(help="The user's token for the pdebug service (default: $PDEBUG_TOKEN, else "
                    "$JUPYTERHUB_API_TOKEN on a hub). It is sent to the service only, never to "
                    "the browser.").tag(config=True)
    timeout = Float(10.0, help="Seconds to wait for the service before the panel is told it "
                    "is unreachable.").tag(config=True)

    @default("url")
    def _url_from_env(self) -> str:
        return os.environ.get("PDEBUG_URL", "")

    @default("token")
    def _token_from_env(self) -> str:
        # on a hub, the single-user server's own token carries the user's pdebug scopes
        return os.environ.get("PDEBUG_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN", "")

    @property
    def configured(self) -> bool:
        return bool(self.url and self.token)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Answer:
        """GET ``path`` from the service (blocking: handlers run this in a worker thread).

        A fresh transport per call keeps the worker threads from sharing one HTTP session.
        """
        if not self.configured:
            return error(503, "not_configured", NOT_CONFIGURED)
        transport = Transport(self.url, self.token, purpose=None, timeout=self.timeout)
        try:
            return Answer(200, transport.request("GET", path, params=params))
        except PdebugError as exc:
            if exc.code == "unreachable":
                return error(502, exc.code, exc.message)
            return error(exc.status if exc.status >= 400 else 502, exc.code, exc.message)
        finally:
            transport.close()
