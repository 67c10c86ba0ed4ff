"""The panel's jupyter_server proxy: every handler authenticated, real values, clean refusals.

The live tests run real ``jupyter server`` processes (one per identity: the proxy forwards
with the single service token of its server) in front of a real pdebug service.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tornado.web
from conftest import ALICE, AUDREY, OLIVIA, ServiceProcess, policy_copy
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from traitlets.config import LoggingConfigurable

from pdebug_jupyter.server import PdebugProxy, _load_jupyter_server_extension
from pdebug_jupyter.server.handlers import ROUTES

# every method wrapped by tornado.web.authenticated shares this code object
AUTHENTICATED = tornado.web.authenticated(lambda self: None).__code__


def unauthenticated_methods(rules: list[tuple[Any, ...]]) -> list[str]:
    """The HTTP methods of registered handlers whose outermost wrapper is not
    ``tornado.web.authenticated`` (it has to come first, before ``authorized``).

    Only jupyter_server's own CORS preflight (``APIHandler.options``, carries no credentials and
    no data) is let through.
    """
    missing = []
    for pattern, cls, *_ in rules:
        for verb in cls.SUPPORTED_METHODS:
            method = getattr(cls, verb.lower())
            if method is tornado.web.RequestHandler._unimplemented_method:
                continue
            if verb == "OPTIONS" and method is APIHandler.options:
                continue
            if getattr(method, "__code__", None) is not AUTHENTICATED:
                missing.append(f"{verb} {cls.__name__} at {pattern}")
    return missing


class RecordingServer(LoggingConfigurable):
    """Just enough of a ServerApp to see which rules the extension adds."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.rules: list[tuple[Any, ...]] = []
        outer = self

        class WebApp:
            settings = {"base_url": base_url}

            def add_handlers(self, host: str, rules: list[tuple[Any, ...]]) -> None:
                outer.rules.extend(rules)

        self.web_app = WebApp()


def registered_rules(base_url: str = "/user/alice/") -> list[tuple[Any, ...]]:
    server = RecordingServer(base_url)
    _load_jupyter_server_extension(server)
    return server.rules


def test_every_registered_handler_method_is_authenticated() -> None:
    rules = registered_rules()
    assert [r[0] for r in rules] == [f"/user/alice/pdebug/{path}" for path, _ in ROUTES]
    assert unauthenticated_methods(rules) == []


def test_the_authentication_check_catches_a_handler_without_it() -> None:
    class Open(APIHandler):
        async def get(self) -> None: ...

    class AuthorizedOnly(APIHandler):
        @authorized
        async def get(self) -> None: ...

    class WrongOrder(APIHandler):  # authorized outside: it would see no user yet
        @authorized
        @tornado.web.authenticated
        async def get(self) -> None: ...

    class Guarded(APIHandler):
        @tornado.web.authenticated
        async def get(self) -> None: ...

        async def post(self) -> None: ...

    rules = [("/a", Open), ("/b", AuthorizedOnly), ("/c", WrongOrder), ("/d", Guarded)]
    assert unauthenticated_methods(rules) == [
        "GET Open at /a", "GET AuthorizedOnly at /b", "GET WrongOrder at /c",
        "POST Guarded at /d"]


def test_an_unreachable_service_is_a_clear_502() -> None:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = PdebugProxy(url=f"http://127.0.0.1:{port}/api/v1", token="t", timeout=5)
    answer = proxy.get("/me")
    assert answer.status == 502
    assert answer.body["error"]["code"] == "unreachable"
    assert f"127.0.0.1:{port}" in answer.body["error"]["message"]


# -- live: real jupyter servers in front of a real service -------------------------------------

class JupyterServer:
    """``python -m jupyter_server`` on a free loopback port with a known token."""

    def __init__(self, root: Path, service_env: dict[str, str]) -> None:
        root.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.token = secrets.token_hex(24)
        self.log = root / "jupyter.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDEBUG_")}
        env.update(service_env, JUPYTER_CONFIG_DIR=str(root / "config"),
                   JUPYTER_RUNTIME_DIR=str(root / "runtime"))
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                 "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                 "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
                 f"--IdentityProvider.token={self.token}",
                 "--ServerApp.jpserver_extensions=pdebug_jupyter=True"],
                stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if self.get("/api/status").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"jupyter server did not start:\n{self.log.read_text()[-3000:]}")

    def get(self, path: str, token: str | None = "", **params: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.token if token == '' else token}"}
        if token is None:
            headers = {}
        return requests.get(self.url + path, headers=headers, params=params, timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def pdebug(loans: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A service on which alice has made one release (epsilon 0.5) and audrey audits."""
    svc = ServiceProcess(policy_copy(loans, tmp_path_factory.mktemp("proxied")))
    r = svc.query({"kind": "histogram", "column": "age", "by": "sex", "epsilon": 0.5})
    assert r.status_code == 200, r.text
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def jupyter(pdebug: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, JupyterServer]]:
    """Jupyter servers whose proxy speaks for alice (analyst), for audrey (auditor), and for
    nobody (no service configured); started together, they come up in parallel."""
    root = tmp_path_factory.mktemp("jupyter")
    servers = {
        "alice": JupyterServer(root / "alice", {"PDEBUG_URL": pdebug.url,
                                                "PDEBUG_TOKEN": ALICE}),
        "audrey": JupyterServer(root / "audrey", {"PDEBUG_URL": pdebug.url,
                                                  "PDEBUG_TOKEN": AUDREY}),
        "nobody": JupyterServer(root / "nobody", {}),
    }
    try:
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def test_no_endpoint_answers_without_the_jupyter_token_and_none_reaches_the_service(
        pdebug: ServiceProcess, jupyter: dict[str, JupyterServer]) -> None:
    alice = jupyter["alice"]
    seen = len(pdebug.log.read_text())
    for path, _ in ROUTES:
        for token in (None, "not-the-token", ALICE):  # a service token is no Jupyter token
            r = alice.get(f"/pdebug/{path}", token=token)
            assert r.status_code == 403, (path, token, r.status_code, r.text)
            assert "alice" not in r.text and "budget" not in r.text
    # then one authenticated request: the service logs it (just after answering), and it is
    # the only request the service has seen since
    assert alice.get("/pdebug/me").status_code == 200
    deadline = time.monotonic() + 30
    while "/api/v1/me" not in pdebug.log.read_text()[seen:] and time.monotonic() < deadline:
        time.sleep(0.1)
    requests_seen = re.findall(r"(GET|POST) (/api/v1\S*)", pdebug.log.read_text()[seen:])
    assert requests_seen == [("GET", "/api/v1/me")]
    assert "Extension endpoints without" not in alice.log.read_text()


def test_identity_budget_and_releases_are_the_service_own_values(
        pdebug: ServiceProcess, jupyter: dict[str, JupyterServer]) -> None:
    alice = jupyter["alice"]
    me = alice.get("/pdebug/me").json()
    assert (me["user"], me["role"], me["service_url"]) == ("alice", "analyst", pdebug.url)
    assert "read_audit" not in me["permissions"] and "query" in me["permissions"]

    budget = pdebug.call("GET", "/budget", ALICE).json()
    assert budget["datasets"]["loans"]["spent"] == pytest.approx(0.5)
    assert alice.get("/pdebug/budget").json() == budget
    datasets = alice.get("/pdebug/datasets").json()["datasets"]
    assert {d["name"]: d["budget"] for d in datasets} == budget["datasets"]

    releases = alice.get("/pdebug/releases", limit=5)
    assert releases.status_code == 200
    assert releases.json() == pdebug.call("GET", "/releases?limit=5", ALICE).json()
    (only,) = releases.json()["releases"]
    assert (only["user"], only["kind"], only["epsilon"]) == ("alice", "histogram", 0.5)
    assert releases.headers["Cache-Control"] == "no-store"
    for bad in ("0", "abc", "501"):
        r = alice.get("/pdebug/releases", limit=bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter"


def test_the_audit_log_is_the_services_decision(pdebug: ServiceProcess,
                                                jupyter: dict[str, JupyterServer]) -> None:
    refused = jupyter["alice"].get("/pdebug/audit")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "analyst" in refused.json()["error"]["message"]

    audrey = jupyter["audrey"]
    assert audrey.get("/pdebug/me").json()["role"] == "auditor"
    everything = pdebug.call("GET", "/audit", OLIVIA).json()["audit"]
    assert [a["outcome"] for a in everything] == ["released"]
    # one more audited event: a refused query (alice's budget is 5 and she has spent 0.5)
    assert pdebug.query({"kind": "histogram", "column": "age", "epsilon": 4.6}).status_code == 403
    everything = pdebug.call("GET", "/audit", OLIVIA).json()["audit"]
    latest = audrey.get("/pdebug/audit", limit=1).json()
    assert latest["audit"] == everything[-1:]
    assert latest["audit"][0]["outcome"] == "refused"
    assert latest["chain"] == {"ok": True, "rows": 2, "first_bad_seq": None}
    assert audrey.get("/pdebug/audit", limit=50).json()["audit"] == everything
    # an auditor may not read schemas: the service's 403 comes through as it is
    schemas = audrey.get("/pdebug/datasets")
    assert schemas.status_code == 403 and schemas.json()["error"]["code"] == "forbidden"


def test_without_a_service_every_endpoint_says_how_to_configure_one(
        jupyter: dict[str, JupyterServer]) -> None:
    for path, _ in ROUTES:
        r = jupyter["nobody"].get(f"/pdebug/{path}")
        assert r.status_code == 503, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "not_configured"
        assert "PDEBUG_URL" in error["message"] and "PDEBUG_TOKEN" in error["message"]


def test_the_lab_page_loads_the_panel_extension(jupyter: dict[str, JupyterServer]) -> None:
    server = jupyter["alice"]
    page = server.get("/lab")
    assert page.status_code == 200, page.text[:500]
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      page.text, re.S)
    assert found, "no page config on /lab"
    config = json.loads(found.group(1))
    (panel,) = [e for e in config["federated_extensions"] if e["name"] == "pdebug-jupyter"]
    assert panel["extension"] and panel["style"]
    entry = server.get(f"/lab/extensions/pdebug-jupyter/{panel['load']}")
    assert entry.status_code == 200 and "pdebug-jupyter" in entry.text


def test_on_a_hub_the_proxy_uses_the_servers_hub_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PDEBUG_TOKEN", raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-issued-token-with-pdebug-scopes")
    monkeypatch.setenv("PDEBUG_URL", "http://127.0.0.1:9/services/pdebug/api/v1")
    proxy = PdebugProxy()
    assert proxy.token == "hub-issued-token-with-pdebug-scopes" and proxy.configured
    monkeypatch.setenv("PDEBUG_TOKEN", "an-explicit-pdebug-token-0001")
    assert PdebugProxy().token == "an-explicit-pdebug-token-0001"
