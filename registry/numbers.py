"""Whole numbers from text a client or an operator wrote: ASCII digits only, of bounded length.

Python's int() accepts what no HTTP header or query parameter means ("²" passes isdigit(),
"1_000" and " 7" pass int()) and raises on more than 4,300 digits; every number that comes
from outside is read here instead, so each caller can say in its own words what was wrong.
"""

from __future__ import annotations

#: 20 digits hold any 64-bit count of bytes; longer is never a real size, offset or page
MAX_DIGITS = 20


def parse_natural(text: str, max_digits: int = MAX_DIGITS) -> int:
    """A non-negative integer written in ASCII digits; ValueError for anything else."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        raise ValueError(f"expected a whole number of at most {max_digits} digits, not {text[:40]!r}")
    return int(text)
