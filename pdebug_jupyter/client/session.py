"""Sessions and datasets: ``connect()`` and the typed query methods."""

from __future__ import annotations

import json
import os
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO, Any

from .release import Release
from .transport import PdebugError, Transport

START_TIMEOUT = 120.0


class LocalService:
    """A service child process on a free loopback port with a fresh random token.

    It prevents accidents rather than a determined local user (same OS user): the service,
    not the kernel, holds the data and the ledger. The child exits when this process closes
    its stdin, so a crashed kernel does not leave it behind.
    """

    def __init__(self, policy: str | os.PathLike[str]) -> None:
        self.token = secrets.token_urlsafe(32)
        self.log_path = Path(tempfile.mkstemp(prefix="pdebug-service-", suffix=".log")[1])
        env = {**os.environ, "PDEBUG_LOCAL_TOKEN": self.token}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pdebug_jupyter", "serve", "--policy", str(policy),
                 "--host", "127.0.0.1", "--port", "0", "--local"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
        self.url = self._wait_ready()
        self._finalizer = weakref.finalize(self, _stop, self.process)

    def _wait_ready(self) -> str:
        assert self.process.stdout is not None
        line = _readline(self.process.stdout, START_TIMEOUT)
        if line:
            try:
                return str(json.loads(line)["url"])
            except (ValueError, KeyError):
                pass
        _stop(self.process)
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise PdebugError("service_failed", "the local privacy service did not start: "
                          + (" | ".join(tail) or "no output"))

    def stop(self) -> None:
        self._finalizer()


def _readline(stream: IO[bytes], timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    deadline, buf = time.monotonic() + timeout, b""
    while not buf.endswith(b"\n") and time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
    sel.close()
    return buf.decode(errors="replace").strip()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


class Session:
    """A connection to the privacy service on behalf of one user and one purpose."""

    def __init__(self, transport: Transport, local: LocalService | None = None) -> None:
        self._transport = transport
        self._local = local
        self.url = transport.url

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        return self._transport.request(method, path, body, params)

    @property
    def me(self) -> dict[str, Any]:
        return dict(self.request("GET", "/me"))

    def datasets(self) -> list[str]:
        return [d["name"] for d in self.request("GET", "/datasets")["datasets"]]

    def dataset(self, name: str) -> Dataset:
        return Dataset(self, name)

    def budget(self) -> dict[str, Any]:
        return dict(self.request("GET", "/budget")["datasets"])

    def releases(self, dataset: str | None = None) -> list[dict[str, Any]]:
        params = {"dataset": dataset} if dataset else None
        return list(self.request("GET", "/releases", params=params)["releases"])

    def release(self, release_id: str) -> Release:
        """A release made earlier (by anyone), read from the service at no cost."""
        return Release(self.request("GET", f"/releases/{release_id}"))

    def close(self) -> None:
        self._transport.close()
        if self._local is not None:
            self._local.stop()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "local service" if self._local else "service"
        return f"<Session {kind} {self.url}>"


class Dataset:
    """One dataset on the service. Methods that take ``epsilon`` spend budget, once."""

    def __init__(self, session: Session, name: str) -> None:
        self.session, self.name = session, name
        self._schema: dict[str, Any] | None = None

    @property
    def schema(self) -> dict[str, Any]:
        """Public metadata: column kinds, domains and bounds from the policy."""
        if self._schema is None:
            self._schema = dict(self.session.request("GET", f"/datasets/{self.name}"))
        return {k: v for k, v in self._schema.items() if k != "budget"}

    @property
    def budget(self) -> dict[str, Any]:
        return dict(self.session.request("GET", f"/datasets/{self.name}")["budget"])

    def query(self, kind: str, *, epsilon: float, **params: Any) -> Release:
        body = {"kind": kind, "epsilon": epsilon, **_drop_none(params)}
        return Release(self.session.request("POST", f"/datasets/{self.name}/query", body))

    def cost(self, kind: str, *, epsilon: float, **params: Any) -> dict[str, Any]:
        """What the query would cost now (zero if cached) and its expected noise; free."""
        body = {"kind": kind, "epsilon": epsilon, **_drop_none(params)}
        return dict(self.session.request("POST", f"/datasets/{self.name}/cost", body))

    def histogram(self, column: str, *, by: str | list[str] | None = None,
                  where: dict[str, Any] | None = None, bins: int | None = None,
                  epsilon: float) -> Release:
        """Noisy counts of ``column`` (over its policy bins or categories) by groups."""
        return self.query("histogram", epsilon=epsilon, column=column, by=by, where=where,
                          bins=bins)

    def __repr__(self) -> str:
        return f"<Dataset {self.name!r} at {self.session.url}>"


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def connect(url: str | None = None, *, token: str | None = None,
            policy: str | os.PathLike[str] | None = None, purpose: str | None = None) -> Session:
    """Connect to a privacy service.

    With ``url`` and ``token`` (or ``PDEBUG_URL`` and ``PDEBUG_TOKEN`` in the environment)
    it connects to a running service. With a ``policy`` file (or ``PDEBUG_POLICY``) and no
    url it starts a local service child process on a free loopback port with a fresh random
    token, stopped when the session closes. ``purpose`` is recorded with every release and
    audit row.
    """
    url = url or os.environ.get("PDEBUG_URL")
    if url:
        token = token or os.environ.get("PDEBUG_TOKEN")
        if not token:
            raise PdebugError("no_token", "a token is needed: pass token= or set PDEBUG_TOKEN")
        session = Session(Transport(url, token, purpose))
    else:
        policy = policy or os.environ.get("PDEBUG_POLICY")
        if not policy:
            raise PdebugError("no_service", "nothing to connect to: pass url= and token=, set "
                              "PDEBUG_URL and PDEBUG_TOKEN, or pass policy= for a local service")
        local = LocalService(policy)
        session = Session(Transport(local.url, local.token, purpose), local)
    session.request("GET", "/me")  # fail now, with a clear error, if the token is wrong
    return session
