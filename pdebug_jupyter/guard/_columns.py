"""Which column names are sensitive: the connected policy's, plus name patterns.

A column is sensitive when the policy declares it an ``identifier`` or ``protected`` column,
or when its name matches one of the name patterns. Names are compared in a normal form
(``CustomerID``, ``customer-id`` and ``customer_id`` are all ``customer_id``), and a pattern
must match whole ``_``-separated tokens, so ``tel`` finds ``home_tel`` but not ``hotel``.

One exception keeps released cubes readable: a ``protected`` column whose values are a
categorical type over the policy's public categories (plus ``other``) is a release's group
axis, not a person's attribute, and does not mask the frame.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_PATTERNS", "PolicyColumn", "SensitiveColumns", "normal_name"]

DEFAULT_PATTERNS: Mapping[str, str] = MappingProxyType({
    # a bare "name" or a person's name, but not model_name or feature_name
    "a person's name": r"^(?:(?:first|last|full|given|family|middle|maiden|customer|client"
                       r"|patient|person|user|employee|contact|holder|member)_)?name$"
                       r"|(?:first|last|full|given|family|middle|maiden|user|sur)name",
    "an email address": r"e_?mail",
    "a phone number": r"phone|telephone|mobile|tel|fax|msisdn",
    "a national or tax id": r"ssn|social_security|national_id|national_insurance|passport"
                            r"|driver_?s?_?licen[cs]e|tax_id|itin|nhs_number",
    "an address": r"address|street|zip|zip_?code|post_?code|postal_code",
    "a birth date": r"dob|birth|birth_?date|birth_?day|date_of_birth",
    "a bank or card number": r"iban|card_?number|credit_?card|account_?number"
                             r"|routing_?number|sort_?code",
    "a network id": r"ip|ip_?address|mac_?address|imei",
    "a person's id": r"(?:customer|client|patient|person|user|employee|member|subscriber"
                     r"|account|citizen)_?id",
})
"""Name patterns of personal data: what the name looks like -> a regular expression over the
normal name, matched on whole words. Extend with ``enable(extra_patterns=[...])``."""

SENSITIVE_KINDS = ("identifier", "protected")


def normal_name(name: object) -> str:
    """``CustomerID`` -> ``customer_id``: split camel case, lower, runs of non-alnum to ``_``."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", str(name))
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


@dataclass(frozen=True)
class PolicyColumn:
    """A sensitive column of a dataset policy, from the service's public schema."""

    name: str
    kind: str
    source: str  # where it was declared: "policy dataset 'loans'", "guard settings"
    categories: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SensitiveColumns:
    """Policy columns by normal name, plus name patterns."""

    policy: Mapping[str, PolicyColumn] = field(default_factory=dict)
    patterns: tuple[tuple[str, str], ...] = tuple(DEFAULT_PATTERNS.items())  # (label, regex)

    @classmethod
    def from_schemas(cls, schemas: Iterable[Mapping[str, Any]]) -> SensitiveColumns:
        """From ``GET /datasets`` entries: their identifier and protected columns."""
        policy: dict[str, PolicyColumn] = {}
        for ds in schemas:
            for col in ds.get("columns", []):
                if col.get("kind") in SENSITIVE_KINDS:
                    cats = frozenset(str(c) for c in col.get("categories") or ())
                    known = policy.get(normal_name(col["name"]))
                    if known is not None and known.kind == "identifier":
                        continue  # an identifier anywhere outranks a protected elsewhere
                    policy[normal_name(col["name"])] = PolicyColumn(
                        str(col["name"]), str(col["kind"]),
                        f"policy dataset {ds.get('name', '?')!r}", cats)
        return cls(policy, ())

    @classmethod
    def from_declared(cls, declared: Mapping[str, PolicyColumn]) -> SensitiveColumns:
        return cls({normal_name(n): c for n, c in declared.items()}, ())

    def with_patterns(self, extra: Iterable[str]) -> SensitiveColumns:
        """Plus the user's patterns: plain words (``"NHS number"``) or regular expressions."""
        added = []
        for text in extra:
            regex = normal_pattern(text)
            try:
                _token_regex(regex)
            except re.error as err:
                raise ValueError(f"not a valid name pattern {text!r}: {err}") from None
            if all(regex != known for _, known in self.patterns):
                added.append((text, regex))
        return replace(self, patterns=self.patterns + tuple(added))

    def with_policy(self, other: SensitiveColumns) -> SensitiveColumns:
        return replace(self, policy={**self.policy, **other.policy})

    def reason(self, name: object, categories: Iterable[str] | None = None) -> str | None:
        """Why a column of this name (and these categories, if categorical) is sensitive,
        or ``None`` when it is not."""
        norm = normal_name(name)
        col = self.policy.get(norm)
        if col is not None:
            if col.kind == "protected" and categories is not None and \
                    set(categories) <= col.categories | {"other"}:
                return None  # a release's group axis over public categories
            return f"{col.kind} in {col.source}"
        for label, regex in self.patterns:
            if _token_regex(regex).search(norm):
                return f"name looks like {label}"
        return None

    def describe(self) -> str:
        """One line for ``%pdebug status``."""
        by_kind: dict[str, list[str]] = {}
        for col in self.policy.values():
            by_kind.setdefault(col.kind, []).append(col.name)
        parts = [f"{', '.join(sorted(names))} ({kind})" for kind, names in sorted(by_kind.items())]
        parts.append(f"names matching {len(self.patterns)} personal-data patterns")
        return "; ".join(parts)


def normal_pattern(text: str) -> str:
    """A user's pattern: plain words (``"NHS number"``) become their normal name; anything
    with regex syntax is kept as it is."""
    return normal_name(text) if re.fullmatch(r"[\w\s-]+", text) else text


@functools.lru_cache(maxsize=512)
def _token_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?:^|_)(?:{pattern})(?:_|$)")

