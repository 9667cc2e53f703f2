"""A webhook receiver for the notification tests: an aiohttp application (served by pytest-aiohttp's
aiohttp_server) that records every envelope it is sent, and can answer 500 or hang instead."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Mode = Literal["accept", "fail", "hang"]


@dataclass
class Delivery:
    """One POST the receiver took: its headers, raw body and events."""

    headers: dict[str, str]
    body: bytes
    events: list[dict[str, Any]]


@dataclass
class Receiver:
    mode: Mode = "accept"
    deliveries: list[Delivery] = field(default_factory=list)
    #: POSTs answered 500 or left hanging
    refused: int = 0
    #: set while a POST hangs; hanging ones answer once it is cleared (release())
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/events", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.mode == "fail":
            self.refused += 1
            return web.Response(status=500, text="receiver failing on purpose")
        if self.mode == "hang":
            self.refused += 1
            self.hanging.set()
            await self._release.wait()
            return web.Response(status=503)
        self.deliveries.append(Delivery(dict(request.headers), body, json.loads(body)["events"]))
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=202)

    def release(self) -> None:
        """Stop hanging: the hanging POSTs answer 503, later ones are accepted."""
        self.mode = "accept"
        self._release.set()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for delivery in self.deliveries for event in delivery.events]

    async def wait_for(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The events received once there are at least count of them (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout
        async with self._arrived:
            while len(self.events) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.events)} of {count} events arrived in {timeout}s: {self.summary()}"
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    pass
        return self.events

    def summary(self) -> list[tuple[str, str, str]]:
        return [(e["action"], e["target"].get("repository", ""), e["target"].get("digest") or e["target"].get("tag", ""))
                for e in self.events]
