"""End to end in a real browser: ``pdebug-jupyter demo`` (JupyterLab + the local service on
synthetic loans) driven by Playwright in Debian's chromium.

Run all cells of the tour, click Run in each explorer, move the fairness slider (nothing
new in the ledger), read the budget off the Privacy panel, save, and look for canaries in
the DOM, the widget state and the saved notebook. Screenshots of each widget are kept in
``tests/artifacts/`` (or ``$PDEBUG_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Locator, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from pdebug_jupyter.demo import TOUR_EPSILON, TOUR_RELEASES, WIDGET_EPSILON

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
ARTIFACTS = Path(os.environ.get("PDEBUG_ARTIFACTS", Path(__file__).parent / "artifacts"))
TOKEN = "browser-test-jupyter-token-0001"
EXPLORERS = ("calibration", "fairness", "drift", "cohorts")
SPENT = TOUR_EPSILON + len(EXPLORERS) * WIDGET_EPSILON  # run all cells, then Run in each


@dataclass
class Lab:
    url: str
    directory: Path
    log: Path

    def ledger(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.directory / "ledger.sqlite") as db:
            return db.execute(sql).fetchall()

    def releases(self) -> int:
        return int(self.ledger("SELECT count(*) FROM releases")[0][0])

    def spent(self) -> float:
        return float(self.ledger("SELECT coalesce(sum(epsilon), 0) FROM charges")[0][0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def start_lab(root: Path) -> Iterator[Lab]:
    """``pdebug-jupyter demo`` in ``root / "demo"`` (data made there first is kept), with
    widget state saved into notebooks and no news pop-up."""
    settings = root / "settings" / "@jupyter-widgets" / "jupyterlab-manager"
    settings.mkdir(parents=True, exist_ok=True)
    # keep widget state in the saved notebook, so the test can look inside it too
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"saveState": True}))
    news = root / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True, exist_ok=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, log = free_port(), root / "demo.log"
    env = {**os.environ, "JUPYTER_TOKEN": TOKEN,
           "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces")}
    for var in ("PDEBUG_URL", "PDEBUG_TOKEN", "PDEBUG_POLICY"):
        env.pop(var, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pdebug_jupyter", "demo", "--no-browser",
                                 "--port", str(port), "--dir", str(root / "demo")],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/api/status", params={"token": TOKEN},
                                timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(log.read_text()[-3000:])
        yield Lab(url, root / "demo", log)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with start_lab(tmp_path_factory.mktemp("browser")) as running:
        yield running


def open_tour(page: Page, lab: Lab) -> None:
    page.goto(f"{lab.url}/lab/tree/tour.ipynb?token={TOKEN}")
    run_all_cells(page)


def click_run(page: Page, view: str) -> Locator:
    """Click an explorer's Run once its cost preview is in; returns the drawn chart."""
    w = page.locator(f".pdebug-widget.pdebug-{view}")
    run = w.locator("button.pdebug-run")
    w.scroll_into_view_if_needed()
    page.wait_for_function("b => !b.disabled && b.textContent.startsWith('Run (')",
                           arg=run.element_handle(), timeout=60_000)
    run.click()
    chart = w.locator(".pdebug-chart[data-drawn^='r-'] svg").first
    chart.wait_for(timeout=300_000)
    return chart


def canaries(lab: Lab) -> list[str]:
    values = [c for c in (lab.directory / "canaries.txt").read_text().splitlines() if c]
    assert len(values) >= 100
    return values


def run_all_cells(page: Page) -> None:
    page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
    dialog = page.locator(".jp-Dialog button.jp-mod-accept")  # "Select Kernel", if asked
    try:
        dialog.wait_for(timeout=10_000)
        dialog.click()
    except PlaywrightTimeout:
        pass
    page.wait_for_function(
        "() => document.querySelector('#jp-main-statusbar')?.textContent.includes('Idle')",
        timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
    page.locator(".pdebug-widget").nth(4).wait_for(timeout=180_000)


def test_widgets_draw_the_slider_is_free_and_nothing_leaks(lab: Lab) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            open_tour(page, lab)
            assert lab.releases() == TOUR_RELEASES  # the widgets wait for a click

            for view in EXPLORERS:
                w = page.locator(f".pdebug-widget.pdebug-{view}")
                assert f"costs ε={WIDGET_EPSILON:g}" in w.locator("button.pdebug-run").inner_text()
                click_run(page, view)
                assert "released by" in w.locator(".pdebug-release").inner_text()
                assert f"ε {WIDGET_EPSILON:g} spent" in w.locator(".pdebug-spent-badge").inner_text()
                w.screenshot(path=ARTIFACTS / f"widget-{view}.png")
            assert lab.releases() == TOUR_RELEASES + 4
            assert lab.spent() == pytest.approx(SPENT)

            # the fairness slider and metric switch: redrawn in the browser, nothing asked
            fair = page.locator(".pdebug-widget.pdebug-fairness")
            fair.scroll_into_view_if_needed()
            chart = fair.locator(".pdebug-chart svg").first
            gaps = fair.locator(".pdebug-gaps")
            before_svg, before_gaps = chart.inner_html(), gaps.inner_text()
            assert "demographic parity difference" in before_gaps
            slider = fair.locator("input.pdebug-threshold")
            timings = []
            for position, label in ((3, "0.3"), (7, "0.7"), (2, "0.2")):
                slider.fill(str(position))
                page.wait_for_function(
                    "([el, want]) => el.textContent === want",
                    arg=[fair.locator(".pdebug-threshold-value").element_handle(), label])
                timings.append(float(fair.locator(".pdebug-fairness-controls")
                                     .get_attribute("data-last-update-ms") or "nan"))
            assert chart.inner_html() != before_svg and gaps.inner_text() != before_gaps
            fair.locator("select.pdebug-rates").select_option(label="equalized odds")
            page.wait_for_timeout(300)
            assert "TPR" in chart.inner_html() and "selection rate" not in chart.inner_html()
            fair.screenshot(path=ARTIFACTS / "widget-fairness-slider.png")
            assert lab.releases() == TOUR_RELEASES + 4 and lab.spent() == pytest.approx(SPENT)
            (ARTIFACTS / "slider-timings.json").write_text(json.dumps(timings))

            # the budget meter and the Privacy panel show what the ledger says
            meter = page.locator(".pdebug-widget.pdebug-budget")
            meter.scroll_into_view_if_needed()
            meter.locator("button.pdebug-refresh").click()
            row = meter.locator(".pdebug-budget-row[data-dataset='loans']")
            try:
                page.wait_for_function("([el, want]) => el.textContent.includes(want)",
                                       arg=[row.element_handle(), f"ε {SPENT:g} of"],
                                       timeout=30_000)
            except PlaywrightTimeout:
                raise AssertionError(f"budget meter shows {row.inner_text()!r}") from None
            meter.screenshot(path=ARTIFACTS / "widget-budget.png")
            check_privacy_panel(page, lab)

            # save (widget state included) and look for canaries everywhere
            page.locator(".jp-Notebook").first.click()
            page.keyboard.press("Control+s")
            page.wait_for_timeout(2000)
            saved = (lab.directory / "tour.ipynb").read_text()
            notebook = json.loads(saved)
            state = notebook["metadata"]["widgets"][
                "application/vnd.jupyter.widget-state+json"]["state"]
            assert sum(1 for m in state.values()
                       if m.get("state", {}).get("widget") in EXPLORERS) == 4
            recorded = [o["metadata"]["pdebug"]["release_id"]
                        for c in notebook["cells"] for o in c.get("outputs", [])
                        if "pdebug" in o.get("metadata", {})]
            # each explorer's output records its release (the tour's own releases show as
            # frames and metrics, which record nothing)
            made = lab.ledger("SELECT release_id FROM releases ORDER BY created_at, rowid")
            assert sorted(recorded) == sorted(str(r[0]) for r in made[TOUR_RELEASES:])
            dom = page.content()
            leaked = [c for c in canaries(lab) if c in dom or c in saved]
            assert not leaked, leaked[:5]
        finally:
            page.screenshot(path=ARTIFACTS / "lab.png", full_page=True)
            browser.close()


def check_privacy_panel(page: Page, lab: Lab) -> None:
    page.locator("[data-id='pdebug-privacy-panel']").first.click()
    panel = page.locator("#pdebug-privacy-panel[data-state='ready']")
    panel.wait_for(timeout=60_000)
    row = panel.locator(".pdebug-budget-row[data-dataset='loans']")
    assert float(row.get_attribute("data-spent") or "nan") == pytest.approx(lab.spent())
    assert panel.locator(".pdebug-role").inner_text().strip() == "owner"
    assert panel.locator(".pdebug-release-row").count() >= 5
    panel.screenshot(path=ARTIFACTS / "privacy-panel.png")
