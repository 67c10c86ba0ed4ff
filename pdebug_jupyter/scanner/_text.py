"""Personal-data patterns and canary values in text.

The patterns are the guard's (:mod:`pdebug_jupyter.guard._patterns`): a text holds a
personal-data value exactly when the guard's redaction would change it, and the markers it
writes say which kinds and how many. Findings name kinds and counts, never the values, so a
CI log does not repeat the leak it reports.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..guard._patterns import KINDS, redact

__all__ = ["KIND_LABELS", "Canaries", "pattern_counts"]

KIND_LABELS = {
    "email": "email address",
    "phone": "phone number",
    "ssn": "SSN-shaped number",
    "card": "payment card number (Luhn)",
    "iban": "IBAN (mod 97)",
}
assert set(KIND_LABELS) == set(KINDS)


def pattern_counts(text: str, *, is_html: bool = False) -> Counter[str]:
    """How many values of each personal-data kind ``text`` holds."""
    if is_html:
        text = html.unescape(text)  # "jane&#64;example.com" is an address all the same
    redacted = redact(text)
    found: Counter[str] = Counter()
    if redacted == text:
        return found
    for kind in KINDS:
        marker = f"[redacted {kind}]"
        n = redacted.count(marker) - text.count(marker)
        if n > 0:
            found[kind] = n
    return found


class Canaries:
    """Values that must never appear in a notebook (``canaries.txt``: one per line).

    Matched case-insensitively and not inside a longer word or number (``C00000001`` is not
    found in ``C000000012``). Values shorter than :attr:`MIN_LENGTH` are ignored: a canary
    ``"1"`` would be found in every notebook.

    One regular expression of a thousand alternatives takes a minute over the few megabytes
    of a notebook's saved widget state, so the search goes by words instead: each value is
    looked up by its longest run of letters and digits, and only where the text has that
    run is the whole value compared.
    """

    MIN_LENGTH = 4

    def __init__(self, values: Iterable[str]) -> None:
        kept = sorted({v.strip() for v in values if len(v.strip()) >= self.MIN_LENGTH})
        self.values = tuple(kept)
        self._by_run: dict[str, list[tuple[int, str]]] = {}
        self._plain: list[str] = []  # values without an ASCII letter or digit
        for value in kept:
            runs = list(_RUN.finditer(value))
            if not runs:
                self._plain.append(value.lower())
                continue
            key = max(runs, key=lambda m: len(m.group()))
            self._by_run.setdefault(key.group().lower(), []).append((key.start(), value.lower()))

    @classmethod
    def from_file(cls, path: str | Path) -> Canaries:
        return cls(Path(path).read_text(encoding="utf-8").splitlines())

    def __len__(self) -> int:
        return len(self.values)

    def found(self, text: str, *, is_html: bool = False) -> set[str]:
        """The distinct canary values (lower-cased) in ``text``."""
        if not self.values:
            return set()
        if is_html:
            text = html.unescape(text)
        found = {v for v in self._plain if v in text.lower()}
        for run in _RUN.finditer(text):
            for offset, value in self._by_run.get(run.group().lower(), ()):
                start, end = run.start() - offset, run.start() - offset + len(value)
                if start >= 0 and text[start:end].lower() == value and \
                        not _alnum(text[start - 1:start]) and not _alnum(text[end:end + 1]):
                    found.add(value)
        return found


_RUN = re.compile(r"[A-Za-z0-9]+")


def _alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()
