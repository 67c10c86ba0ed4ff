"""A release as the kernel sees it: released cells and metadata, nothing else."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .transport import PdebugError

ChartBuilder = Callable[..., Any]
"""Draws one view of a release: ``builder(release, **options)`` returns an Altair chart."""


class Release:
    """A differentially private release. Everything computed from it is free post-processing.

    :meth:`of` picks the subclass registered for the release's kind (the metrics layer adds
    calibration, fairness, drift and other views), so the client never imports metrics.
    Charts are looked up the same way: :meth:`chart` calls the builder that the charts layer
    registered for the release's kind with :meth:`register_chart`.
    """

    _kinds: dict[str, type[Release]] = {}
    _charts: dict[str, ChartBuilder] = {}

    @classmethod
    def register(cls, kind: str) -> Any:
        def add(sub: type[Release]) -> type[Release]:
            cls._kinds[kind] = sub
            return sub
        return add

    @classmethod
    def register_chart(cls, view: str) -> Callable[[ChartBuilder], ChartBuilder]:
        """Register the builder of ``view``: a release kind, or a named extra view such as
        ``"confusion.roc"``. The charts layer registers its builders on import."""
        def add(builder: ChartBuilder) -> ChartBuilder:
            cls._charts[view] = builder
            return builder
        return add

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> Release:
        return cls._kinds.get(payload["kind"], Release)(payload)

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.payload = dict(payload)
        self._parts = {p["name"]: p for p in self.payload["parts"]}

    release_id = property(lambda self: self.payload["release_id"])
    kind = property(lambda self: self.payload["kind"])
    dataset = property(lambda self: self.payload["dataset"])
    epsilon = property(lambda self: self.payload["epsilon"])
    cached = property(lambda self: self.payload["cached"])
    mechanism = property(lambda self: self.payload["mechanism"])
    noise_scale = property(lambda self: self.payload["noise_scale"])
    threshold = property(lambda self: self.payload["threshold"])
    suppressed = property(lambda self: list(self.payload["suppressed"]))
    provenance = property(lambda self: dict(self.payload["provenance"]))
    budget = property(lambda self: dict(self.payload["budget"]))
    params = property(lambda self: dict(self.payload["params"]))

    @property
    def warnings(self) -> list[dict[str, Any]]:
        """Notices about this reply, e.g. ``{"code": "budget_alert", "threshold": 0.8, ...}``
        when this release took a budget past an alert threshold (empty when cached)."""
        return [dict(w) for w in self.payload.get("warnings", [])]

    @property
    def parts(self) -> list[str]:
        """Names of the released cubes (one for most kinds; one per column for drift)."""
        return list(self._parts)

    def part(self, name: str | None = None) -> dict[str, Any]:
        if name is None:
            return dict(self.payload["parts"][0])
        if name not in self._parts:
            raise KeyError(f"no part {name!r} in this release (parts: {', '.join(self._parts)})")
        return dict(self._parts[name])

    @property
    def dims(self) -> list[str]:
        return [d["column"] for d in self.part()["dims"]]

    @property
    def measures(self) -> list[str]:
        return list(self.part()["measures"])

    def _cells(self, name: str | None) -> list[dict[str, Any]]:
        if len(self._parts) == 1:
            return list(self.payload["cells"])
        part = self.part(name)["name"]
        return [c for c in self.payload["cells"] if c["part"] == part]

    def arrays(self, part: str | None = None) -> dict[str, np.ndarray]:
        """Each measure as a float array over the cube's cells (``other`` last on each axis);
        suppressed cells are NaN. This is what the metrics work on."""
        spec = self.part(part)
        shape = tuple(len(d["labels"]) for d in spec["dims"])
        cells = self._cells(part)
        assert len(cells) == math.prod(shape)
        return {m: np.array([np.nan if c[m] is None else c[m] for c in cells],
                            dtype=float).reshape(shape)
                for m in spec["measures"]}

    def frame(self, part: str | None = None) -> pd.DataFrame:
        """One cube as a frame: one row per cell of the declared domain, in release order.

        Measures of suppressed cells are missing (``<NA>``); ``<measure>_ci95`` is the
        half-width of the 95% interval of the DP noise on that measure.
        """
        spec = self.part(part)
        dims = [d["column"] for d in spec["dims"]]
        frame = pd.DataFrame(self._cells(part), columns=dims + spec["measures"])
        for dim in spec["dims"]:
            frame[dim["column"]] = pd.Categorical(frame[dim["column"]], dim["labels"],
                                                  ordered=bool(dim.get("bins")))
        for m in spec["measures"]:
            frame[m] = frame[m].astype("Int64")
        frame["suppressed"] = frame[spec["measures"][0]].isna()
        for n in spec["noise"]:
            frame[f"{n['measure']}_ci95"] = n["ci95_half_width"]
        return frame

    def to_frame(self) -> pd.DataFrame:
        """The released cells; with several cubes, stacked with a ``part`` column."""
        if len(self._parts) == 1:
            return self.frame()
        frames = [self.frame(p).assign(part=p) for p in self._parts]
        return pd.concat(frames, ignore_index=True)

    def chart(self) -> Any:
        """This release drawn as an Altair chart from its released cells only (free).

        Suppressed cells are marked as such, error bars are the intervals the release or its
        metrics give, and the subtitle names the epsilon spent and the release id.
        """
        return self._chart(self.kind)

    def _chart(self, view: str, **options: Any) -> Any:
        builder = Release._charts.get(view)
        if builder is None:
            raise PdebugError("no_chart", f"no chart is registered for {view!r}; charts come "
                              "from pdebug_jupyter.charts, imported by pdebug_jupyter")
        return builder(self, **options)

    def metadata(self) -> dict[str, Any]:
        """What a notebook output of this release records (``output.metadata["pdebug"]``):
        enough for a colleague to fetch the same release from the service's cache for free
        (``session.release(release_id)``) and to see who released it, when and why."""
        prov = self.provenance
        return {"release_id": self.release_id, "kind": self.kind, "dataset": self.dataset,
                "epsilon": self.epsilon, "query_hash": prov.get("query_hash"),
                "query": prov.get("query"), "user": prov.get("user"),
                "purpose": prov.get("purpose"), "created_at": prov.get("created_at"),
                "synthetic": bool(prov.get("synthetic")), "provenance": prov}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"text/plain": repr(self)}, {"pdebug": self.metadata()}

    def __repr__(self) -> str:
        state = "cached" if self.cached else "new"
        return (f"<Release {self.release_id} {self.kind} on {self.dataset}: epsilon="
                f"{self.epsilon:g} ({state}), {len(self.payload['cells'])} cells, "
                f"{len(self.payload['suppressed'])} suppressed>")
