"""Redaction of personal-data patterns in text: emails, phones, SSNs, card numbers, IBANs.

Each pattern is a regular expression that finds candidates plus a check that keeps false
positives down, because ordinary numbers in notebook output (prices, years, counts, floats,
ids, dates, timestamps) must come through untouched:

* payment cards need 13-19 digits, a card network's leading digits and a valid Luhn digit;
* IBANs need a country that issues them, that country's length and the ISO 7064 mod-97 check;
* SSN-shaped numbers (``AAA-GG-SSSS``) skip the areas never issued as SSN or ITIN, 000 and
  666 (placeholders such as ``000-12-3456``). Area 900-999 (taxpayer numbers, ITINs, just as
  personal), group 00 and serial 0000 are redacted all the same: the dashed 3-2-4 shape is no
  ordinary number, and fake or test values (this project's canaries among them) still read
  as someone's SSN;
* phones need a leading ``+`` and 8-15 digits (E.164), or a North American
  ``(AAA) EEE-NNNN`` / ``AAA-EEE-NNNN`` shape, or a national number with a trunk ``0`` and
  10-12 digits in separated groups (``020 7946 0958``, ``01 23 45 67 89``);
* every pattern refuses to start or end inside a longer word or number (``0.4111...``,
  ``x4111...``), so digits of floats, hashes and ids are never cut out of their context.

A match is replaced by a marker such as ``[redacted email]``; markers match no pattern, so
redacting twice changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["KINDS", "iban_valid", "luhn_valid", "redact", "redact_bundle"]

KINDS = ("iban", "email", "card", "ssn", "phone")
"""What is redacted, in the order the patterns run."""

# Lengths of the IBANs each issuing country uses (ISO 13616 registry).
_IBAN_LENGTHS = {
    entry[:2]: int(entry[2:]) for entry in str.split(
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 "
        "DE22 DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 "
        "GT28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 "
        "LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 "
        "PS29 PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 "
        "TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30"
    )
}

# Leading digits of the card networks (Visa 4, Mastercard 51-55 and 2221-2720, Amex 34/37,
# Diners 30/36/38/39, JCB 35, Discover and UnionPay 6, Maestro 50/56-59). Epoch timestamps
# in ms, us or ns start with 1 until 2033, so they never look like a card.
_CARD_PREFIX = re.compile(r"4|5[0-9]|6|3[045689]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)")

# Each pattern starts with its first character and only then looks behind it ("a digit not
# after a word character"): a leading look-behind would stop the regex engine from skipping
# ahead to candidate characters, and redaction would run several times slower.
_A = re.ASCII
_DIGIT = re.compile("[0-9]")
_EMAIL = re.compile(
    r"[A-Za-z0-9](?<![\w.%+-][A-Za-z0-9])[A-Za-z0-9._%+-]{0,63}+"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])", _A)
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]){11,32}(?![A-Za-z0-9])",
                   _A)
_CARD = re.compile(
    r"\d(?<![\w.,+-]\d)(?:\d{12,18}|\d{3}([ -])\d{3,6}(?:\1\d{3,6}){1,3})(?![\w-]|[.,]\d)", _A)
_SSN = re.compile(r"(\d(?<![\w.,+-]\d)\d\d)([- ])\d{2}\2\d{4}(?![\w-]|[.,]\d)", _A)
_PHONE_INTL = re.compile(
    r"\+(?<![\w+]\+)\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,6})){1,6}(?![\w(]|[.,-]\d)", _A)
_PHONE_NANP = re.compile(
    r"(?:\((?<![\w.,+-]\()[2-9]\d\d\) ?\d{3}[-. ]\d{4}"
    r"|[2-9](?<![\w.,+-][2-9])\d\d(?:([-.])\d{3}\1| [2-9]\d\d )\d{4})(?![\w-]|[.,]\d)", _A)
_PHONE_TRUNK = re.compile(
    r"0(?<![\w.,+-]0)\d{1,4}([ /-])\d{2,8}(?:\1\d{2,8}){0,3}(?![\w/-]|[.,]\d)", _A)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check digit of payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Country length and the ISO 7064 mod-97 check of a compact, upper-case IBAN."""
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _marker(kind: str) -> str:
    return f"[redacted {kind}]"


def _iban(match: re.Match[str]) -> str:
    # The candidate may run on into following upper-case words ("... 0130 00 TOTAL"): the
    # country's length says where the IBAN ends, and the rest is given back untouched.
    text = match.group()
    length = _IBAN_LENGTHS.get(text[:2])
    if length is None:
        return text
    taken = end = 0
    while end < len(text) and taken < length:
        taken += text[end] != " "
        end += 1
    compact = text[:end].replace(" ", "")
    if not iban_valid(compact) or (end < len(text) and text[end] != " "):
        return text
    return _marker("iban") + text[end:]


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group())
    if _CARD_PREFIX.match(digits) and luhn_valid(digits):
        return _marker("card")
    return match.group()


def _ssn(match: re.Match[str]) -> str:
    return match.group() if match.group(1) in ("000", "666") else _marker("ssn")


def _phone_intl(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(ch.isdigit() for ch in text)
    seps = set(re.sub(r"[\d()+]", "", text))
    # a dot only as the sole separator: "+1234567.89" is a signed float, not a phone
    if not 8 <= digits <= 15 or ("." in seps and len(seps) > 1):
        return text
    return _marker("phone")


def _phone_trunk(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group())
    return _marker("phone") if 10 <= digits <= 12 else match.group()


Replacement = Callable[[re.Match[str]], str]
_STEPS: tuple[tuple[str, re.Pattern[str], Replacement | str], ...] = (
    ("iban", _IBAN, _iban),
    ("email", _EMAIL, _marker("email")),
    ("card", _CARD, _card),
    ("ssn", _SSN, _ssn),
    ("phone", _PHONE_INTL, _phone_intl),
    ("phone", _PHONE_NANP, _marker("phone")),
    ("phone", _PHONE_TRUNK, _phone_trunk),
)


# Terminal colour codes (tracebacks, colourful loggers): "\x1b[39mjane@..." must not read as
# the address "39mjane@...", so the text between codes is redacted piece by piece.
_ANSI = re.compile(r"(\x1b\[[0-9;?]*[A-Za-z])")


def redact(text: str) -> str:
    """``text`` with every email, phone, SSN, card number and IBAN replaced by a marker."""
    if "\x1b" in text:
        return "".join(part if i % 2 else _redact_plain(part)
                       for i, part in enumerate(_ANSI.split(text)))
    return _redact_plain(text)


def _redact_plain(text: str) -> str:
    has_at = "@" in text
    if not has_at and _DIGIT.search(text) is None:
        return text  # every pattern needs an "@" or a digit
    for kind, pattern, repl in _STEPS:
        if kind == "email" and not has_at:
            continue
        text = pattern.sub(repl, text)
    return text


# Base64 payloads: a pattern could only ever hit them by chance, and changing one breaks it.
_BINARY = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return value


def redact_bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    """A display mime bundle with every text (and JSON string) redacted; images untouched."""
    return {mime: value if mime in _BINARY else _redact_value(value)
            for mime, value in data.items()}
