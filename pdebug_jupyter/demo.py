"""``pdebug-jupyter demo``: synthetic loans, a policy, and JupyterLab on the tour notebook.

The demo starts one local privacy service and hands its address and a fresh token to
JupyterLab through ``PDEBUG_URL`` and ``PDEBUG_TOKEN``: every kernel's ``pdj.connect()`` and
the Privacy panel (through the server extension) then talk to the same service, budget and
audit log, the way they would on a hub.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .client.local import LocalService
from .synth import make_loans

TOUR = [
    ("markdown", "# pdebug-jupyter tour\n\n**Synthetic data.** This demo runs on generated "
     "loans with planted model problems; no real person is in it.\n\nThe kernel never sees a "
     "row: a separate service process holds the data and answers only differentially private "
     "aggregates, charged to your budget and written to an audit log."),
    ("code", 'import pdebug_jupyter as pdj\n\nsession = pdj.connect(purpose="demo tour")\n'
     'loans = session.dataset("loans")\nsession'),
    ("markdown", "The schema is public metadata from the policy: kinds, domains and bounds. "
     "Identifier columns are listed but can never be queried."),
    ("code", '[(c["name"], c["kind"]) for c in loans.schema["columns"]]'),
    ("markdown", "Before spending, ask what a release costs and how noisy it will be."),
    ("code", 'loans.cost("histogram", column="age", by="window", epsilon=0.2)'),
    ("code", 'ages = loans.histogram("age", by="window", epsilon=0.2)\nages.to_frame()'),
    ("markdown", "Asking again is free: the same release comes back from the cache, so "
     "repeating a query cannot average the noise away."),
    ("code", 'again = loans.histogram("age", by="window", epsilon=0.2)\n'
     'again.cached, again.release_id == ages.release_id, loans.budget'),
    ("code", "ages.provenance"),
    ("markdown", "## Explore with widgets\n\nEach explorer fills its pickers from the public "
     "schema and shows what a release would cost before anything is spent; it releases only "
     "when you click **Run**. Charts show intervals for the DP noise and sampling, and cells "
     "suppressed below the minimum cohort size, with the reason. The budget meter follows "
     "every run."),
    ("code", "pdj.widgets.BudgetMeter(session)"),
    ("code", "pdj.widgets.CalibrationExplorer(loans, epsilon=0.2)"),
    ("markdown", "The fairness threshold slider and the metric switch are computed in your "
     "browser from the one released cube: moving them sends nothing to the service and costs "
     "nothing. The threshold you settle on comes back to the kernel: "
     "`fairness.result.at(fairness.threshold)` is the table you are looking at."),
    ("code", "fairness = pdj.widgets.FairnessExplorer(loans, epsilon=0.2)\nfairness"),
    ("code", "pdj.widgets.DriftExplorer(loans, epsilon=0.2)"),
    ("code", 'pdj.widgets.CohortExplorer(loans, epsilon=0.2, features=["sex", "region"])'),
]


def tour_notebook() -> dict[str, object]:
    cells = []
    for i, (kind, source) in enumerate(TOUR):
        cell: dict[str, object] = {"cell_type": kind, "id": f"tour-{i}", "metadata": {},
                                   "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {"nbformat": 4, "nbformat_minor": 5, "cells": cells, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}


def prepare(directory: Path, rows: int = 50_000, seed: int = 0) -> Path:
    """Write the demo data, policy and tour notebook if missing; returns the policy path."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "policy.toml"
    if not policy.exists():
        make_loans(rows, seed, directory)
    notebook = directory / "tour.ipynb"
    if not notebook.exists():
        notebook.write_text(json.dumps(tour_notebook(), indent=1))
    return policy


def run(directory: Path, *, port: int = 8888, browser: bool = True) -> int:
    policy = prepare(directory)
    service = LocalService(policy)  # stops with this process
    env = {**os.environ, "PDEBUG_URL": service.url, "PDEBUG_TOKEN": service.token}
    env.pop("PDEBUG_POLICY", None)
    print(f"pdebug-jupyter: privacy service at {service.url} (log {service.log_path})",
          flush=True)
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={directory}", f"--port={port}",
           "--ServerApp.default_url=/lab/tree/tour.ipynb"]
    if not browser:
        cmd.append("--no-browser")
    if os.geteuid() == 0:  # containers and CI run as root; JupyterLab refuses it otherwise
        cmd.append("--allow-root")
    lab = subprocess.Popen(cmd, env=env)
    # SIGTERM (a test, a container stop) ends JupyterLab and the service with us
    signal.signal(signal.SIGTERM, lambda *_: lab.terminate())
    try:
        return lab.wait()
    except KeyboardInterrupt:
        lab.terminate()
        lab.wait(timeout=30)
        return 0
    finally:
        service.stop()
