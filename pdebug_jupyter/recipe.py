"""Replayable history: the analyses of a session run again on another dataset version.

A recipe (``Session.recipe()`` / ``Session.export_recipe(path)``) lists the queries a session
released: dataset, kind, parameters, epsilon and the id of the release each got. It holds no
released value, so it can be mailed, committed or attached to a ticket. :func:`replay` asks
every query again of another dataset (the data after a refresh, the scores of a retrained
model), charged as usual, and reads the old releases back from the service's cache for free,
so a :class:`Comparison` shows each analysis's headline numbers old and new side by side.

What is compared per kind (every number is post-processing of one release):

- ``calibration``: ECE of all rows and of each group;
- ``confusion``: demographic parity and equalized odds differences at the bin edge nearest
  0.5, and each group's selection rate there;
- ``drift``: each column's drift statistic (``statistic``: PSI for binned columns, ...);
- ``histogram`` and every other kind: each released cell's first measure (suppressed: NaN).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from .charts._spec import inline
from .client import Dataset, PdebugError, Release, Session
from .client.session import RECIPE_FORMAT
from .metrics.releases import CalibrationRelease, ConfusionRelease, DriftRelease

__all__ = ["Comparison", "load_recipe", "replay", "summary"]

THRESHOLD = 0.5  # where the confusion comparison reads rates and gaps


def load_recipe(recipe: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A recipe from a dict or a JSON file, checked; a bad one raises ``invalid_recipe``."""
    if not isinstance(recipe, Mapping):
        try:
            with open(recipe) as f:
                recipe = json.load(f)
        except (OSError, ValueError) as exc:
            raise PdebugError("invalid_recipe", f"cannot read the recipe: {exc}") from None
    if not isinstance(recipe, Mapping) or recipe.get("format") != RECIPE_FORMAT:
        raise PdebugError("invalid_recipe", f"not a recipe: expected format {RECIPE_FORMAT!r}")
    if recipe.get("version") != 1:
        raise PdebugError("invalid_recipe", "unsupported recipe version (this reads version 1)")
    queries = recipe.get("queries")
    if not isinstance(queries, list) or not queries:
        raise PdebugError("invalid_recipe", "the recipe has no queries")
    for i, q in enumerate(queries):
        eps = q.get("epsilon") if isinstance(q, Mapping) else None
        if (not isinstance(q, Mapping) or not isinstance(q.get("kind"), str)
                or not isinstance(q.get("params"), Mapping) or isinstance(eps, bool)
                or not isinstance(eps, int | float)):
            raise PdebugError("invalid_recipe", f"query {i}: needs kind, epsilon and params")
    return dict(recipe)


def summary(release: Release) -> pd.DataFrame:
    """The numbers a replay compares for ``release``: columns ``metric``, ``subject``,
    ``value`` (see the module docstring for what each kind contributes)."""
    rows: list[tuple[str, str, float]] = []
    if isinstance(release, CalibrationRelease):
        rows.append(("ece", "all rows", release.ece))
        if release.cube.groups != ("all",):
            rows += [("ece", str(g), float(v)) for g, v in release.by_group()["ece"].items()]
    elif isinstance(release, ConfusionRelease):
        t = min(release.thresholds, key=lambda e: abs(e - THRESHOLD))
        rows += [("demographic_parity_difference", f"at {t:g}",
                  release.demographic_parity_difference(t)),
                 ("equalized_odds_difference", f"at {t:g}",
                  release.equalized_odds_difference(t))]
        rates = release.at(t)
        if "selection_rate" in rates:
            rows += [("selection_rate", f"{g} at {t:g}", float(v))
                     for g, v in rates["selection_rate"].items()]
    elif isinstance(release, DriftRelease):
        rows += [(f"drift {r['method']}", str(r["column"]), float(r["statistic"]))
                 for _, r in release.table.iterrows()]
    else:
        frame = release.to_frame()
        measure = release.measures[0]
        keys = ([*release.dims, "part"] if "part" in frame else release.dims)
        for _, r in frame.iterrows():
            value = r[measure]
            rows.append((measure, " / ".join(str(r[k]) for k in keys if k in r),
                         math.nan if pd.isna(value) else float(value)))
    return pd.DataFrame(rows, columns=["metric", "subject", "value"])


@dataclass(frozen=True)
class Analysis:
    """One query of a recipe: its old release (None if it can no longer be read) and the
    new one the replay made."""

    index: int
    kind: str
    epsilon: float
    params: dict[str, Any]
    old: Release | None
    new: Release

    @property
    def title(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "where")
        return f"{self.index}: {self.kind}({shown})"


class Comparison:
    """The analyses of a recipe, old and new, side by side."""

    def __init__(self, analyses: list[Analysis], dataset: str) -> None:
        self.analyses, self.dataset = analyses, dataset

    @property
    def epsilon(self) -> float:
        """What the replay spent (cached repeats were free)."""
        return float(sum(0.0 if a.new.cached else a.new.epsilon for a in self.analyses))

    def to_frame(self) -> pd.DataFrame:
        """One row per compared number: ``analysis, kind, metric, subject, old, new, change``
        and the two release ids."""
        frames = []
        for a in self.analyses:
            new = summary(a.new).set_index(["metric", "subject"])["value"]
            old = (summary(a.old).set_index(["metric", "subject"])["value"]
                   if a.old is not None else pd.Series(np.nan, index=new.index))
            keys = list(dict.fromkeys([*old.index, *new.index]))  # old order, new ones last
            both = pd.DataFrame({"old": old.reindex(keys).to_numpy(),
                                 "new": new.reindex(keys).to_numpy()},
                                index=pd.MultiIndex.from_tuples(keys, names=["metric",
                                                                             "subject"]))
            frames.append(both.reset_index().assign(
                analysis=a.title, kind=a.kind,
                old_release=a.old.release_id if a.old is not None else None,
                new_release=a.new.release_id))
        out = pd.concat(frames, ignore_index=True)
        out["change"] = out["new"] - out["old"]
        return out[["analysis", "kind", "metric", "subject", "old", "new", "change",
                    "old_release", "new_release"]]

    def chart(self) -> alt.FacetChart:
        """Old (hollow) and new (filled) value of every compared number, one panel per
        analysis, a line between the two."""
        frame = self.to_frame()
        long = frame.melt(id_vars=["analysis", "metric", "subject"], value_vars=["old", "new"],
                          var_name="version", value_name="value").dropna(subset=["value"])
        long["item"] = long["metric"] + ": " + long["subject"]
        base = alt.Chart().encode(
            y=alt.Y("item:N", title=None, sort=None), x=alt.X("value:Q", title=None),
            tooltip=["analysis:N", "item:N", "version:N", alt.Tooltip("value:Q", format=".4g")])
        layered = alt.layer(
            base.mark_line(color="#999").encode(detail="item:N"),
            base.mark_point(size=60, filled=True).encode(
                color=alt.Color("version:N", sort=["old", "new"], title=None),
                shape=alt.Shape("version:N", sort=["old", "new"], title=None)),
            data=inline(long))
        chart: alt.FacetChart = layered.facet(row=alt.Row("analysis:N", title=None, header=alt.Header(
            labelAngle=0, labelAlign="left", labelLimit=400))).resolve_scale(
            x="independent", y="independent").properties(
            title={"text": f"replay on {self.dataset}: old and new",
                   "subtitle": f"epsilon spent {self.epsilon:g}"})
        return chart

    def __repr__(self) -> str:
        return (f"<Comparison {len(self.analyses)} analyses on {self.dataset!r}, "
                f"epsilon {self.epsilon:g}>")


def replay(recipe: Mapping[str, Any] | str | os.PathLike[str], dataset: Dataset, *,
           baseline: Session | None = None) -> Comparison:
    """Ask every query of ``recipe`` of ``dataset`` again (charged as usual) and pair each
    new release with the old one, read for free from ``baseline`` (default: the dataset's own
    session; pass the session of another service when the old releases live there).

    Every query is priced first (``/cost`` is free and checks the parameters against the new
    dataset's policy), so a recipe that does not fit the dataset or the budget spends nothing.
    """
    queries = load_recipe(recipe)["queries"]
    costs = [dataset.cost(q["kind"], epsilon=q["epsilon"], **q["params"]) for q in queries]
    need = sum(float(c["epsilon"]) for c in costs)
    left = float(costs[-1]["budget"]["remaining"])
    if need > left + 1e-9:
        raise PdebugError("budget_exceeded", f"the replay costs epsilon {need:g} on "
                          f"{dataset.name!r} and {left:.6g} remains; nothing was spent")
    source = baseline or dataset.session
    analyses = []
    for i, q in enumerate(queries):
        new = dataset.query(q["kind"], epsilon=q["epsilon"], **q["params"])
        analyses.append(Analysis(i + 1, q["kind"], float(q["epsilon"]), dict(q["params"]),
                                 _old(source, q.get("release_id")), new))
    return Comparison(analyses, dataset.name)


def _old(session: Session, release_id: Any) -> Release | None:
    if not isinstance(release_id, str):
        return None
    try:
        return session.release(release_id)
    except PdebugError as exc:  # purged by retention, or made on another service
        if exc.code in ("unknown_release", "not_found"):
            return None
        raise
