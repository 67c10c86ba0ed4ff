"""The demo's tour notebook runs end to end against a local service on synthetic data."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

from pdebug_jupyter.cli import main
from pdebug_jupyter.demo import TOUR_EPSILON, TOUR_RELEASES, WIDGET_EPSILON, prepare
from pdebug_jupyter.policy import load_policy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tour.ipynb"


def test_tour_notebook_runs_spends_what_it_says_and_shows_no_canary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = prepare(tmp_path, rows=5_000, seed=3)
    monkeypatch.setenv("PDEBUG_POLICY", str(policy))
    monkeypatch.delenv("PDEBUG_URL", raising=False)
    # as the demo does for JupyterLab: the tour's `!pdebug-jupyter` is this environment's
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    nb = nbformat.read(tmp_path / "tour.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    # nbclient raised on any exception; a newcomer's tour shows no warning either
    stderr = [o for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, stderr

    def shown(code: str) -> str:
        cell = next(c for c in nb.cells if c.cell_type == "code" and code in c.source)
        return "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "")
                       for o in cell.outputs)

    # the repeated release came back cached and identical
    assert shown("again.cached").startswith("(True,\n True,")
    assert "ece_low" in shown("cal.by_group()") and "female" in shown("cal.by_group()")
    assert "demographic_parity_difference" in shown("fair.gaps(0.5)")
    assert "wasserstein" in shown("drift.table")
    assert "q_value" in shown("cohorts.weakest()")
    assert shown("loans.synthetic").startswith("SYNTHETIC TWIN of 'loans'")
    assert "mean_twin_tvd" in shown("fidelity_summary")
    assert "0 finding(s) in 1 notebook(s)" in shown("pdebug-jupyter scan")
    canaries = [c for c in (tmp_path / "canaries.txt").read_text().splitlines() if c]
    assert canaries and not [c for c in canaries if c in outputs]

    # Run All spends exactly what the tour says, once per release, and leaves room to click
    # Run on each of the four explorers within the demo policy's per-user budget
    with sqlite3.connect(tmp_path / "ledger.sqlite") as ledger:
        spent, charges = ledger.execute("SELECT sum(epsilon), count(*) FROM charges").fetchone()
    assert charges == TOUR_RELEASES and spent == pytest.approx(TOUR_EPSILON)
    explorers = [c for c in nb.cells if "Explorer(loans" in c.source]
    assert len(explorers) == 4
    assert all(f"epsilon={WIDGET_EPSILON}" in c.source for c in explorers)
    per_user = load_policy(policy, require_tokens=False).datasets["loans"].epsilon_per_user
    with_every_widget = TOUR_EPSILON + 4 * WIDGET_EPSILON
    assert with_every_widget <= per_user / 1.5  # and a third of it left to explore


def test_examples_tour_is_the_generated_tour(tmp_path: Path) -> None:
    """examples/tour.ipynb is a copy of demo.TOUR; after editing the tour, regenerate it with
    `pdebug-jupyter demo --write-tour examples/tour.ipynb`."""
    assert main(["demo", "--write-tour", str(tmp_path / "tour.ipynb")]) == 0
    fresh = (tmp_path / "tour.ipynb").read_text(encoding="utf-8")
    assert EXAMPLE.read_text(encoding="utf-8") == fresh, "examples/tour.ipynb is out of date"
    nbformat.validate(nbformat.reads(fresh, as_version=4))


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
