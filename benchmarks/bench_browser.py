"""In the browser: the fairness slider's redraw time and Run-to-chart at 1M rows.

Starts ``pdebug-jupyter demo`` on synthetic loans of the given size (made once under
benchmarks/data/browser-<rows>/, the ledger reset each run), drives JupyterLab with
Playwright in Debian's chromium, and measures

* Run to drawn chart: from the click on Run to the chart's SVG in the page, per explorer
  (fresh releases: each run asks the service, noise, ledger, the kernel's views, the comm
  message, vega-embed);
* slider updates: milliseconds per fairness-threshold move as the widget measures it
  (``performance.now()`` around setting the Vega signal and redrawing), over many moves.

Target (issue 4): under 16 ms per slider update (one frame). Run:
``python benchmarks/bench_browser.py [--rows 1000000] [--moves 60]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402
from test_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    EXPLORERS,
    click_run,
    open_tour,
    start_lab,
)

from pdebug_jupyter.demo import prepare  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--moves", type=int, default=60)
    args = p.parse_args()
    root = HERE / "data" / f"browser-{args.rows}"
    demo = root / "demo"
    if not (demo / "policy.toml").exists():
        prepare(demo, rows=args.rows, seed=0)
    for stale in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm", "tour.ipynb"):
        (demo / stale).unlink(missing_ok=True)
    shutil.rmtree(root / "settings", ignore_errors=True)
    prepare(demo, rows=args.rows, seed=0)  # the tour again, fresh

    results: dict[str, object] = {"rows": args.rows}
    with start_lab(root) as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_tour(page, lab)
        run_ms = {}
        for view in EXPLORERS:
            start = time.perf_counter()
            click_run(page, view)
            run_ms[view] = round((time.perf_counter() - start) * 1000)
        results["run_to_chart_ms"] = run_ms
        fair = page.locator(".pdebug-widget.pdebug-fairness")
        fair.scroll_into_view_if_needed()
        slider = fair.locator("input.pdebug-threshold")
        controls = fair.locator(".pdebug-fairness-controls")
        steps = int(slider.get_attribute("max") or "10")
        timings = []
        for i in range(args.moves):
            position = (i * 3 + 1) % (steps + 1)
            slider.fill(str(position))
            page.wait_for_timeout(30)
            timings.append(float(controls.get_attribute("data-last-update-ms") or "nan"))
        timings.sort()
        results["slider_ms"] = {
            "moves": len(timings), "median": round(statistics.median(timings), 2),
            "p95": round(timings[int(0.95 * (len(timings) - 1))], 2),
            "max": round(timings[-1], 2)}
        browser.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
