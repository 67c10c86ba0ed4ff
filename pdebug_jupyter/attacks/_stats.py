"""Statistics for attacks and audits: what a spent epsilon allows, and bounds from trials.

An (epsilon, delta)-DP release lets no test tell neighbouring datasets apart with false
positive rate ``a`` and false negative rate ``b`` unless ``1 - delta - b <= e^eps * a`` and
``1 - delta - a <= e^eps * b`` (the hypothesis-testing view of DP). Two consequences are used:
a guess of a secret bit with prior 1/2 is right with probability at most
``(e^eps + delta) / (1 + e^eps)``, and observed error rates give a lower bound on epsilon
once the rates are replaced by their Clopper-Pearson upper limits.
"""

from __future__ import annotations

import math

from scipy import stats


def max_accuracy(epsilon: float, delta: float = 0.0) -> float:
    """Largest accuracy of any guess of a secret bit (prior 1/2) after an (eps, delta) release."""
    tail = math.exp(-epsilon)  # (e^eps + delta) / (1 + e^eps), without overflow
    return min(1.0, (1 + delta * tail) / (1 + tail))


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson limits at level ``1 - alpha`` each: (lower, upper) of p."""
    if not 0 <= k <= n or n < 1:
        raise ValueError("need 0 <= k <= n and n >= 1")
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))
    return lo, hi


def accuracy_exceeds(correct: int, trials: int, bound: float, alpha: float = 1e-3) -> bool:
    """Whether ``correct`` of ``trials`` right guesses show, at level alpha, an accuracy above
    ``bound`` (one-sided exact binomial test)."""
    return bool(stats.binom.sf(correct - 1, trials, bound) < alpha)


def epsilon_from_rates(fpr: float, fnr: float, delta: float = 0.0) -> float:
    """The smallest epsilon whose (eps, delta) region contains the test (fpr, fnr)."""
    if fpr > 1 - fnr:  # a test that is worse than chance, flipped
        fpr, fnr = 1 - fnr, 1 - fpr
    return _region_epsilon(fpr, fnr, delta)


def _region_epsilon(fpr: float, fnr: float, delta: float) -> float:
    # swapping the two rates swaps the datasets' roles, which DP treats alike
    lo, hi = min(fpr, fnr), max(fpr, fnr)
    if hi >= 1 - delta - lo:
        return 0.0
    if lo == 0.0:
        return math.inf
    return math.log((1 - delta - hi) / lo)


def epsilon_lower_bound(false_pos: int, negatives: int, false_neg: int, positives: int,
                        alpha: float, delta: float = 0.0) -> float:
    """Epsilon that the mechanism exceeds with confidence ``1 - alpha`` at least, given a
    test's errors on ``negatives`` samples of one dataset and ``positives`` of the other.

    Each error rate is replaced by its one-sided Clopper-Pearson upper limit at alpha / 2
    (a union bound over the two rates). A test worse than chance is first replaced by its
    complement (flipping upper limits instead would overstate epsilon).
    """
    if false_pos / negatives > 1 - false_neg / positives:
        false_pos, false_neg = negatives - false_pos, positives - false_neg
    fpr_hi = clopper_pearson(false_pos, negatives, alpha / 2)[1]
    fnr_hi = clopper_pearson(false_neg, positives, alpha / 2)[1]
    return _region_epsilon(fpr_hi, fnr_hi, delta)  # limits are never flipped
