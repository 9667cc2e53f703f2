"""One memory budget for the manifest bodies being received, across all requests.

A manifest PUT holds its body in memory until it is stored, up to 4 MiB each: without a
bound, a few hundred clients sending 4 MiB minus one byte and then stalling pin gigabytes
(and the allocator keeps them after they close). A request takes its Content-Length from the
budget before reading a byte (a chunked body: each piece as it arrives) and gives it back when
it is answered. One the budget cannot cover is refused at once with 503 and Retry-After, its
body unread (registry/connections.py closes such a connection rather than read on): waiting
for room would itself hold connections and memory.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from aiohttp import web

from ..errors import RegistryError

#: http.limits.manifestmemory's default
DEFAULT_MANIFEST_MEMORY = 64 << 20
#: seconds a refused client is asked to wait: bodies come and go within moments
RETRY_AFTER_SECONDS = 1


class MemoryBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextlib.contextmanager
    def lease(self) -> Iterator[Callable[[int], None]]:
        """A function taking bytes from the budget (UNAVAILABLE when they are not there); all of them
        come back when the block ends."""
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            if self.used + size > self.limit:
                raise RegistryError(
                    "UNAVAILABLE", "the registry is receiving too many manifests at once (http.limits.manifestmemory); "
                    "try again in a moment", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            self.used += size
            taken += size

        try:
            yield take
        finally:
            self.used -= taken


MANIFEST_MEMORY_KEY = web.AppKey("manifest_memory", MemoryBudget)
