"""The `n`/`last` pagination shared by the tags list and the catalog."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Mapping

from .errors import RegistryError
from .numbers import parse_natural

MAX_PAGE_SIZE = 10_000


@dataclass(frozen=True)
class Page:
    n: int | None
    last: str | None

    @classmethod
    def from_query(cls, query: Mapping[str, str], default_n: int | None = None) -> "Page":
        raw_n = query.get("n")
        n = default_n
        if raw_n is not None and raw_n != "":
            try:
                n = parse_natural(raw_n)
            except ValueError:
                raise RegistryError("PAGINATION_NUMBER_INVALID",
                                    f"n must be a non-negative integer, not {raw_n[:50]!r}") from None
            if n > MAX_PAGE_SIZE:
                raise RegistryError(
                    "PAGINATION_NUMBER_INVALID", f"n must not exceed {MAX_PAGE_SIZE}", {"n": n, "max": MAX_PAGE_SIZE}
                )
        last = query.get("last") or None
        return cls(n, last)

    def apply(self, ordered: list[str]) -> tuple[list[str], str | None]:
        """The page of lexically ordered entries after `last`, and the `last` of the next page if any."""
        start = bisect.bisect_right(ordered, self.last) if self.last is not None else 0
        return self.cut(ordered[start:])

    def cut(self, following: list[str]) -> tuple[list[str], str | None]:
        """The page from entries already past `last`, and the `last` of the next page if any."""
        if self.n is None:
            return following, None
        page = following[:self.n]
        more = len(following) > self.n
        return page, (page[-1] if more and page else None)
