"""A release as the kernel sees it: released cells and metadata, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd


class Release:
    """A differentially private release. Everything computed from it is free post-processing."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.payload = dict(payload)

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

    @property
    def dims(self) -> list[str]:
        return [d["column"] for d in self.payload["dims"]]

    @property
    def measures(self) -> list[str]:
        return list(self.payload["measures"])

    def to_frame(self) -> pd.DataFrame:
        """One row per cell of the declared domain (``other`` included), in release order.

        Measures of suppressed cells are missing (``<NA>``); ``<measure>_ci95`` is the
        half-width of the 95% interval of the DP noise on that measure.
        """
        frame = pd.DataFrame(self.payload["cells"], columns=self.dims + self.measures)
        for dim in self.payload["dims"]:
            frame[dim["column"]] = pd.Categorical(frame[dim["column"]], dim["labels"],
                                                  ordered=bool(dim.get("bins")))
        for m in self.measures:
            frame[m] = frame[m].astype("Int64")
        frame["suppressed"] = frame[self.measures[0]].isna()
        for n in self.payload["noise"]:
            frame[f"{n['measure']}_ci95"] = n["ci95_half_width"]
        return frame

    def __repr__(self) -> str:
        state = "cached" if self.cached else "new"
        return (f"<Release {self.release_id} {self.kind} on {self.dataset}: epsilon="
                f"{self.epsilon:g} ({state}), {len(self.payload['cells'])} cells, "
                f"{len(self.payload['suppressed'])} suppressed>")
