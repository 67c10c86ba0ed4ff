"""jupyter_server extension: the JupyterLab privacy panel's read-only proxy to the service.

Enabled by ``jupyter-config/server-config/pdebug_jupyter.json`` (installed into
``etc/jupyter/jupyter_server_config.d``). It holds no data and is no privacy boundary: the
service decides what anyone may read; this only saves the browser from holding the token.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

from .handlers import ROUTES, ProxyHandler
from .proxy import PdebugProxy

__all__ = ["PdebugProxy", "handlers"]


def handlers(base_url: str, proxy: PdebugProxy) -> list[tuple[str, type[ProxyHandler],
                                                             dict[str, Any]]]:
    """The tornado rules the extension adds, one per route, under ``{base_url}pdebug/``."""
    return [(url_path_join(base_url, "pdebug", path), cls, {"proxy": proxy})
            for path, cls in ROUTES]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    proxy = PdebugProxy(parent=serverapp)
    web_app = serverapp.web_app
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"], proxy))
    where = proxy.url or "nowhere (set PDEBUG_URL and PDEBUG_TOKEN)"
    serverapp.log.info("pdebug_jupyter: privacy panel proxy to %s", where)
