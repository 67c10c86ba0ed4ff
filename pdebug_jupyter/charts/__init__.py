"""Charts: Altair (Vega-Lite) specs drawn from releases, free post-processing.

Importing this package registers a builder for each release kind with
:meth:`Release.register_chart`, so ``release.chart()`` works without the client or the
metrics layer importing charts. Every chart

* holds only the release's cells or the metrics computed from them, inline (no URLs, so it
  renders offline, e.g. in a widget with vega-embed);
* draws the intervals the release or its metrics give, and suppressed cells as grey crosses
  whose tooltip and legend say why they were suppressed;
* names the epsilon spent, the release id and, for synthetic data, "synthetic data" in its
  subtitle, and the same facts in ``usermeta["pdebug"]``.

Altair is imported on the first chart, not here: it takes a while to import, and every
process that imports ``pdebug_jupyter`` (the local service too) would pay for it.
"""

from __future__ import annotations

from importlib import import_module
from types import MappingProxyType
from typing import Any

from ..client.release import ChartBuilder, Release

__all__ = ["VIEWS"]

VIEWS = MappingProxyType({
    "histogram": ("_histogram", "histogram_chart"),
    "calibration": ("_calibration", "calibration_chart"),
    "confusion": ("_fairness", "rates_chart"),
    "confusion.roc": ("_fairness", "roc_chart"),
    "drift": ("_drift", "drift_chart"),
    "cohort_errors": ("_cohorts", "cohort_chart"),
    "attribution": ("_attribution", "attribution_chart"),
    "performance_estimate": ("_performance", "performance_chart"),
})
"""View name (a release kind, or ``kind.view``) -> (module, builder function)."""


def _deferred(module: str, name: str) -> ChartBuilder:
    def build(release: Release, **options: Any) -> Any:
        try:
            builder = getattr(import_module(f"{__name__}.{module}"), name)
        except ModuleNotFoundError as err:
            if err.name != "altair":
                raise
            raise ImportError("charts need Altair: pip install 'altair>=5.4'") from None
        return builder(release, **options)
    build.__name__ = build.__qualname__ = name
    return build


for _view, (_module, _name) in VIEWS.items():
    Release.register_chart(_view)(_deferred(_module, _name))
