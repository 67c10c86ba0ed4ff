"""A synthetic twin from noisy one- and two-way marginals: a tree-shaped model, sampled.

The ``marginals`` release holds noisy counts of every column and of every pair of columns
over their public cells (``other`` last). Everything here is post-processing of those
counts, so it is free; it follows the MST recipe (McKenna, Miklau and Sheldon, 2021) with
the tree chosen from released pairs instead of by a separate private selection step.

1. **Suppressed cells.** A cell whose noisy count fell below the minimum cohort size ``t``
   is read as the expected noisy count of an *empty* cell given that it was suppressed,
   ``E[Z | Z < t]`` (slightly negative). Reading it as 0 would bias every margin upwards,
   because the empty cells that survive suppression all carry positive noise.
2. **One-way estimates.** Each column's counts are the inverse-variance weighted average of
   its own noisy counts and of the margins of every pair it is in (a pair's margin sums
   noise over the other column's cells, so it weighs less), clipped at 0 and normalised.
3. **Consistent pairs.** Each pair's table is clipped at 0 and raked (iterative
   proportional fitting) to the two one-way estimates, so every released view agrees.
4. **Tree.** The maximum spanning tree over the pairs, each weighted by its mutual
   information minus the mutual information that noise alone would show (the table of the
   independent model plus noise of the same size): the Chow-Liu tree of the release.
5. **Sampling.** The root column from its one-way estimate, then each column given its
   parent from the raked pair table, breadth first. Pairs outside the tree are implied by
   the tree (dependence passes along the path between the two columns).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._bootstrap import geometric_noise

__all__ = ["Marginals", "TwinModel", "fit_twin", "independent_marginal", "mean_abs_noise",
           "noise_variance", "sample_cells", "suppressed_mean", "total_variation",
           "tree_marginal"]

Pair = tuple[str, str]
RAKE_ITERATIONS = 100
FLOOR = 1e-6  # share of independent mass mixed into every pair, so no parent cell is empty
NOISE_DRAWS = 5  # draws of pure noise per pair when correcting its mutual information


@dataclass(frozen=True)
class Marginals:
    """Released noisy counts: NaN marks a suppressed cell, ``other`` is the last cell."""

    columns: tuple[str, ...]
    one_way: Mapping[str, np.ndarray]
    two_way: Mapping[Pair, np.ndarray]  # (a, b) with a before b in ``columns``
    alphas: Mapping[str | Pair, float]  # two-sided geometric alpha of each marginal
    threshold: int


@dataclass(frozen=True)
class TwinModel:
    """Consistent one-way and pairwise shares and the tree the twin is sampled along."""

    columns: tuple[str, ...]
    one_way: Mapping[str, np.ndarray]
    two_way: Mapping[Pair, np.ndarray]
    tree: tuple[Pair, ...]  # (parent, child), breadth first from ``columns[0]``
    total: float  # estimated number of rows (noisy)

    def joint(self, a: str, b: str) -> np.ndarray:
        """The consistent shares of the pair as an (a, b) table."""
        if (a, b) in self.two_way:
            return self.two_way[(a, b)]
        return self.two_way[(b, a)].T

    def conditional(self, a: str, b: str) -> np.ndarray:
        """Shares of b's cells given each of a's cells (b's own shares where a's is empty)."""
        joint = self.joint(a, b)
        rows = joint.sum(axis=1, keepdims=True)
        safe = np.where(rows > 0, rows, 1.0)
        return np.where(rows > 0, joint / safe, self.one_way[b][None, :])


def suppressed_mean(alpha: float, threshold: int) -> float:
    """E[Z | Z < threshold] for two-sided geometric Z: the expected noisy count of an empty
    cell that was suppressed."""
    if alpha <= 0 or threshold <= 0:
        return 0.0
    # P(z) is proportional to alpha ** |z|; the tail below -k weighs alpha ** k / (1 - alpha)
    k = min(10**6, math.ceil(math.log(1e-12 * (1 - alpha)) / math.log(alpha)))
    z = np.arange(-k, threshold, dtype=float)
    w = alpha ** np.abs(z)
    return float((z * w).sum() / w.sum())


def mean_abs_noise(alpha: float) -> float:
    """E|Z| for two-sided geometric Z: 2 alpha / (1 - alpha^2)."""
    return 2 * alpha / (1 - alpha**2) if alpha > 0 else 0.0


def noise_variance(alpha: float) -> float:
    """Var Z for two-sided geometric Z: 2 alpha / (1 - alpha)^2."""
    return 2 * alpha / (1 - alpha) ** 2


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance between two tables of shares (each normalised first)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())


def _filled(counts: np.ndarray, alpha: float, threshold: int) -> np.ndarray:
    out = np.asarray(counts, dtype=float).copy()
    out[np.isnan(out)] = suppressed_mean(alpha, threshold)
    return out


def _shares(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, None)
    total = x.sum()
    return x / total if total > 0 else np.full(x.shape, 1.0 / x.size)


def _rake(table: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Scale rows and columns in turn until the margins match ``rows`` and ``cols``."""
    t: np.ndarray = np.clip(table, 0.0, None)
    t = t / t.sum() if t.sum() > 0 else np.outer(rows, cols)
    t = (1 - FLOOR) * t + FLOOR * np.outer(rows, cols)
    for _ in range(RAKE_ITERATIONS):
        t *= (rows / np.maximum(t.sum(axis=1), 1e-300))[:, None]
        t *= (cols / np.maximum(t.sum(axis=0), 1e-300))[None, :]
        if np.abs(t.sum(axis=1) - rows).sum() < 1e-9:
            break
    return t


def _mutual_information(joint: np.ndarray) -> float:
    p = joint / joint.sum()
    outer = np.outer(p.sum(axis=1), p.sum(axis=0))
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / outer[nz])).sum())


def _noise_information(pa: np.ndarray, pb: np.ndarray, total: float, alpha: float,
                       threshold: int, rng: np.random.Generator) -> float:
    """Mutual information of an independent table after noise and suppression like the
    release's: what a pair with no dependence at all would seem to have."""
    base = np.outer(pa, pb) * total
    out = []
    for _ in range(NOISE_DRAWS):
        noisy = np.round(base) + geometric_noise(alpha, base.shape, rng)
        noisy[noisy < threshold] = suppressed_mean(alpha, threshold)
        out.append(_mutual_information(_rake(noisy, pa, pb)))
    return float(np.mean(out))


def _spanning_tree(columns: Sequence[str], weights: Mapping[Pair, float]) -> tuple[Pair, ...]:
    """Maximum spanning tree (Prim), as (parent, child) edges breadth first from the first
    column; ties go to the earlier pair, so the tree is deterministic."""
    inside, edges = [columns[0]], []
    while len(inside) < len(columns):
        best = max(((a, b) for a in inside for b in columns if b not in inside),
                   key=lambda e: weights[e] if e in weights else weights[(e[1], e[0])])
        edges.append(best)
        inside.append(best[1])
    return tuple(edges)


def fit_twin(m: Marginals) -> TwinModel:
    """Consistent one-way and pairwise shares from the release, and the tree to sample."""
    filled = {c: _filled(m.one_way[c], m.alphas[c], m.threshold) for c in m.columns}
    pairs = {p: _filled(t, m.alphas[p], m.threshold) for p, t in m.two_way.items()}
    one_way, totals = {}, []
    for c in m.columns:
        estimates, weights = [filled[c]], [1.0 / (noise_variance(m.alphas[c]) or 1e-12)]
        for (a, b), t in pairs.items():
            if c in (a, b):
                margin = t.sum(axis=1) if c == a else t.sum(axis=0)
                other = t.shape[1] if c == a else t.shape[0]
                estimates.append(margin)
                weights.append(1.0 / (other * noise_variance(m.alphas[(a, b)]) or 1e-12))
        mean = np.average(np.stack(estimates), axis=0, weights=weights)
        totals.append(float(np.clip(mean, 0, None).sum()))
        one_way[c] = _shares(mean)
    total = float(np.median(totals))
    two_way = {(a, b): _rake(t, one_way[a], one_way[b]) for (a, b), t in pairs.items()}
    rng = np.random.default_rng(0)  # only sizes the noise correction; never a release
    information = {(a, b): _mutual_information(t) - _noise_information(
        one_way[a], one_way[b], total, m.alphas[(a, b)], m.threshold, rng)
        for (a, b), t in two_way.items()}
    return TwinModel(m.columns, one_way, two_way, _spanning_tree(m.columns, information), total)


def sample_cells(model: TwinModel, n: int, rng: np.random.Generator,
                 independent: bool = False) -> dict[str, np.ndarray]:
    """Cell indices of ``n`` twin rows per column, sampled along the tree (or each column on
    its own with ``independent``: the one-way twin)."""
    root = model.columns[0]
    out = {root: rng.choice(len(model.one_way[root]), size=n, p=model.one_way[root])}
    for parent, child in model.tree:
        if independent:
            out[child] = rng.choice(len(model.one_way[child]), size=n, p=model.one_way[child])
            continue
        cond = model.conditional(parent, child)
        values = np.empty(n, dtype=np.int64)
        for k in range(cond.shape[0]):
            rows = np.flatnonzero(out[parent] == k)
            values[rows] = rng.choice(cond.shape[1], size=rows.size, p=cond[k])
        out[child] = values
    return out


def _path(model: TwinModel, a: str, b: str) -> list[str]:
    neighbours: dict[str, list[str]] = {c: [] for c in model.columns}
    for p, c in model.tree:
        neighbours[p].append(c)
        neighbours[c].append(p)
    back = {a: a}
    queue = [a]
    while queue:
        node = queue.pop(0)
        for nxt in neighbours[node]:
            if nxt not in back:
                back[nxt] = node
                queue.append(nxt)
    path = [b]
    while path[-1] != a:
        path.append(back[path[-1]])
    return path[::-1]


def tree_marginal(model: TwinModel, a: str, b: str) -> np.ndarray:
    """The twin model's exact (a, b) shares: a's shares carried along the tree path to b."""
    path = _path(model, a, b)
    out = np.diag(model.one_way[a])
    for u, v in zip(path[:-1], path[1:], strict=True):
        out = out @ model.conditional(u, v)
    return out


def independent_marginal(model: TwinModel, a: str, b: str) -> np.ndarray:
    """The (a, b) shares of the one-way twin: the product of the one-way shares."""
    return np.outer(model.one_way[a], model.one_way[b])
