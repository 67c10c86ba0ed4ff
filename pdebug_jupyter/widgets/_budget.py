"""BudgetMeter: what each dataset's budget has left, for this user, live in the notebook."""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets as t

from ..client import Dataset, PdebugError, Session
from ._base import _CSS, _ESM, METERS, built


class BudgetMeter(anywidget.AnyWidget):  # type: ignore[misc]
    """Spent and remaining epsilon per dataset; refreshes after every run of an explorer in
    this kernel and on its Refresh button (reading the budget is free)."""

    _esm = _ESM
    _css = _CSS
    widget = t.Unicode("budget").tag(sync=True)
    datasets = t.List(t.Dict()).tag(sync=True)
    user = t.Dict().tag(sync=True)
    status = t.Dict().tag(sync=True)

    def __init__(self, session: Session | Dataset) -> None:
        if isinstance(session, Dataset):
            session = session.session
        if not isinstance(session, Session):
            raise TypeError("BudgetMeter takes a Session from pdj.connect() or a Dataset, "
                            f"not {type(session).__name__}")
        self._session = session
        built()
        super().__init__()
        self.on_msg(lambda _w, content, _b: self.refresh()
                    if content.get("type") == "refresh" else None)
        METERS.add(self)
        self.refresh()

    def on_release(self, dataset: Dataset) -> None:
        if dataset.session is self._session:
            self.refresh()

    def refresh(self) -> None:
        try:
            me = self._session.me
            budgets = self._session.budget()
        except PdebugError as err:
            self.status = {"state": "error", "code": err.code, "message": err.message}
            return
        with self.hold_sync():
            self.user = {"name": me.get("user"), "role": me.get("role")}
            self.datasets = [{"name": name, **_numbers(b)} for name, b in budgets.items()]
            self.status = {"state": "done", "message": ""}


def _numbers(budget: dict[str, Any]) -> dict[str, float]:
    return {k: float(budget[k]) for k in ("limit", "spent", "remaining") if k in budget}
