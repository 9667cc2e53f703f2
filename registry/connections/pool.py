"""The open connections of a site, and making room for one more."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("registry.connections")

#: how often, at most, the connection limit being reached is logged
LIMIT_WARNING_INTERVAL = 60.0


class Slot(Protocol):
    """A connection as the pool sees it."""

    idle_since: float

    def evictable(self) -> bool: ...

    def evict(self) -> None: ...


class ConnectionPool:
    """The open connections of a site, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: set[Slot] = set()
        self._freed = asyncio.Event()
        self._warned_at = -LIMIT_WARNING_INTERVAL

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, slot: Slot) -> None:
        self._slots.add(slot)

    def remove(self, slot: Slot) -> None:
        if slot in self._slots:
            self._slots.discard(slot)
            self._freed.set()

    async def make_room(self) -> None:
        """Return once a connection may be accepted: evict the longest idle one, or wait for one to close."""
        while len(self._slots) >= self.limit:
            loop = asyncio.get_running_loop()
            if loop.time() - self._warned_at >= LIMIT_WARNING_INTERVAL:
                self._warned_at = loop.time()
                log.warning("%d connections open (http.limits.connections): closing the longest idle ones to make "
                            "room, or holding new ones back until some close", self.limit)
            idle = [slot for slot in self._slots if slot.evictable()]
            if idle:
                victim = min(idle, key=lambda slot: slot.idle_since)
                self.remove(victim)
                victim.evict()
                continue
            self._freed.clear()
            await self._freed.wait()
