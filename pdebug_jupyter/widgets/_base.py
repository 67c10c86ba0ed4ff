"""The widget base: pickers from the public schema, a free cost preview, an explicit Run.

Nothing spends budget without a click: changing a picker asks the service what the query
would cost (free), and only the ``run`` message from the Run button makes a release. The
synced state holds public schema facts, the user's choices and what a release's views
computed; never a row. The wire format lives here and in ``js/widget/model.ts``.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, ClassVar

import anywidget
import traitlets as t

from ..client import Dataset, PdebugError, Release

STATIC = Path(__file__).resolve().parent.parent / "static"
_ESM = STATIC / "widget.js"
_CSS = STATIC / "widget.css"

Control = dict[str, Any]


def built() -> None:
    """Fail with what to do when the front end was never built (a bare source checkout)."""
    if not _ESM.exists():
        raise ImportError(f"the widget front end is missing ({_ESM}): this checkout was "
                          "installed without building it; run `npm install && npm run build` "
                          "or reinstall with pip")


def select(name: str, label: str, options: list[Any], value: Any, *,
           multiple: bool = False) -> Control:
    """A picker: ``options`` are public values (column names or declared categories)."""
    return {"name": name, "label": label, "type": "multiselect" if multiple else "select",
            "options": [{"value": o, "label": "—" if o is None else str(o)} for o in options],
            "value": value}


def columns_of(schema: dict[str, Any], *kinds: str) -> list[str]:
    return [c["name"] for c in schema["columns"] if c["kind"] in kinds]


def column(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in schema["columns"] if c["name"] == name)


class Explorer(anywidget.AnyWidget):  # type: ignore[misc]
    """One analysis of one dataset: pickers, cost preview, Run, chart with intervals."""

    view: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    _esm = _ESM
    _css = _CSS
    widget = t.Unicode().tag(sync=True)
    dataset_name = t.Unicode().tag(sync=True)
    badge = t.Unicode().tag(sync=True)
    controls = t.List(t.Dict()).tag(sync=True)
    params = t.Dict().tag(sync=True)
    epsilon = t.Float(0.1).tag(sync=True)
    cost = t.Dict().tag(sync=True)
    status = t.Dict().tag(sync=True)
    release = t.Dict().tag(sync=True)
    spec = t.Dict().tag(sync=True)
    table = t.Dict().tag(sync=True)

    def __init__(self, dataset: Dataset, *, epsilon: float = 0.1, **params: Any) -> None:
        if not isinstance(dataset, Dataset):
            raise TypeError(f"{type(self).__name__} takes a Dataset from session.dataset(...), "
                            f"not {type(dataset).__name__}")
        self._dataset = dataset
        self.result: Release | None = None
        schema = dataset.schema
        controls = self._controls(schema)
        known = {c["name"] for c in controls}
        unknown = sorted(set(params) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) "
                            f"{', '.join(unknown)}; it takes epsilon= and {', '.join(sorted(known))}")
        values = {c["name"]: params.get(c["name"], c["value"]) for c in controls}
        for c in controls:
            c["value"] = values[c["name"]]
        built()
        super().__init__(widget=self.view,
                         dataset_name=dataset.name, controls=controls, params=values,
                         epsilon=float(epsilon),
                         badge="synthetic data" if schema.get("synthetic") else "private data",
                         status={"state": "idle", "message": "pick, check the cost, then Run"})
        self._display: Any = None
        self.on_msg(self._on_message)
        self.observe(self._preview, names=["params", "epsilon"])
        self._preview()
        if self.cost.get("cached"):  # already released (by anyone): showing it is free
            self.run()

    @classmethod
    def from_release(cls, dataset: Dataset, release_id: str) -> Explorer:
        """The explorer as it was when ``release_id`` was made, e.g. by a colleague in a
        shared notebook (whose outputs record it): drawn from the service's cache, free."""
        release = dataset.session.release(release_id)
        if release.kind != cls.kind or release.dataset != dataset.name:
            raise PdebugError("invalid_parameter", f"release {release_id} is a {release.kind} "
                              f"release of {release.dataset!r}, not a {cls.kind} release of "
                              f"{dataset.name!r}")
        explorer = cls(dataset, epsilon=release.epsilon, **cls._params_of(release))
        if explorer.result is None or explorer.result.release_id != release_id:
            explorer._show(release)
        return explorer

    @classmethod
    def _params_of(cls, release: Release) -> dict[str, Any]:
        """The picker values that ask ``release``'s query again."""
        raise NotImplementedError

    # what each explorer defines -------------------------------------------------------
    def _controls(self, schema: dict[str, Any]) -> list[Control]:
        raise NotImplementedError

    def _query(self, params: dict[str, Any]) -> dict[str, Any]:
        """The service query for the picked ``params`` (the kind's keyword arguments)."""
        raise NotImplementedError

    def _views(self, release: Release) -> dict[str, Any]:
        """Trait values drawn from a release: ``spec`` and ``table`` at least."""
        raise NotImplementedError

    # the protocol -----------------------------------------------------------------------
    def _on_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("type") == "run":
            self.run()
        elif content.get("type") == "preview":
            self._preview()

    def _preview(self, _change: Any = None) -> None:
        try:
            cost = self._dataset.cost(self.kind, epsilon=self.epsilon, **self._query(self.params))
        except PdebugError as err:
            self.cost = {"error": {"code": err.code, "message": err.message}}
            return
        self.cost = {"epsilon": cost["epsilon"], "cached": cost["cached"],
                     "affordable": cost["affordable"], "cells": cost["cells"],
                     "noise_scale": cost["noise_scale"], "threshold": cost["threshold"],
                     "remaining": cost["budget"]["remaining"]}

    def run(self) -> Release | None:
        """Release the picked query (what the Run button does); the widget shows the
        result, or the reason it was refused, and stays usable either way."""
        self.status = {"state": "running", "message": "asking the privacy service…"}
        try:
            release = self._dataset.query(self.kind, epsilon=self.epsilon,
                                          **self._query(self.params))
            views = self._views(release)
        except PdebugError as err:
            self.status = {"state": "error", "code": err.code, "message": err.message}
            self._preview()
            return None
        self._show(release, views)
        self._preview()
        if self._display is not None:  # the saved output now records the release
            data, meta = self._repr_mimebundle_()
            self._display.update(data, metadata=meta, raw=True)
        _notify(self._dataset)
        return release

    def _show(self, release: Release, views: dict[str, Any] | None = None) -> None:
        views = self._views(release) if views is None else views
        self.result = release
        with self.hold_sync():
            self.release = release_summary(release)
            for name, value in views.items():
                setattr(self, name, value)
            spent = "no budget (cached)" if release.cached else f"ε={release.epsilon:g}"
            self.status = {"state": "done", "message": f"released: {spent}"}

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        bundle = super()._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        data, meta = dict(data or {}), dict(meta or {})
        if self.result is not None:
            meta = {**meta, "pdebug": self.result.metadata()}
        return data, meta

    def _ipython_display_(self) -> None:
        from IPython.display import display

        data, meta = self._repr_mimebundle_()
        self._display = display(data, metadata=meta, raw=True,  # type: ignore[no-untyped-call]
                                display_id=True)


def release_summary(release: Release) -> dict[str, Any]:
    """What the badge and the footnote show: who released what, when, at what cost."""
    prov = release.provenance
    return {"release_id": release.release_id, "kind": release.kind,
            "epsilon": release.epsilon, "cached": release.cached,
            "threshold": release.threshold, "suppressed": len(release.suppressed),
            "cells": len(release.payload["cells"]),
            "user": prov["user"], "created_at": prov["created_at"],
            "query_hash": prov["query_hash"], "synthetic": bool(prov.get("synthetic"))}


METERS: weakref.WeakSet[Any] = weakref.WeakSet()
"""The live budget meters of this kernel (each has ``on_release(dataset)``)."""


def _notify(dataset: Dataset) -> None:
    """Tell the budget meters of this kernel that budget may have moved."""
    for meter in list(METERS):
        meter.on_release(dataset)
