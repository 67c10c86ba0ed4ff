"""Secure widgets for the notebook: pickers, a free cost preview, an explicit Run, charts
with intervals; state holds release data only.

>>> import pdebug_jupyter as pdj
>>> loans = pdj.connect().dataset("loans")
>>> pdj.widgets.FairnessExplorer(loans, epsilon=0.2)   # doctest: +SKIP
"""

from __future__ import annotations

from ._base import Explorer
from ._budget import BudgetMeter
from ._explorers import CalibrationExplorer, CohortExplorer, DriftExplorer, FairnessExplorer

__all__ = ["BudgetMeter", "CalibrationExplorer", "CohortExplorer", "DriftExplorer",
           "Explorer", "FairnessExplorer"]
