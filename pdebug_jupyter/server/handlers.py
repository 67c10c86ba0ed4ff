"""Thin, authenticated, read-only handlers under ``{base_url}pdebug/``.

Each one forwards a fixed path of the service with only the parameters it names: the browser
never chooses where the request goes, never sees the service token, and gets the service's own
status back (a 403 for an analyst reading the audit log stays a 403). Every HTTP method is
wrapped by ``tornado.web.authenticated`` first (tests/test_server_extension.py fails otherwise)
and by jupyter_server's ``authorized`` for deployments that restrict the ``pdebug`` resource.
"""

from __future__ import annotations

import asyncio
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler

from .proxy import Answer, PdebugProxy, error

#: the most rows the panel may ask for at once (the service allows more for its own clients)
MAX_ROWS = 500


class ProxyHandler(APIHandler):
    auth_resource = "pdebug"

    def initialize(self, proxy: PdebugProxy) -> None:
        self.proxy = proxy

    async def fetch(self, path: str, params: dict[str, Any] | None = None) -> Answer:
        # requests blocks: a worker thread keeps the server's event loop free
        return await asyncio.get_running_loop().run_in_executor(None, self.proxy.get, path,
                                                                params)

    def answer(self, answer: Answer) -> None:
        self.set_status(answer.status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(tornado.escape.json_encode(answer.body))

    def rows(self, default: int) -> int | None:
        """The ``limit`` parameter, or None (after a 400 reply) when it is not 1..MAX_ROWS."""
        raw = self.get_query_argument("limit", str(default))
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_ROWS:
            self.answer(error(400, "invalid_parameter",
                              f"limit must be an integer from 1 to {MAX_ROWS}"))
            return None
        return int(raw)


class Me(ProxyHandler):
    """Who the configured token belongs to, the role, and the service it points at."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        answer = await self.fetch("/me")
        if answer.status == 200:
            answer.body["service_url"] = self.proxy.url
        self.answer(answer)


class Datasets(ProxyHandler):
    """The datasets' public schemas, each with the user's budget on it."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.answer(await self.fetch("/datasets"))


class Budget(ProxyHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.answer(await self.fetch("/budget"))


class Releases(ProxyHandler):
    """The most recent releases (newest first), optionally of one dataset."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.rows(20)
        if limit is None:
            return
        params: dict[str, Any] = {"limit": limit}
        dataset = self.get_query_argument("dataset", None)
        if dataset:
            params["dataset"] = dataset
        self.answer(await self.fetch("/releases", params))


class Audit(ProxyHandler):
    """The last ``limit`` audit rows and the state of the hash chain.

    The service pages the log from the oldest row; its verification gives the row count, so the
    newest rows are those after ``rows - limit``. The service decides who may read either (owners
    and auditors) and its 403 is passed on as it is.
    """

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.rows(50)
        if limit is None:
            return
        chain = await self.fetch("/audit/verify")
        if chain.status != 200:
            self.answer(chain)
            return
        after = max(0, int(chain.body["rows"]) - limit)
        page = await self.fetch("/audit", {"after": after, "limit": limit})
        if page.status == 200:
            page.body["chain"] = chain.body
        self.answer(page)


#: path under ``{base_url}pdebug/`` -> handler; the extension registers exactly these
ROUTES: list[tuple[str, type[ProxyHandler]]] = [
    ("me", Me),
    ("datasets", Datasets),
    ("budget", Budget),
    ("releases", Releases),
    ("audit", Audit),
]
