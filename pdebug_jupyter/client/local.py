"""A local privacy service: a child process of the kernel, on loopback."""

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
from typing import IO

from .transport import PdebugError

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
