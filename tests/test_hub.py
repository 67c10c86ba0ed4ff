"""The service under a real JupyterHub: hub tokens, custom scopes granted by hub roles, revocation.

A JupyterHub process (with configurable-http-proxy from npm and the dummy authenticator) runs
the service as a managed service; every call goes through the hub's proxy to
``/services/pdebug/api/v1`` with tokens the hub issued.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import policy_copy

from pdebug_jupyter.client import connect
from pdebug_jupyter.client.transport import PdebugError

REPO = Path(__file__).resolve().parent.parent
HISTOGRAM = {"kind": "histogram", "column": "age", "by": "sex", "epsilon": 0.5}

CONFIG = """
import sys
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.ConfigurableHTTPProxy.pid_file = "{dir}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = {{"alice", "bob", "audrey"}}
c.JupyterHub.custom_scopes = {{
    "custom:pdebug:query": {{"description": "spend privacy budget on new releases"}},
    "custom:pdebug:audit": {{"description": "read the pdebug audit log"}},
    "custom:pdebug:admin": {{"description": "everything on pdebug",
                             "subscopes": ["custom:pdebug:query", "custom:pdebug:audit"]}},
}}
c.JupyterHub.services = [
    {{"name": "pdebug", "url": "http://127.0.0.1:{service_port}",
      "command": [sys.executable, "-m", "pdebug_jupyter", "serve", "--hub",
                  "--policy", {policy!r}],
      "environment": {{"PDEBUG_HUB_CACHE_SECONDS": "1", "HOME": {dir!r}}},
      "oauth_no_confirm": True}},
    {{"name": "test-admin", "api_token": {admin_token!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "pdebug-analyst", "users": ["alice"],
      "scopes": ["custom:pdebug:query", "access:services!service=pdebug"]}},
    {{"name": "pdebug-auditor", "users": ["audrey"],
      "scopes": ["custom:pdebug:audit", "access:services!service=pdebug"]}},
    {{"name": "test-admin", "services": ["test-admin"], "scopes": ["admin:users", "tokens"]}},
]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configurable_http_proxy() -> str:
    """$PDEBUG_TEST_CHP, then the repo's node_modules (npm install), then $PATH."""
    for candidate in (os.environ.get("PDEBUG_TEST_CHP"),
                      REPO / "node_modules" / ".bin" / "configurable-http-proxy",
                      shutil.which("configurable-http-proxy")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("configurable-http-proxy not found: `npm install` in the repo (devDependency), "
                "or point $PDEBUG_TEST_CHP at it")


class Hub:
    """A JupyterHub process in its own directory, on free ports, with the service in it."""

    def __init__(self, directory: Path, policy: Path) -> None:
        self.dir = directory
        self.admin_token = secrets.token_hex(32)
        ports = {k: _free_port() for k in ("public_port", "hub_port", "proxy_api_port",
                                           "service_port")}
        self.url = f"http://127.0.0.1:{ports['public_port']}"
        config = directory / "jupyterhub_config.py"
        config.write_text(CONFIG.format(dir=str(directory), chp=configurable_http_proxy(),
                                        proxy_token=secrets.token_hex(32),
                                        password=secrets.token_hex(8), policy=str(policy),
                                        admin_token=self.admin_token, **ports))
        self.log = directory / "jupyterhub.log"
        with open(self.log, "wb") as log:
            # a session of its own: teardown can end the hub's children it might leave behind
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=directory,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail("jupyterhub exited: " + self.log.read_text()[-3000:])
            try:
                if requests.get(self.api("/health"), timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        pytest.fail("the service did not come up behind the hub: " + self.log.read_text()[-3000:])

    def api(self, path: str) -> str:
        return f"{self.url}/services/pdebug/api/v1{path}"

    def hub_api(self, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(method, f"{self.url}/hub/api{path}", json=body, timeout=30,
                             headers={"Authorization": f"token {self.admin_token}"})
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    def token(self, user: str) -> tuple[str, str]:
        """A new hub API token for ``user`` with its role's scopes: (token, id)."""
        made = self.hub_api("POST", f"/users/{user}/tokens", {"note": "test_hub"})
        return made["token"], made["id"]

    def call(self, method: str, path: str, token: str | None, body: Any = None
             ) -> requests.Response:
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.request(method, self.api(path), json=body, headers=headers, timeout=120)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):  # what of ours the hub left behind
                os.killpg(self.process.pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def hub(loans: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    directory = tmp_path_factory.mktemp("hub")
    running = Hub(directory, policy_copy(loans, directory))
    yield running
    running.stop()


def test_query_scope_gets_a_release_charged_to_the_hub_user(hub: Hub) -> None:
    token, _ = hub.token("alice")
    me = hub.call("GET", "/me", token).json()
    assert me["user"] == "alice" and me["role"] == "analyst"
    r = hub.call("POST", "/datasets/loans/query", token, HISTOGRAM)
    assert r.status_code == 200, r.text
    release = r.json()
    assert release["provenance"]["user"] == "alice"
    assert release["mechanism"].startswith("two-sided geometric")
    budget = hub.call("GET", "/budget", token).json()
    assert budget["user"] == "alice"
    assert budget["datasets"]["loans"]["spent"] == pytest.approx(0.5)
    # a second token of the same hub user draws on the same budget: it is keyed by name
    other, _ = hub.token("alice")
    assert hub.call("GET", "/budget", other).json()["datasets"]["loans"]["spent"] \
        == pytest.approx(0.5)


def test_a_user_without_the_scope_is_forbidden_and_spends_nothing(hub: Hub) -> None:
    token, _ = hub.token("bob")
    me = hub.call("GET", "/me", token).json()
    assert me == {"user": "bob", "role": "", "permissions": []}
    for method, path, body in (("POST", "/datasets/loans/query", HISTOGRAM),
                               ("POST", "/datasets/loans/cost", HISTOGRAM),
                               ("GET", "/datasets", None), ("GET", "/budget", None),
                               ("GET", "/releases", None), ("GET", "/audit", None)):
        r = hub.call(method, path, token, body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    auditor, _ = hub.token("audrey")
    rows = hub.call("GET", "/audit", auditor, None).json()["audit"]
    assert not [row for row in rows if row["user"] == "bob"]


def test_the_audit_scope_reads_the_audit_log_but_cannot_query(hub: Hub) -> None:
    analyst, _ = hub.token("alice")
    assert hub.call("POST", "/datasets/loans/query", analyst, HISTOGRAM).status_code == 200
    token, _ = hub.token("audrey")
    assert hub.call("GET", "/me", token).json()["role"] == "auditor"
    r = hub.call("GET", "/audit", token)
    assert r.status_code == 200, r.text
    assert any(row["user"] == "alice" and row["outcome"] in ("released", "cached")
               for row in r.json()["audit"])
    assert hub.call("GET", "/audit/verify", token).json()["ok"] is True
    refused = hub.call("POST", "/datasets/loans/query", token, HISTOGRAM)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


def test_a_revoked_token_gets_401(hub: Hub) -> None:
    token, token_id = hub.token("alice")
    assert hub.call("GET", "/budget", token).status_code == 200
    hub.hub_api("DELETE", f"/users/alice/tokens/{token_id}")
    # the service trusts the hub's answer for $PDEBUG_HUB_CACHE_SECONDS (1 s here)
    deadline = time.monotonic() + 15
    while (status := hub.call("GET", "/budget", token).status_code) == 200 \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 401
    r = hub.call("POST", "/datasets/loans/query", token, HISTOGRAM)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert hub.call("GET", "/budget", "not-a-hub-token").status_code == 401
    assert hub.call("GET", "/budget", None).status_code == 401


def test_the_kernel_client_uses_the_hub_token_from_its_environment(
        hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    token, _ = hub.token("alice")
    # what a single-user server's kernel sees: the hub's token, and PDEBUG_URL from the
    # admin's c.Spawner.environment
    monkeypatch.delenv("PDEBUG_TOKEN", raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    monkeypatch.setenv("PDEBUG_URL", hub.api(""))
    with connect(purpose="test_hub: the kernel side") as session:
        assert session.me["user"] == "alice"
        release = session.dataset("loans").histogram("age", by="sex", epsilon=0.5)
        assert release.provenance["user"] == "alice"
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "revoked-or-wrong")
    with pytest.raises(PdebugError) as refused:
        connect()
    assert refused.value.status == 401


def _model(*scopes: str, kind: str = "user", name: str = "carol") -> dict[str, Any]:
    return {"kind": kind, "name": name, "scopes": list(scopes)}


def test_scopes_map_to_roles_and_filtered_or_unaccessed_grants_grant_nothing(
        loans: Any, tmp_path: Path) -> None:
    from pdebug_jupyter.policy import load_policy
    from pdebug_jupyter.service.hub import HubAuthenticator, HubEnvironment

    env = HubEnvironment.from_environ({
        "JUPYTERHUB_API_TOKEN": "x" * 32, "JUPYTERHUB_SERVICE_NAME": "pdebug",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:services", "access:services!service=pdebug"]'})
    assert env.prefix == "/services/pdebug/" and env.cache_seconds == 60
    auth = HubAuthenticator(load_policy(policy_copy(loans, tmp_path), require_tokens=False), env)
    access = "access:services!service=pdebug"
    cases = {
        ("custom:pdebug:query", access): "analyst",
        ("custom:pdebug:query", "custom:pdebug:audit", access): "analyst+auditor",
        ("custom:pdebug:admin", "custom:pdebug:audit", access): "owner",
        ("custom:pdebug:audit", "access:services"): "auditor",  # access to every service
        ("custom:pdebug:query",): "",  # no access to this service
        ("custom:pdebug:query", "access:services!service=grades"): "",
        ("custom:pdebug:query!user=carol", access): "",  # filtered: means nothing here
        ("custom:grades:read", access): "",
    }
    for scopes, role in cases.items():
        assert auth.identity_of(_model(*scopes)).role == role, scopes
    assert auth.identity_of(_model("custom:pdebug:query", access)).permissions \
        == {"read_schema", "query", "read_budget", "read_releases"}
    assert auth.identity_of(_model(access)).permissions == frozenset()
    # a hub service is never mistaken for the user of the same name
    assert auth.identity_of(_model("custom:pdebug:query", access, kind="service")).name \
        == "service:carol"


def test_the_example_hub_config_declares_what_the_service_checks() -> None:
    from traitlets.config import PyFileConfigLoader

    from pdebug_jupyter.service.hub import SCOPE_ROLES

    path = REPO / "examples" / "jupyterhub_config.py"
    c = PyFileConfigLoader(path.name, str(path.parent)).load_config()
    assert set(c.JupyterHub.custom_scopes) == set(SCOPE_ROLES)
    (service,) = c.JupyterHub.services
    assert service["name"] == "pdebug" and service["command"][1:4] == ["serve", "--hub", "--policy"]
    assert service["user"] == "pdebug"  # its own OS user: the data is readable only by it
    for role in c.JupyterHub.load_roles:  # each role lets its holders reach the service
        assert "access:services!service=pdebug" in role["scopes"], role
    assert c.Spawner.environment["PDEBUG_URL"] == \
        service["url"] + "/services/pdebug/api/v1"
    assert {"custom:pdebug:query", "access:services!service=pdebug"} \
        <= set(c.Spawner.server_token_scopes)


def test_a_hub_that_cannot_be_reached_is_a_503_not_a_login_failure(
        loans: Any, tmp_path: Path) -> None:
    from pdebug_jupyter.policy import load_policy
    from pdebug_jupyter.service.app import ApiError
    from pdebug_jupyter.service.hub import HubAuthenticator, HubEnvironment

    env = HubEnvironment.from_environ({
        "JUPYTERHUB_API_TOKEN": "x" * 32, "PDEBUG_HUB_CACHE_SECONDS": "0",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{_free_port()}/hub/api"})
    assert "x" * 32 not in repr(env)
    auth = HubAuthenticator(load_policy(policy_copy(loans, tmp_path), require_tokens=False), env)
    assert auth.identify(None) is None and auth.identify("Basic dXNlcjpwYXNz") is None
    with pytest.raises(ApiError) as down:
        auth.identify("token some-hub-token")
    assert down.value.status == 503 and down.value.code == "hub_unavailable"
    with pytest.raises(SystemExit, match="JUPYTERHUB_API_TOKEN"):
        HubEnvironment.from_environ({})
