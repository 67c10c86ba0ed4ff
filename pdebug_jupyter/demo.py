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

# Every epsilon the tour spends when all its cells run (each release once; the rest is free).
# Clicking Run on each of the four explorers spends WIDGET_EPSILON more; both must fit in the
# demo policy's per-user budget (5.0) with room to spare: a test checks it against the ledger.
WIDGET_EPSILON = 0.2
TOUR_EPSILON = 0.2 + 4 * 0.3 + 0.5  # histogram, four analyses, the twin's marginals
TOUR_RELEASES = 6

TOUR = [
    ("markdown", "# pdebug-jupyter tour\n\n**Synthetic data.** This demo runs on generated "
     "loans with planted model problems; no real person is in it.\n\nThe kernel never sees a "
     "row: a separate service process holds the data and answers only differentially private "
     "aggregates, charged to your budget and written to an audit log.\n\nRun the cells from "
     "the top. Each release states the epsilon (ε) it spends; everything computed from a "
     "release afterwards (metrics, intervals, charts, other thresholds) is free."),
    ("markdown", "## Connect\n\n`pdj.connect()` finds the service from `PDEBUG_URL` and "
     "`PDEBUG_TOKEN` (set by `pdebug-jupyter demo`, by Binder, or by JupyterHub). The purpose "
     "is recorded with every release and audit row."),
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
    ("markdown", "Every release says where it came from: the dataset version, the policy, "
     "the mechanism and who asked, for what purpose."),
    ("code", "ages.provenance"),
    ("markdown", "## Calibration\n\nDoes a score of 0.3 mean a 30% chance of default, for "
     "women and men alike? One release holds noisy counts, positives and score sums per "
     "(score bin, group); the expected calibration error (ECE), its interval (DP noise and "
     "sampling) and the reliability diagram are computed from it in the kernel."),
    ("code", 'cal = loans.calibration(by="sex", epsilon=0.3)\ncal.ece, cal.ece_ci'),
    ("markdown", "Per group, with intervals. `significant` is true only when the interval's "
     "lower end clears the threshold; an `other` group holds values outside the declared "
     "categories and is released (noisy) rather than dropped."),
    ("code", "cal.by_group()"),
    ("code", "cal.chart()"),
    ("markdown", "## Fairness\n\nA `confusion` release is a (score bin x label x group) "
     "cube. Confusion matrices, selection rates, TPR and FPR at any threshold on a bin edge "
     "come from it for free."),
    ("code", 'fair = loans.confusion(by="sex", epsilon=0.3)\nfair.at(0.5)'),
    ("code", "fair.demographic_parity_difference(0.5)"),
    ("markdown", "The gaps with intervals, fairlearn's definitions. Try another threshold: "
     "`fair.gaps(0.3)` asks nothing of the service."),
    ("code", "fair.gaps(0.5)"),
    ("markdown", "## Drift\n\nWithout arguments, `drift` compares the policy's split column's "
     "two windows (here `reference` and `current`) over every feature's declared bins."),
    ("code", "drift = loans.drift(epsilon=0.3)\ndrift.table"),
    ("markdown", "## Error cohorts\n\nError counts over every combination of the features "
     "(prediction: score >= 0.5). `weakest()` ranks cohorts by error rate, with a "
     "multiple-testing correction (`q_value`) before anything is called significant; cohorts "
     "below the minimum size are suppressed, on their noisy count."),
    ("code", 'cohorts = loans.cohort_errors(["sex", "region"], epsilon=0.3)\n'
     "cohorts.weakest()"),
    ("markdown", "## Budget\n\nEvery release was charged once to your budget for this "
     "dataset; cached repeats cost nothing. The budget survives restarts: a new session does "
     "not reset it. The Privacy panel in JupyterLab's left side bar shows the same, with the "
     "releases and the audit log."),
    ("code", "loans.budget"),
    ("markdown", "## Synthetic twin\n\nFor code that needs rows (a pandas groupby, a plot "
     "you have not written yet), sample a twin from one release of noisy one- and two-way "
     "marginals. The release is charged once; sampling and everything you do with the twin "
     "are free. It is marked synthetic wherever it is shown.\n\nThe kernel guard that "
     "`connect()` turned on still hides a frame holding a protected or identifier column, "
     "synthetic or not (try `twin.head()`), so look at the others:"),
    ("code", 'twin = loans.synthetic(5000, 0.5)\ntwin.drop(columns=["sex"]).head()'),
    ("markdown", "How close is it? Total variation distance to the released tables: the "
     "twin's (`mean_twin_tvd`), a twin with independent columns (`mean_one_way_tvd`), and "
     "the noise alone (`mean_noise_tvd`, as close as any twin could look). All free."),
    ("code", "twin.release.fidelity_summary()"),
    ("markdown", "The twin is ordinary pandas: write the analysis you would have written on "
     "the real table. Confirm what you find with a release (the confusion cube above has the "
     "real default rates), since the twin keeps only what its marginals held."),
    ("code", 'twin.groupby("sex")["default"].mean()'),
    ("markdown", "## Explore with widgets\n\nEach explorer fills its pickers from the public "
     "schema and shows what a release would cost before anything is spent; it releases only "
     "when you click **Run**. Charts show intervals for the DP noise and sampling, and cells "
     "suppressed below the minimum cohort size, with the reason. The budget meter follows "
     "every run."),
    ("code", "pdj.widgets.BudgetMeter(session)"),
    ("code", f"pdj.widgets.CalibrationExplorer(loans, epsilon={WIDGET_EPSILON})"),
    ("markdown", "The fairness threshold slider and the metric switch are computed in your "
     "browser from the one released cube: moving them sends nothing to the service and costs "
     "nothing. The threshold you settle on comes back to the kernel: "
     "`fairness.result.at(fairness.threshold)` is the table you are looking at."),
    ("code", f"fairness = pdj.widgets.FairnessExplorer(loans, epsilon={WIDGET_EPSILON})\n"
     "fairness"),
    ("code", f"pdj.widgets.DriftExplorer(loans, epsilon={WIDGET_EPSILON})"),
    ("code", f'pdj.widgets.CohortExplorer(loans, epsilon={WIDGET_EPSILON}, '
     'features=["sex", "region"])'),
    ("markdown", "## Scanner\n\nBefore you share a notebook, save it and scan it. "
     "`pdebug-jupyter scan` looks through the saved outputs, output metadata and widget "
     "state for tables of raw rows, personal data (the guard's patterns) and, with "
     "`--canaries FILE`, values that must never appear; `--fix` strips what it finds."),
    ("code", "!pdebug-jupyter scan tour.ipynb"),
]


def tour_notebook() -> dict[str, object]:
    cells = []
    for i, (kind, source) in enumerate(TOUR):
        # source as a list of lines, the way Jupyter saves it: examples/tour.ipynb diffs well
        cell: dict[str, object] = {"cell_type": kind, "id": f"tour-{i}", "metadata": {},
                                   "source": source.splitlines(keepends=True)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {"nbformat": 4, "nbformat_minor": 5, "cells": cells, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}


def write_tour(path: Path) -> Path:
    """Write the tour notebook (outputs empty) to ``path``: ``examples/tour.ipynb`` is made
    this way, by ``pdebug-jupyter demo --write-tour examples/tour.ipynb``."""
    path.write_text(json.dumps(tour_notebook(), indent=1, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return path


def prepare(directory: Path, rows: int = 50_000, seed: int = 0) -> Path:
    """Write the demo data, policy and tour notebook if missing; returns the policy path."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "policy.toml"
    if not policy.exists():
        make_loans(rows, seed, directory)
    notebook = directory / "tour.ipynb"
    if not notebook.exists():
        write_tour(notebook)
    return policy


def exec_with_service(directory: Path, command: list[str]) -> None:
    """Start the privacy service on the demo data and replace this process with ``command``,
    ``PDEBUG_URL`` and ``PDEBUG_TOKEN`` in its environment (Binder's ``start``).

    ``command`` inherits the write end of the service's stdin and nothing else holds it, so
    the service stops when ``command`` and all it left running have exited: no wrapper
    process has to outlive it and nothing is left behind at the end of a session.
    """
    if not command:
        raise SystemExit("pdebug-jupyter demo --exec needs a command to run")
    service = LocalService(prepare(directory))
    assert service.process.stdin is not None
    os.set_inheritable(service.process.stdin.fileno(), True)
    os.environ.update(PDEBUG_URL=service.url, PDEBUG_TOKEN=service.token,
                      PATH=_with_our_scripts(os.environ.get("PATH", "")))
    os.environ.pop("PDEBUG_POLICY", None)
    print(f"pdebug-jupyter: privacy service at {service.url} (synthetic demo data in "
          f"{directory}; log {service.log_path})", file=sys.stderr, flush=True)
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)  # noqa: S606 (the caller's own command, as given)
    except OSError as exc:  # the service stops with this process
        raise SystemExit(f"pdebug-jupyter: cannot run {command[0]}: {exc.strerror}") from None


def _with_our_scripts(path: str) -> str:
    """``PATH`` with this environment's scripts first, so the tour's ``!pdebug-jupyter scan``
    finds the command even when the venv was never activated (``make demo``)."""
    scripts = os.path.dirname(sys.executable)
    return os.pathsep.join([scripts, *[p for p in path.split(os.pathsep) if p != scripts]])


def run(directory: Path, *, port: int = 8888, browser: bool = True) -> int:
    policy = prepare(directory)
    service = LocalService(policy)  # stops with this process
    env = {**os.environ, "PDEBUG_URL": service.url, "PDEBUG_TOKEN": service.token,
           "PATH": _with_our_scripts(os.environ.get("PATH", ""))}
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
