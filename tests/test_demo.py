"""The demo's tour notebook runs end to end against a local service on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
import pytest

from pdebug_jupyter.demo import prepare


def test_tour_notebook_runs_and_shows_no_canary(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    policy = prepare(tmp_path, rows=5_000, seed=3)
    monkeypatch.setenv("PDEBUG_POLICY", str(policy))
    nb = nbformat.read(tmp_path / "tour.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "Error" not in outputs
    repeat = next(c for c in nb.cells if "again.cached" in c.source)
    # the repeated release came back cached and identical
    assert repeat.outputs[0]["data"]["text/plain"].startswith("(True,\n True,")
    canaries = [c for c in (tmp_path / "canaries.txt").read_text().splitlines() if c]
    assert canaries and not [c for c in canaries if c in outputs]


def test_demo_command_serves_jupyterlab_on_the_tour(tmp_path: Path) -> None:
    import re
    import socket
    import subprocess
    import sys
    import time

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pdebug_jupyter", "demo", "--no-browser",
                                 "--port", str(port), "--dir", str(tmp_path / "demo")],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        token = None
        deadline = time.monotonic() + 120
        while token is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(rf"127\.0\.0\.1:{port}/lab\S*token=([0-9a-f]+)", log.read_text())
            token = found.group(1) if found else None
            time.sleep(0.5)
        assert token, log.read_text()[-2000:]
        page = requests.get(f"http://127.0.0.1:{port}/lab/tree/tour.ipynb",
                            params={"token": token}, timeout=30)
        assert page.status_code == 200 and "JupyterLab" in page.text
        assert (tmp_path / "demo" / "policy.toml").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
