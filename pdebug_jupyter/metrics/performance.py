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

A suppressed bin (its noisy count was below the release's minimum cohort) hides up to
about that many rows, typically the top score bins. Leaving it empty biases recall and
precision down; when the histogram knows the threshold, the estimate instead fills it with
the mean of the counts it could hold at the bin's middle score, and the intervals draw
those counts (see :func:`performance_interval`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._bins import bin_edges, edge_index
from ._bootstrap import geometric_noise, percentile_interval

__all__ = ["METRICS", "ScoreHistogram", "expected_performance", "performance_interval",
           "performance_intervals"]

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
    threshold : float
        The release's minimum cohort: a bin is suppressed when its noisy count is below it.
        It says how many rows a suppressed bin may hold; 0 (unknown, or no suppression)
        leaves suppressed bins empty in the estimate and its intervals.
    """

    edges: np.ndarray
    count: np.ndarray
    score_sum: np.ndarray
    alphas: Mapping[str, float]
    scale: float
    threshold: float = 0.0

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
        if not self.threshold >= 0:
            raise ValueError("threshold must be at least 0")


def _project(h: ScoreHistogram, n: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts clipped at 0 and each bin's score sum clipped to ``[a n, b n]``: exact data
    always satisfy both, so projecting noisy data onto them only removes error. Suppressed
    bins (NaN) count as empty (their noisy count was below the minimum cohort size)."""
    kept = ~(np.isnan(n) | np.isnan(s))
    n = np.where(kept, np.clip(np.nan_to_num(n), 0.0, None), 0.0)
    s = np.clip(np.where(kept, s, 0.0), h.edges[:-1] * n, h.edges[1:] * n)
    return n, s


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

    Notes
    -----
    A suppressed bin counts as holding the mean of the counts that could have been
    suppressed (about half the threshold) at the bin's middle score when ``h.threshold``
    is known, and as empty otherwise. Either is off by at most about the threshold's worth
    of rows; the middle is off by half that at worst, and sits inside the intervals, which
    draw the count.
    """
    j = edge_index(h.edges, threshold)
    return {k: float(v) for k, v in _metrics(*_filled(h), j).items()}


def _plausible_counts(h: ScoreHistogram) -> tuple[np.ndarray, np.ndarray]:
    """The row counts a suppressed bin may hold, and their probabilities. All that was
    released is that the bin's noisy count fell below the threshold; with no prior on the
    count, P(n) is proportional to the chance that n plus the noise stayed below it: flat on
    [0, threshold), fading out over the noise's width above."""
    alpha, top = h.alphas["count"], int(np.ceil(h.threshold)) - 1  # noisy count <= top
    # Counts whose chance is below 1e-9 are left out (at most a million more).
    reach = min(int(np.ceil(np.log(1e-9) / np.log(alpha))), 10**6) if alpha > 0 else 0
    n = np.arange(max(top, 0) + reach + 1)
    gap = top - n  # P(noise <= gap) for the two-sided geometric
    below = np.where(gap >= 0, 1 - alpha ** (np.abs(gap) + 1) / (1 + alpha),
                     alpha ** np.abs(gap) / (1 + alpha))
    return n.astype(float), below / below.sum()


def _filled(h: ScoreHistogram) -> tuple[np.ndarray, np.ndarray]:
    """The estimate's counts and score sums: suppressed bins hold the mean of their
    plausible counts at the bin's middle score when the threshold is known, else nothing."""
    n, s = _project(h, h.count, h.score_sum)
    hidden = np.isnan(h.count) | np.isnan(h.score_sum)
    if h.threshold > 0 and hidden.any():
        counts, chance = _plausible_counts(h)
        fill = float(counts @ chance)
        n = np.where(hidden, fill, n)
        s = np.where(hidden, fill * (h.edges[:-1] + h.edges[1:]) / 2, s)
    return n, s


def _redraw(h: ScoreHistogram, draws: int, rng: np.random.Generator,
            sampling: bool) -> tuple[np.ndarray, np.ndarray]:
    """``draws`` replicates of (count, score sum), shape (draws, bins)."""
    n0, s0 = _project(h, h.count, h.score_sum)
    shape = (draws, n0.size)
    lo, hi = h.edges[:-1], h.edges[1:]
    n0, s0 = np.broadcast_to(n0, shape), np.broadcast_to(s0, shape)
    hidden = np.isnan(h.count) | np.isnan(h.score_sum)
    if h.threshold > 0 and hidden.any():
        # A suppressed bin holds a plausible count of rows with a mean score anywhere in it.
        counts, chance = _plausible_counts(h)
        imputed = rng.choice(counts, size=shape, p=chance)
        n0 = np.where(hidden, imputed, n0)
        s0 = np.where(hidden, imputed * rng.uniform(lo, hi, shape), s0)
        hidden = np.zeros_like(hidden)
    if sampling:
        n = rng.poisson(n0).astype(float)
        mean = np.divide(s0, n0, out=np.broadcast_to((lo + hi) / 2, shape).copy(), where=n0 > 0)
        # scores spread within a bin; uniform over it is the assumption (variance w^2 / 12)
        spread = np.sqrt(n * np.diff(h.edges) ** 2 / 12)
        s = n * mean + spread * rng.standard_normal(shape)
    else:
        n, s = n0, s0
    n = n + geometric_noise(h.alphas["count"], shape, rng)
    s = s + geometric_noise(h.alphas["score_sum"], shape, rng) / h.scale
    return _project(h, np.where(hidden, np.nan, n), s)


def performance_intervals(h: ScoreHistogram, threshold: float, *, level: float = 0.9,
                          draws: int = 400, rng: np.random.Generator | None = None,
                          sampling: bool = True) -> dict[str, tuple[float, float]]:
    """:func:`performance_interval` of every metric in :data:`METRICS`, from one set of
    replicates (so each equals the single-metric call with the same ``rng`` state)."""
    j = edge_index(h.edges, threshold)
    rng = np.random.default_rng() if rng is None else rng
    values = _metrics(*_redraw(h, draws, rng, sampling), j)
    return {metric: percentile_interval(values[metric], level) for metric in METRICS}


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

    Left empty, suppressed bins would bias the interval with the estimate: dropping the
    top score bins (a few dozen rows there) lowers recall and precision. When the release's
    minimum cohort is known (``h.threshold``), each replicate first fills every suppressed
    bin in: a row count drawn from the counts that could have been suppressed, and a mean
    score drawn uniformly over the bin. With no prior on the count, P(n) is proportional to
    the chance that n plus the noise stayed below the threshold: flat on [0, threshold),
    fading out over the noise's width above. The interval so covers the metric of all rows,
    suppressed ones included, and widens by what the suppressed bins could hold. With
    ``h.threshold == 0`` (not known) suppressed bins stay empty in every replicate and the
    interval carries the bias.

    Notes
    -----
    Coverage of nominal 90% over 1000 simulated releases of 25,000 calibrated current rows
    (20 bins, epsilon 0.5 per measure, minimum cohort 25, so the top bin of 6 rows is always
    suppressed and the next of 28 often), population / pre-noise target, at a threshold of
    0.5; in brackets with suppressed bins left empty (as before the fill-in, also 1000):

    ==========  ==========================  ==========================
    metric      population                  pre-noise
    ==========  ==========================  ==========================
    accuracy    0.90 (0.89)                 0.91 (0.90)
    precision   0.92 (0.84)                 0.93 (0.89)
    recall      0.91 (0.84)                 0.92 (0.78)
    f1          0.91 (0.82)                 0.93 (0.80)
    ==========  ==========================  ==========================

    Over 300 releases at a threshold of 0.7 coverage is 0.91 to 0.96 (recall pre-noise
    0.63 left empty); at 0.9, where every predicted positive sits in the two often
    suppressed bins, 0.89 to 1.00 (recall pre-noise 0.10 left empty): the fill-in is wide
    there, as it should be, since the release cannot say how many rows those bins hold.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (one of {', '.join(METRICS)})")
    return performance_intervals(h, threshold, level=level, draws=draws, rng=rng,
                                 sampling=sampling)[metric]
