"""Score and value bins as the metrics see them: checked edges and thresholds on edges."""

from __future__ import annotations

from typing import Any

import numpy as np


def bin_edges(values: Any) -> np.ndarray:
    """Bin edges as a float array: two or more finite, strictly increasing numbers."""
    edges = np.array(values, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or not np.isfinite(edges).all() \
            or (np.diff(edges) <= 0).any():
        raise ValueError("edges must be two or more finite, strictly increasing numbers")
    return edges


def edge_index(edges: np.ndarray, threshold: float) -> int:
    """Index of the edge equal to ``threshold``; ValueError naming the nearest edges if none."""
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError("threshold must be a finite number on a bin edge")
    hit = np.flatnonzero(np.isclose(edges, t, rtol=0.0, atol=1e-9))
    if hit.size:
        return int(hit[0])
    if t < edges[0] or t > edges[-1]:
        raise ValueError(f"threshold {t:g} is outside the bin edges [{edges[0]:g}, "
                         f"{edges[-1]:g}]; pick one of the edges")
    k = int(np.searchsorted(edges, t))
    raise ValueError(f"threshold {t:g} is not a bin edge; the nearest edges are "
                     f"{edges[k - 1]:g} and {edges[k]:g}")
