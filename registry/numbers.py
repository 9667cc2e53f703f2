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


#: what parse_position reads a number of more significant digits than MAX_DIGITS as: past every size
BEYOND = 10**MAX_DIGITS


def parse_position(text: str) -> int:
    """A byte position or count from a header (Range, Content-Range): ASCII digits of any length, where
    one with more significant digits than any size has is BEYOND, a number past every size: so that
    such a range is judged as HTTP says (past the end, or not the chunk's length), never a crash."""
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f"expected a whole number, not {text[:40]!r}")
    significant = text.lstrip("0")
    return BEYOND if len(significant) > MAX_DIGITS else int(significant or "0")