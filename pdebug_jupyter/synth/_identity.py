"""Personal-data columns of the synthetic loans table: the canaries of leak tests.

Names come from short lists of common US first and last names; emails, SSN-shaped and
phone-shaped values are built from the row index through seeded bijections, so they are
unique without tracking what was already drawn and never belong to a real person.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["identity_columns"]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _words(text: str) -> tuple[str, ...]:
    # Name lists read better as text than as 100-line literals.
    return tuple(text.split())


_FIRST_FEMALE = _words(
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty "
    "Sandra Margaret Ashley Kimberly Emily Donna Michelle Carol Amanda Melissa Deborah "
    "Stephanie Rebecca Sharon Laura Cynthia Amy Kathleen Angela Shirley Brenda Emma Anna "
    "Pamela Nicole Samantha Katherine Christine Helen Debra Rachel Carolyn Janet Maria "
    "Catherine Heather Diane"
)
_FIRST_MALE = _words(
    "James Robert John Michael David William Richard Joseph Thomas Christopher Charles Daniel "
    "Matthew Anthony Mark Donald Steven Andrew Paul Joshua Kenneth Kevin Brian George Timothy "
    "Ronald Jason Edward Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Stephen Larry Justin "
    "Scott Brandon Benjamin Samuel Gregory Alexander Patrick Frank Raymond Jack Dennis Jerry"
)
_LAST = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White "
    "Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres "
    "Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts "
    "Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales "
    "Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos "
    "Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes "
    "Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jenkins"
)
_FIRST = pa.array(_FIRST_FEMALE + _FIRST_MALE)
_FIRST_LOWER = pc.utf8_lower(_FIRST)
_LAST_ARR = pa.array(_LAST)
_LAST_LOWER = pc.utf8_lower(_LAST_ARR)


def _permutation(seed: int, which: int, modulus: int) -> tuple[int, int]:
    """Multiplier and offset of a bijection i -> (a * i + b) % modulus.

    ``modulus`` is a power of ten and ``a`` is coprime to it, so identifiers built from the
    row index are unique (up to ``modulus`` rows) without tracking what was already drawn.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, which)))
    a = 10 * int(rng.integers(modulus // 100, modulus // 10)) + int(rng.choice([1, 3, 7, 9]))
    return a, int(rng.integers(0, modulus))


# "0000" .. "9999" as 4-byte words: one division and one gather give four digits.
_DIGITS4 = np.frombuffer("".join(f"{i:04d}" for i in range(10_000)).encode(), dtype=np.uint32)


def _write_digits(out: npt.NDArray[np.uint8], values: IntArray) -> None:
    """Write ``values`` zero-padded into the ASCII matrix ``out`` (one row per value)."""
    rest = values.astype(np.uint32)  # uint32 divides faster than int64; values < 10**9
    end = out.shape[1]
    while end > 0:
        width = min(4, end)
        rest, group = np.divmod(rest, np.uint32(10**width))
        words = _DIGITS4[group].view(np.uint8).reshape(-1, 4)
        out[:, end - width : end] = words[:, 4 - width :]
        end -= width


def _fixed_strings(*parts: str | tuple[IntArray, int]) -> pa.Array:
    """Fixed-width ASCII strings from literals and zero-padded ``(values, width)`` numbers.

    Building the bytes in one numpy matrix is several times faster than casting and joining
    Arrow string arrays, and identifiers are most of the generation time.
    """
    m = next(p[0].size for p in parts if isinstance(p, tuple))
    widths = [len(p) if isinstance(p, str) else p[1] for p in parts]
    text = np.empty((m, sum(widths)), dtype=np.uint8)
    pos = 0
    for part, width in zip(parts, widths, strict=True):
        if isinstance(part, str):
            text[:, pos : pos + width] = np.frombuffer(part.encode("ascii"), dtype=np.uint8)
        else:
            _write_digits(text[:, pos : pos + width], part[0])
        pos += width
    offsets = np.arange(m + 1, dtype=np.int32) * text.shape[1]
    return pa.StringArray.from_buffers(m, pa.py_buffer(offsets), pa.py_buffer(text))


def identity_columns(
    rng: np.random.Generator, rows: IntArray, male: BoolArray, female: BoolArray, seed: int
) -> dict[str, pa.Array]:
    """Personal data: fictitious names, emails, SSN-shaped and phone-shaped values.

    ``male`` and ``female`` mark the rows whose first name is drawn from that list; the
    others get either list with equal odds.
    """
    half = len(_FIRST_FEMALE)
    pick = rng.integers(0, half, rows.size)
    first = pa.array(np.where(male | (~female & (rng.random(rows.size) < 0.5)), pick + half, pick))
    last = pa.array(rng.integers(0, len(_LAST), rows.size))
    a, b = _permutation(seed, 0, 10**8)
    mailbox = _fixed_strings(((a * rows + b) % 10**8, 8), "@example.com")
    a, b = _permutation(seed, 1, 10**8)
    ssn = (a * rows + b) % 10**8  # area 900-999 is never issued, so never a real SSN
    a, b = _permutation(seed, 2, 10**6)
    phone = (a * rows + b) % 10**6  # 555-01XX is the reserved fictitious range
    return {
        "customer_id": _fixed_strings("C", (rows + 1, 8)),
        "name": pc.binary_join_element_wise(_FIRST.take(first), _LAST_ARR.take(last), " "),
        "email": pc.binary_join_element_wise(
            _FIRST_LOWER.take(first), _LAST_LOWER.take(last), mailbox, "."
        ),
        "ssn": _fixed_strings(
            "9", (ssn // 10**6, 2), "-", (ssn // 10**4 % 100, 2), "-", (ssn % 10**4, 4)
        ),
        "phone": _fixed_strings("+1-555-01", (phone // 10**4, 2), "-", (phone % 10**4, 4)),
    }
