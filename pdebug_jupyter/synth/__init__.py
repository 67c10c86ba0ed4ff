"""Synthetic demo data: a credit table with planted model problems and canaries.

``make_loans`` writes the table, its policy and its canary list; ``loans_frame`` returns the
same table in memory; ``GROUND_TRUTH`` says what was planted and how large each effect is.
"""

from __future__ import annotations

from pdebug_jupyter.synth.loans import GROUND_TRUTH, LoansFiles, loans_frame, make_loans

__all__ = ["GROUND_TRUTH", "LoansFiles", "loans_frame", "make_loans"]
