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
