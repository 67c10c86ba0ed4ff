"""Binder's scripts in a fresh virtual environment, as repo2docker runs them.

``binder/postBuild`` runs in a copy of the repository's files (no node_modules, no built front
end) with a fresh venv first on PATH: it installs the package, building the front end with
node like any wheel build, and writes the synthetic demo. ``binder/start`` then runs a
session's command with the privacy service up, and the service stops when the command ends.
One venv for the module: the install is the slow part (about two minutes, mostly npm).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]

# a session's command: connect as the kernel would (from PDEBUG_URL/PDEBUG_TOKEN only),
# release a histogram, report, and end with a code of its own
SESSION = """
import json, os
import pdebug_jupyter as pdj
session = pdj.connect(purpose="binder test")
loans = session.dataset("loans")
ages = loans.histogram("age", by="window", epsilon=0.1)
print(json.dumps({"url": os.environ["PDEBUG_URL"], "module": pdj.__file__,
                  "synthetic": loans.schema.get("synthetic"), "cells": len(ages.to_frame()),
                  "spent": loans.budget["spent"]}))
raise SystemExit(7)
"""


@dataclass(frozen=True)
class Binder:
    repo: Path
    venv: Path
    demo: Path
    env: dict[str, str]


def copy_checkout(target: Path) -> None:
    """The files a fresh clone has (tracked, plus new ones not ignored): no build output."""
    git = shutil.which("git")
    assert git, "the Binder test copies the checkout's files with git"
    listed = subprocess.run([git, "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not there
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def binder(tmp_path_factory: pytest.TempPathFactory) -> Binder:
    base = tmp_path_factory.mktemp("binder")
    repo, venv, demo = base / "repo", base / "venv", base / "demo"
    copy_checkout(repo)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PDEBUG_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(venv),
               PDEBUG_DEMO_DIR=str(demo))
    log = base / "postBuild.log"
    with open(log, "wb") as out:
        done = subprocess.run([str(repo / "binder" / "postBuild")], cwd=repo, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=1200)
    assert done.returncode == 0, log.read_text(errors="replace")[-3000:]
    return Binder(repo, venv, demo, env)


def test_post_build_installs_the_package_and_its_front_end_and_writes_the_demo(
        binder: Binder) -> None:
    python = binder.venv / "bin" / "python"
    found = subprocess.run([str(python), "-c", "import pdebug_jupyter; print(pdebug_jupyter"
                            ".__file__)"], cwd=binder.demo, capture_output=True, text=True,
                           check=True).stdout.strip()
    package = Path(found).parent
    assert package.is_relative_to(binder.venv)  # installed, not the source tree
    assert (package / "static" / "widget.js").stat().st_size > 10_000  # built by npm here
    labext = binder.venv / "share" / "jupyter" / "labextensions" / "pdebug-jupyter"
    assert json.loads((labext / "package.json").read_text())["name"] == "pdebug-jupyter"
    assert (binder.demo / "policy.toml").exists() and (binder.demo / "canaries.txt").exists()
    # the tour it writes is the one checked in under examples/
    assert ((binder.demo / "tour.ipynb").read_text(encoding="utf-8")
            == (ROOT / "examples" / "tour.ipynb").read_text(encoding="utf-8"))


def test_start_runs_the_command_with_the_service_and_stops_it_after(binder: Binder) -> None:
    done = subprocess.run([str(binder.repo / "binder" / "start"), "python", "-c", SESSION],
                          cwd=binder.demo, env=binder.env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 7, done.stderr[-3000:]  # the command's own exit code
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["module"]).is_relative_to(binder.venv)
    assert report["synthetic"] is True
    assert report["cells"] > 0 and report["spent"] == pytest.approx(0.1)
    assert "synthetic demo data" in done.stderr
    # the command held the service's stdin alone: with it gone, the service has stopped
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"{report['url']}/health", timeout=2)
        except requests.ConnectionError:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the service at {report['url']} still answers")
