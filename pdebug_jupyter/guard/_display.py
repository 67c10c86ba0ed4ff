"""The hooks into one IPython shell: formatters, display publishing, streams and tracebacks.

Where output leaves the kernel, and what the guard does there:

* every active formatter of ``shell.display_formatter`` (text/plain, text/html, markdown,
  latex, JSON, ...) and its mime-bundle formatter get a printer for each table type of
  :mod:`._frames`, so a sensitive frame gives its masked summary in text/plain and
  text/html and nothing in any other type, also inside a list or a tuple;
* ``display_formatter.format`` (``display(obj)`` and a cell's last expression) answers a
  sensitive table with the summary before ``_ipython_display_`` or ``_repr_mimebundle_`` can
  run, and redacts personal-data patterns in every other bundle;
* ``display_pub.publish`` (raw bundles, ``publish_display_data``, display updates) redacts;
* ``sys.stdout``/``sys.stderr`` ``write`` (ipykernel's streams, so ``print`` and C-level
  output that ipykernel forwards) redacts, chunk by chunk as written; a replaced
  ``sys.stdout`` is wrapped again before the next cell runs;
* ``shell._showtraceback`` redacts tracebacks and the exception's message.

``print(df)`` writes ``str(df)`` to stdout: redaction catches the emails, phones, SSNs, cards
and IBANs in it, not names or customer ids. All of it can be undone by the user: this is
accident prevention, the service is the boundary.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from ._columns import SensitiveColumns
from ._frames import DEFERRED_TYPES
from ._mask import Masked, masking
from ._patterns import redact, redact_bundle

__all__ = ["DisplayGuard"]

Key = tuple[str, str]


class DisplayGuard:
    """The guard installed on one shell; :meth:`uninstall` puts everything back."""

    def __init__(self, shell: Any, columns: SensitiveColumns) -> None:
        self.shell = shell
        self.columns = columns
        self.streams: list[str] = []  # which of stdout/stderr are redacted
        self._undo: list[Callable[[], None]] = []

    def masking(self, obj: Any) -> Masked | None:
        return masking(obj, self.columns)

    # -- installing ---------------------------------------------------------------------

    def install(self) -> None:
        fmt = self.shell.display_formatter
        for mime, formatter in fmt.formatters.items():
            self._register_all(formatter, functools.partial(self._printer, mime, formatter))
        self._register_all(fmt.mimebundle_formatter, self._bundle_printer)
        self._wrap(fmt, "format", self._format)
        self._wrap(self.shell.display_pub, "publish", self._publish)
        self._wrap(self.shell, "_showtraceback", self._traceback)
        self.guard_streams()
        # sys.stdout may be replaced later (a test runner, a capture): check before each cell
        self.shell.events.register("pre_run_cell", self.guard_streams)
        self._undo.append(lambda: self.shell.events.unregister("pre_run_cell",
                                                               self.guard_streams))

    def guard_streams(self, *info: Any) -> None:
        """Redact what is written to the current ``sys.stdout`` and ``sys.stderr``."""
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if getattr(getattr(stream, "__dict__", {}).get("write"), "pdebug_redacts", False):
                continue
            try:
                self._wrap(stream, "write", self._write)
            except (AttributeError, TypeError):
                continue  # a stream object without instance attributes: left as it is
            if name not in self.streams:
                self.streams.append(name)

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()
        self.streams = []

    def _wrap(self, owner: Any, name: str, make: Callable[[Callable[..., Any]], Any]) -> None:
        """Shadow ``owner.name`` with an instance attribute; undo removes only our own."""
        original = getattr(owner, name)
        had_own = name in getattr(owner, "__dict__", {})
        wrapper = make(original)
        setattr(owner, name, wrapper)

        def undo() -> None:
            if owner.__dict__.get(name) is wrapper:
                if had_own:
                    setattr(owner, name, original)
                else:
                    delattr(owner, name)
        self._undo.append(undo)

    def _register_all(self, formatter: Any, make: Callable[[Any], Callable[..., Any]]) -> None:
        """A printer per table type. An imported class goes in by type (a type printer
        already there would win over a deferred one); a class not imported yet (polars, say)
        goes in by name, which imports nothing. ``make(previous)`` builds the printer from
        the one registered before it, which it delegates to for tables it does not mask."""
        seen: set[type] = set()
        for key in DEFERRED_TYPES:
            module, name = key
            cls = getattr(sys.modules.get(module), name, None)
            if isinstance(cls, type):
                if cls in seen:
                    continue
                seen.add(cls)
                before = formatter.type_printers.get(cls)
                printer = make(before)
                formatter.for_type(cls, printer)
            else:
                before = formatter.deferred_printers.get(key)
                printer = make(before)
                formatter.for_type_by_name(module, name, printer)
            self._undo.append(_unregister(formatter, cls, key, printer, before))

    # -- printers -----------------------------------------------------------------------

    def _printer(self, mime: str, formatter: Any, previous: Any) -> Callable[..., Any]:
        if mime == "text/plain":
            def plain(obj: Any, p: Any, cycle: bool) -> Any:
                masked = self.masking(obj)
                if masked is not None:
                    return p.text(masked.text())
                if previous is not None:
                    return previous(obj, p, cycle)
                return _pretty_default(obj, p, cycle)
            return plain

        def rich(obj: Any) -> Any:
            masked = self.masking(obj)
            if masked is not None:
                return masked.html() if mime == "text/html" else None
            if previous is not None:
                return previous(obj)
            return _repr_method(obj, formatter.print_method)
        return rich

    def _bundle_printer(self, previous: Any) -> Callable[[Any], Any]:
        def bundle(obj: Any) -> Any:
            if self.masking(obj) is not None:
                return None  # the per-type printers give the summary
            if previous is not None:
                return previous(obj)
            return _repr_method(obj, "_repr_mimebundle_")
        return bundle

    # -- wrappers -----------------------------------------------------------------------

    def _format(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def format(obj: Any, include: Any = None, exclude: Any = None) -> Any:
            try:
                masked = self.masking(obj)
            except Exception as err:  # fail closed: an object we cannot inspect is not shown
                text = (f"<{type(obj).__name__}: not shown, the pdebug guard could not check "
                        f"it for personal data ({type(err).__name__})>")
                return {"text/plain": text}, {}
            if masked is not None:
                data = {m: v for m, v in masked.bundle().items()
                        if (not include or m in include) and not (exclude and m in exclude)}
                return redact_bundle(data), {}
            data, metadata = original(obj, include=include, exclude=exclude)
            return redact_bundle(data), metadata
        return format

    def _publish(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def publish(data: Any, *args: Any, **kwargs: Any) -> Any:
            return original(redact_bundle(data), *args, **kwargs)
        return publish

    def _write(self, original: Callable[[str], Any]) -> Callable[[str], Any]:
        def write(text: str) -> Any:
            if isinstance(text, str):
                original(redact(text))
                return len(text)
            return original(text)
        write.pdebug_redacts = True  # type: ignore[attr-defined]
        return write

    def _traceback(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def showtraceback(etype: Any, evalue: Any, stb: Any) -> Any:
            lines = [redact(line) for line in stb] if isinstance(stb, list) else stb
            return original(etype, _Message(redact(str(evalue))), lines)
        return showtraceback


class _Message:
    """Stands in for the exception value where the shell only takes ``str()`` of it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _unregister(formatter: Any, cls: Any, key: Key, printer: Any, before: Any
                ) -> Callable[[], None]:
    def undo() -> None:
        # a deferred printer moves to type_printers once its class is seen: look in both
        for table in (formatter.type_printers, formatter.deferred_printers):
            for k in [k for k, v in table.items() if v is printer]:
                del table[k]
        if before is not None:
            if isinstance(cls, type):
                formatter.type_printers[cls] = before
            else:
                formatter.deferred_printers[key] = before
    return undo


def _repr_method(obj: Any, name: str) -> Any:
    from IPython.utils.dir2 import get_real_method

    method = get_real_method(obj, name)
    return method() if method is not None else None


def _pretty_default(obj: Any, p: Any, cycle: bool) -> Any:
    """What IPython's pretty printer does for an object with no printer of its own."""
    own = getattr(type(obj), "_repr_pretty_", None)
    if callable(own):
        return own(obj, p, cycle)
    with p.group():
        for i, line in enumerate(repr(obj).splitlines()):
            if i:
                p.break_()
            p.text(line)
