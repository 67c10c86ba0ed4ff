"""The synthetic twin as the kernel sees it: a ``marginals`` release and the frames sampled
from it, marked synthetic wherever they are shown.

Sampling is post-processing of one release, so it is free and may be repeated at will; it
is deterministic given the release id and ``seed`` (an ordinary numpy generator: no DP noise
is drawn here). A twin holds the release's columns only, never identifiers. Values:

* numeric, score and attribution columns: uniform within the sampled bin (the release says
  nothing finer), so a column of whole numbers comes back as floats;
* categories that are all whole numbers (a 0/1 label, say): nullable integers (``Int64``);
  ``true``/``false``: nullable booleans; any other categories: strings;
* the ``other`` cell (values outside the declared domain, or missing): a missing value.
"""

from __future__ import annotations

import hashlib
import html
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from ..client.release import Release
from ..client.transport import PdebugError
from . import twin as tw
from ._bootstrap import geometric_noise

__all__ = ["MAX_ROWS", "MarginalsRelease", "SyntheticFrame", "SyntheticSeries", "check_rows"]

MAX_ROWS = 10_000_000
NOISE_DRAWS = 20


def check_rows(n: Any) -> int:
    """``n`` as a row count, or a one-line error before anything is asked of the service."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= MAX_ROWS:
        raise PdebugError("invalid_parameter", f"n must be a whole number of rows from 1 to "
                          f"{MAX_ROWS:,}")
    return int(n)


def _banner(obj: pd.DataFrame | pd.Series) -> str:
    info = obj.attrs.get("pdebug", {})
    if not info:
        return "SYNTHETIC TWIN: sampled from differentially private marginals, not real rows"
    return (f"SYNTHETIC TWIN of {info['dataset']!r} (release {info['release_id']}, "
            f"epsilon={info['epsilon']:g}, seed={info['seed']}): sampled from differentially "
            "private marginals, not real rows")


class SyntheticSeries(pd.Series):  # type: ignore[misc]
    """A column of a synthetic twin, or anything computed from one: shown with a banner."""

    _metadata = ["release"]

    @property
    def _constructor(self) -> type[SyntheticSeries]:
        return SyntheticSeries

    @property
    def _constructor_expanddim(self) -> type[SyntheticFrame]:
        return SyntheticFrame

    def __repr__(self) -> str:
        return _banner(self) + "\n" + super().__repr__()


class SyntheticFrame(pd.DataFrame):  # type: ignore[misc]
    """A synthetic twin: ordinary pandas, with a banner on every text and HTML display.

    ``attrs["pdebug"]`` holds ``synthetic`` (True), ``release_id``, ``epsilon``, ``dataset``
    and ``seed``; pandas carries both the class and the attrs into most derived frames
    (filters, groupbys, ``head``), so those are marked too.
    """

    _metadata = ["release"]
    release: MarginalsRelease  # the release it was sampled from, carried like the attrs

    @property
    def _constructor(self) -> type[SyntheticFrame]:
        return SyntheticFrame

    @property
    def _constructor_sliced(self) -> type[SyntheticSeries]:
        return SyntheticSeries

    def __repr__(self) -> str:
        return _banner(self) + "\n" + super().__repr__()

    def _repr_html_(self) -> str | None:
        table = super()._repr_html_()  # type: ignore[misc]
        banner = ('<div class="pdebug-synthetic" style="background:#fff3cd;color:#664d03;'
                  'border:1px solid #ffe69c;padding:4px 8px;font-weight:bold">'
                  f"{html.escape(_banner(self))}</div>")
        return banner + (table or "")

    def fidelity(self) -> pd.DataFrame:
        """How closely this twin's pairs follow the released ones (see
        :meth:`MarginalsRelease.fidelity`); free."""
        release = getattr(self, "release", None)
        if not isinstance(release, MarginalsRelease):
            raise PdebugError("no_release", "this frame no longer knows its release; use "
                              "session.release(frame.attrs['pdebug']['release_id'])")
        return release.fidelity(self)


def _values(dim: dict[str, Any], cells: np.ndarray, rng: np.random.Generator) -> Any:
    other = len(dim["labels"]) - 1
    missing = cells == other
    if "bins" in dim:
        edges = np.asarray(dim["bins"], dtype=float)
        i = np.minimum(cells, other - 1)
        out = edges[i] + (edges[i + 1] - edges[i]) * rng.random(cells.size)
        out[missing] = np.nan
        return out
    labels = list(dim["labels"][:-1])
    if all(lb.lstrip("-").isdigit() and str(int(lb)) == lb for lb in labels):
        ints = np.asarray([int(lb) for lb in labels] + [0], dtype=np.int64)[cells]
        return pd.arrays.IntegerArray(ints, missing)
    if set(labels) == {"true", "false"}:
        flags = np.asarray([lb == "true" for lb in labels] + [False])[cells]
        return pd.arrays.BooleanArray(flags, missing)
    return pd.Series(np.asarray(labels + [None], dtype=object)[cells], dtype="str").array


@Release.register("marginals")
class MarginalsRelease(Release):
    """Noisy one- and two-way marginals; :meth:`twin` samples a synthetic twin from them."""

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """The twin's columns in policy order (identifiers are never among them)."""
        return tuple(self.part(p)["dims"][0]["column"] for p in self.parts
                     if len(self.part(p)["dims"]) == 1)

    @cached_property
    def marginals(self) -> tw.Marginals:
        one: dict[str, np.ndarray] = {}
        two: dict[tuple[str, str], np.ndarray] = {}
        alphas: dict[str | tuple[str, str], float] = {}
        for name in self.parts:
            spec = self.part(name)
            key: Any = tuple(d["column"] for d in spec["dims"])
            key = key[0] if len(key) == 1 else key
            (one if isinstance(key, str) else two)[key] = self.arrays(name)["count"]
            alphas[key] = float(spec["noise"][0]["alpha"])
        return tw.Marginals(self.columns, one, two, alphas, int(self.threshold))

    @cached_property
    def model(self) -> tw.TwinModel:
        """Consistent shares and the spanning tree the twin is sampled along."""
        return tw.fit_twin(self.marginals)

    @property
    def tree(self) -> list[tuple[str, str]]:
        """The (parent, child) pairs the twin keeps exactly; other pairs follow the tree."""
        return list(self.model.tree)

    def _dim(self, column: str) -> dict[str, Any]:
        return dict(self.part(column)["dims"][0])

    def twin(self, n: int, seed: int | None = None) -> SyntheticFrame:
        """``n`` synthetic rows: free, deterministic given this release and ``seed``."""
        n = check_rows(n)
        seed = 0 if seed is None else int(seed)
        salt = int.from_bytes(hashlib.sha256(self.release_id.encode()).digest()[:8], "big")
        rng = np.random.default_rng([salt, seed])
        cells = tw.sample_cells(self.model, n, rng)
        frame = SyntheticFrame({c: _values(self._dim(c), cells[c], rng) for c in self.columns})
        frame.attrs["pdebug"] = {"synthetic": True, "release_id": self.release_id,
                                 "epsilon": self.epsilon, "dataset": self.dataset, "seed": seed}
        frame.release = self
        return frame

    def cells(self, frame: pd.DataFrame, column: str) -> np.ndarray:
        """Cell index of each value of ``frame[column]`` on this release's cells (``other``
        last: missing values, undeclared categories and values outside the bin edges)."""
        dim = self._dim(column)
        other = len(dim["labels"]) - 1
        values = frame[column]
        if "bins" in dim:
            edges = np.asarray(dim["bins"], dtype=float)
            x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            i = np.searchsorted(edges, x, side="right") - 1
            i[x == edges[-1]] = other - 1  # the last bin is closed
            i[~((x >= edges[0]) & (x <= edges[-1]))] = other
            return i
        lookup: dict[Any, int] = {}
        for k, label in enumerate(dim["labels"][:-1]):  # the label, and the value it reads as
            lookup[label] = k
            if label.lstrip("-").isdigit():
                lookup[int(label)] = k
            if label in ("true", "false"):
                lookup[label == "true"] = k
        index = pd.Series(values.astype(object), copy=False).map(lookup)
        return index.fillna(other).to_numpy(dtype=np.int64)

    def _released(self, a: str, b: str) -> np.ndarray:
        counts = np.nan_to_num(self.marginals.two_way[(a, b)], nan=0.0)
        out: np.ndarray = np.clip(counts, 0, None)
        return out

    def _noise_floor(self, truth: np.ndarray, alpha: float, rng: np.random.Generator) -> float:
        """Mean TVD between a table and its own release (noise, suppression, clipping):
        how close a perfect twin could look."""
        total = truth * self.model.total
        out = []
        for _ in range(NOISE_DRAWS):
            noisy = np.round(total) + geometric_noise(alpha, total.shape, rng)
            noisy[noisy < self.marginals.threshold] = 0
            out.append(tw.total_variation(np.clip(noisy, 0, None), truth))
        return float(np.mean(out))

    def fidelity(self, frame: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per released pair, total variation distance to the released (noisy) table of:
        the twin (its exact model, or the rows of ``frame``), the one-way twin (columns
        independent), and ``noise_tvd``, a perfect twin (the noise alone, simulated).

        Computed from the release only, so it is free; ``twin_tvd`` well below
        ``one_way_tvd`` and near ``noise_tvd`` means the twin keeps the pairs' dependence as
        far as the noise lets anyone tell. Tree pairs are kept exactly by the model.
        """
        model, rng = self.model, np.random.default_rng(0)
        cells = {c: self.cells(frame, c) for c in self.columns} if frame is not None else {}
        tree = {frozenset(e) for e in model.tree}
        rows = []
        for (a, b), counts in self.marginals.two_way.items():
            released = self._released(a, b)
            if frame is None:
                twin = tw.tree_marginal(model, a, b)
            else:
                shape = counts.shape
                twin = np.bincount(cells[a] * shape[1] + cells[b],
                                   minlength=counts.size).reshape(shape).astype(float)
            rows.append({"a": a, "b": b, "tree_edge": frozenset((a, b)) in tree,
                         "twin_tvd": tw.total_variation(twin, released),
                         "one_way_tvd": tw.total_variation(
                             tw.independent_marginal(model, a, b), released),
                         "noise_tvd": self._noise_floor(tw.tree_marginal(model, a, b),
                                                        self.marginals.alphas[(a, b)], rng)})
        columns = ["a", "b", "tree_edge", "twin_tvd", "one_way_tvd", "noise_tvd"]
        return pd.DataFrame(rows, columns=columns).set_index(["a", "b"])

    def fidelity_summary(self, frame: pd.DataFrame | None = None) -> dict[str, Any]:
        """Means of :meth:`fidelity` over all pairs, and the tree."""
        table = self.fidelity(frame)
        return {"pairs": len(table), "tree": self.tree,
                **{f"mean_{c}": float(table[c].mean())
                   for c in ("twin_tvd", "one_way_tvd", "noise_tvd")}}

    def __repr__(self) -> str:
        return (f"<MarginalsRelease {self.release_id} on {self.dataset}: epsilon="
                f"{self.epsilon:g}, {len(self.columns)} columns, "
                f"{len(self.marginals.two_way)} pairs; .twin(n) samples a synthetic twin>")
