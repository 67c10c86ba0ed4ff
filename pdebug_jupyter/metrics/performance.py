"""Expected performance of unlabelled data from its noisy score histogram (the CBPE idea).

NannyML's confidence-based performance estimation: if the model is calibrated, a row with
score ``s`` is positive with probability ``s``. Predicting positive when ``s >= t``, the
expected confusion matrix is

    TP = sum of s over rows with s >= t      FP = sum of (1 - s) over those rows
    FN = sum of s over rows with s < t       TN = sum of (1 - s) over those rows

and accuracy, precision, recall and F1 are formed from these expected counts (ratios of
expectations, as CBPE does). With ``t`` on a bin edge (bins are ``[a, b)``, the last one
closed) each sum needs only a bin's row count and score sum, which is what the
``performance_estimate`` release holds. So there is no binning error at a bin edge: the
estimate from the exact cube differs from the row-level one only by the fixed-point
rounding of each score, at most ``0.5 / scale`` per row (5e-5 with the default scale of
10,000) in any of the rates. The estimate is only as good as the calibration it assumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._bins import bin_edges, edge_index
from ._bootstrap import geometric_noise, percentile_interval

__all__ = ["METRICS", "ScoreHistogram", "expected_performance", "performance_interval"]

METRICS = ("accuracy", "precision", "recall", "f1")


@dataclass(frozen=True)
class ScoreHistogram:
    """A ``performance_estimate`` release without its ``other`` cell (rows with no score).

    Attributes
    ----------
    edges : numpy.ndarray
        ``(b + 1,)`` score bin edges.
    count : numpy.ndarray
        ``(b,)`` noisy row counts; NaN marks a suppressed bin.
    score_sum : numpy.ndarray
        ``(b,)`` noisy score sums in score units (the released integer sum over ``scale``).
    alphas : mapping
        ``"count"`` and ``"score_sum"``: two-sided geometric noise parameters. The score
        sum's noise lives on the integer grid, so in score units it is that noise / scale.
    scale : float
        Fixed-point scale of the score sum.
    """

    edges: np.ndarray
    count: np.ndarray
    score_sum: np.ndarray
    alphas: Mapping[str, float]
    scale: float

    def __post_init__(self) -> None:
        edges = bin_edges(self.edges)
        object.__setattr__(self, "edges", edges)
        for name in ("count", "score_sum"):
            value = np.asarray(getattr(self, name), dtype=float)
            if value.shape != (edges.size - 1,):
                raise ValueError(f"{name} has shape {value.shape}, expected ({edges.size - 1},) "
                                 "for the bins between the edges (drop the 'other' cell)")
            object.__setattr__(self, name, value)
        if any(not 0 <= self.alphas.get(m, -1.0) < 1 for m in ("count", "score_sum")):
            raise ValueError("alphas must give 'count' and 'score_sum', each in [0, 1)")
        if not self.scale > 0:
            raise ValueError("scale must be positive")


def _project(h: ScoreHistogram, n: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts clipped at 0 and each bin's score sum clipped to ``[a n, b n]``: exact data
    always satisfy both, so projecting noisy data onto them only removes error. Suppressed
    bins count as empty (their noisy count was below the minimum cohort size)."""
    kept = ~(np.isnan(h.count) | np.isnan(h.score_sum))
    n = np.where(kept, np.clip(np.nan_to_num(n), 0.0, None), 0.0)
    s = np.clip(np.nan_to_num(s), h.edges[:-1] * n, h.edges[1:] * n)
    return n, np.where(kept, s, 0.0)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.divide(a, b, out=np.full_like(a, np.nan), where=b > 0))


def _metrics(n: np.ndarray, s: np.ndarray, j: int) -> dict[str, np.ndarray]:
    """Expected rates from counts and score sums of shape (..., bins)."""
    tp = s[..., j:].sum(axis=-1)
    fp = n[..., j:].sum(axis=-1) - tp
    fn = s[..., :j].sum(axis=-1)
    tn = n[..., :j].sum(axis=-1) - fn
    return {"accuracy": _ratio(tp + tn, tp + tn + fp + fn), "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def expected_performance(h: ScoreHistogram, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall and F1 expected under calibration at ``threshold``.

    Parameters
    ----------
    h : ScoreHistogram
    threshold : float
        A bin edge; rows with ``score >= threshold`` are predicted positive. The first edge
        predicts every row positive, the last one none (precision is then NaN).

    Returns
    -------
    dict
        ``accuracy``, ``precision``, ``recall``, ``f1`` (NaN when undefined).

    Raises
    ------
    ValueError
        When ``threshold`` is not a bin edge.
    """
    j = edge_index(h.edges, threshold)
    n, s = _project(h, h.count, h.score_sum)
    return {k: float(v) for k, v in _metrics(n, s, j).items()}


def _redraw(h: ScoreHistogram, draws: int, rng: np.random.Generator,
            sampling: bool) -> tuple[np.ndarray, np.ndarray]:
    """``draws`` replicates of (count, score sum), shape (draws, bins)."""
    n0, s0 = _project(h, h.count, h.score_sum)
    shape = (draws, n0.size)
    if sampling:
        n = rng.poisson(n0, shape).astype(float)
        mids = (h.edges[:-1] + h.edges[1:]) / 2
        mean = np.divide(s0, n0, out=mids.copy(), where=n0 > 0)
        # scores spread within a bin; uniform over it is the assumption (variance w^2 / 12)
        spread = np.sqrt(n * np.diff(h.edges) ** 2 / 12)
        s = n * mean + spread * rng.standard_normal(shape)
    else:
        n, s = np.broadcast_to(n0, shape), np.broadcast_to(s0, shape)
    n = n + geometric_noise(h.alphas["count"], shape, rng)
    s = s + geometric_noise(h.alphas["score_sum"], shape, rng) / h.scale
    return _project(h, n, s)


def performance_interval(h: ScoreHistogram, metric: str, threshold: float, *,
                         level: float = 0.9, draws: int = 400,
                         rng: np.random.Generator | None = None,
                         sampling: bool = True) -> tuple[float, float]:
    """Central ``level`` interval of one expected metric, by parametric bootstrap.

    Each replicate redraws what produced the release, all replicates in one array:

    1. (``sampling=True``) a new sample: each bin's row count Poisson around the released
       count, its score sum that many rows at the bin's released mean score plus a normal
       spread for scores uniform within the bin;
    2. new DP noise, two-sided geometric with the release's alphas: on the count, and on the
       score sum's integer grid divided by ``scale``;
    3. the same clean-up as the estimate (clip counts at 0, each score sum into its bin).

    The interval is the percentiles of the metric over the replicates. ``sampling=True``
    targets the expected metric of the population the rows come from; ``sampling=False``
    only the DP noise, for the value on these very rows. Neither includes the label noise
    by which the realised accuracy of these rows differs from its expectation.

    Suppressed bins count as empty in the estimate and stay empty in every replicate, so
    the interval does not carry the bias of dropping them (each held fewer than the
    minimum cohort of rows). Coverage of nominal 90% over 1000 simulated trials of 25,000
    calibrated current rows, 20 bins, epsilon 0.5 per measure, as population / pre-noise:

    ==========  ==================  ==================
    metric      min cohort 25       no suppression
    ==========  ==================  ==================
    accuracy    0.889 / 0.903       0.905 / 0.901
    precision   0.844 / 0.885       0.906 / 0.914
    recall      0.836 / 0.775       0.900 / 0.898
    f1          0.823 / 0.799       0.904 / 0.909
    ==========  ==================  ==================

    Precision, recall and F1 undercover under suppression because the top score bins
    (a few dozen rows there) drop out of some releases.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (one of {', '.join(METRICS)})")
    j = edge_index(h.edges, threshold)
    rng = np.random.default_rng() if rng is None else rng
    n, s = _redraw(h, draws, rng, sampling)
    return percentile_interval(_metrics(n, s, j)[metric], level)
