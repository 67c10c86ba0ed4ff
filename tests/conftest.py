"""Shared fixtures: synthetic data from the project's generator and real service processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pdebug_jupyter.client.local import _readline
from pdebug_jupyter.synth import make_loans

TOKENS = {
    "PDEBUG_TOKEN_ALICE": "alice-secret-token-0001",
    "PDEBUG_TOKEN_OLIVIA": "olivia-secret-token-0002",
    "PDEBUG_TOKEN_VICTOR": "victor-secret-token-0003",
    "PDEBUG_TOKEN_AUDREY": "audrey-secret-token-0004",
}
ALICE, OLIVIA, VICTOR, AUDREY = TOKENS.values()


@pytest.fixture(autouse=True, scope="session")
def _tokens() -> Iterator[None]:
    old = {k: os.environ.get(k) for k in TOKENS}
    os.environ.update(TOKENS)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class ServiceProcess:
    """``pdebug-jupyter serve`` as a real child process on a free loopback port."""

    def __init__(self, policy: Path) -> None:
        self.policy = policy
        self.log = policy.parent / "service.log"
        self.start()

    def start(self, port: int = 0) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pdebug_jupyter", "serve", "--policy", str(self.policy),
                 "--port", str(port)], stdout=subprocess.PIPE, stderr=log,
                env={**os.environ, **TOKENS})
        assert self.process.stdout is not None
        line = _readline(self.process.stdout, 120)
        assert line, self.log.read_text()
        self.url = json.loads(line)["url"]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code

    def call(self, method: str, path: str, token: str | None = ALICE, body: Any = None,
             data: bytes | None = None, purpose: str | None = None) -> requests.Response:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"token {token}"
        if purpose:
            headers["X-Pdebug-Purpose"] = purpose
        return requests.request(method, self.url + path, json=body, data=data,
                                headers=headers, timeout=120)

    def query(self, body: Any, token: str = ALICE, dataset: str = "loans") -> requests.Response:
        return self.call("POST", f"/datasets/{dataset}/query", token, body=body)

    def spent(self, token: str = ALICE, dataset: str = "loans") -> float:
        r = self.call("GET", "/budget", token)
        assert r.status_code == 200, r.text
        return float(r.json()["datasets"][dataset]["spent"])


@pytest.fixture(scope="session")
def loans(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """20,000 synthetic loans with planted problems, written once per test session."""
    return make_loans(20_000, seed=11, path=tmp_path_factory.mktemp("loans"))


def policy_copy(loans: Any, directory: Path, **replace: Any) -> Path:
    """A copy of the generated policy in ``directory`` (own ledger), with settings replaced."""
    text = loans.policy.read_text()
    text = text.replace(f'source = "{loans.data.name}"', f'source = "{loans.data}"')
    for key, value in replace.items():
        lines = [f"{key} = {value}" if ln.split("=")[0].strip() == key else ln
                 for ln in text.splitlines()]
        text = "\n".join(lines) + "\n"
    path = directory / "policy.toml"
    path.write_text(text)
    return path


@pytest.fixture
def service(loans: Any, tmp_path: Path) -> Iterator[ServiceProcess]:
    """A fresh service with its own ledger (budget 5 per user, 20 in all)."""
    svc = ServiceProcess(policy_copy(loans, tmp_path))
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def shared_service(loans: Any, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[ServiceProcess]:
    """One service for tests that spend little and do not count the ledger exactly."""
    svc = ServiceProcess(policy_copy(loans, tmp_path_factory.mktemp("shared"),
                                     epsilon_per_user=1000.0, epsilon_total=4000.0))
    yield svc
    svc.stop()
