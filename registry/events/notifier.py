"""The notifier: events from the API handlers go to every endpoint's durable queue, and from there to
the endpoint.

A handler's event is written to the queues by one writer task, which takes whatever has been emitted
since its last write in one batch, so concurrent pushes share writes. A push or delete waits for
that write (when it returns, its event will be delivered, whatever happens to the process); a pull
does not wait. Delivery runs separately (delivery.py) and never holds a request up.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import IO, AsyncIterator

from aiohttp import web

from ..config import ConfigError, Settings, schema
from ..observability import metrics
from .delivery import Delivery
from .envelope import Event, EventSource
from .spool import Spool, SpoolLocked, lock_directory

log = logging.getLogger("registry.notifications")


class EndpointQueue:
    """One endpoint: its filters, its spool and its delivery."""

    def __init__(self, config: schema.Endpoint, directory: str, limit: int) -> None:
        self.name = config.name
        self.ignored_actions = frozenset(config.ignore.actions)
        self.ignored_media_types = frozenset(config.ignore.mediatypes) | frozenset(config.ignoredmediatypes)
        self.spool = Spool(directory, limit)
        self.delivery = Delivery(config, self.spool)
        self.queued = metrics.NOTIFICATION_EVENTS.labels("Events", self.name)
        self.dropped = metrics.NOTIFICATION_DROPPED.labels(self.name)

    def accepts(self, event: Event) -> bool:
        return event.action not in self.ignored_actions and event.media_type not in self.ignored_media_types

    async def append(self, lines: list[bytes]) -> None:
        try:
            dropped = await self.spool.append(lines)
        except OSError as exc:
            self.dropped.inc(len(lines))
            log.error("notifications: endpoint %s: cannot queue %d event(s) in %s: %s; they are lost",
                      self.name, len(lines), self.spool.directory, exc.strerror or exc)
            return
        self.queued.inc(len(lines))
        self.delivery.pending.set(self.spool.pending)
        if dropped:
            self.dropped.inc(dropped)
            log.warning("notifications: endpoint %s: queue full (notifications.queuelimit %d): dropped the %d "
                        "oldest undelivered event(s)", self.name, self.spool.limit, dropped)


class Notifier:
    def __init__(self, source: EventSource, queues: list[EndpointQueue], include_references: bool,
                 locks: list[IO[bytes]]) -> None:
        self.source = source
        self.queues = queues
        self.include_references = include_references
        self._locks = locks  # held for the process's life
        self._batch: list[tuple[Event, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._closing = False

    def emit(self, event: Event) -> asyncio.Future[None]:
        """Queue an event; the future is done once every endpoint's queue holds it."""
        future = asyncio.get_running_loop().create_future()
        self._batch.append((event, future))
        self._wake.set()
        return future

    async def _write_batches(self) -> None:
        while not (self._closing and not self._batch):
            await self._wake.wait()
            self._wake.clear()
            batch, self._batch = self._batch, []
            for queue in self.queues:
                lines = [event.line for event, _ in batch if queue.accepts(event)]
                if lines:
                    await queue.append(lines)
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def run(self, _: web.Application) -> AsyncIterator[None]:
        """While the server runs (an application cleanup context): queues open, the writer and every
        delivery running. At shutdown, after requests in flight are done, what they emitted is written."""
        for queue in self.queues:
            await queue.spool.open()
            queue.delivery.pending.set(queue.spool.pending)
            if queue.spool.pending:
                log.info("notifications: endpoint %s: %d event(s) queued from before", queue.name, queue.spool.pending)
        writer = asyncio.create_task(self._write_batches())
        deliveries = [asyncio.create_task(queue.delivery.run()) for queue in self.queues]
        yield
        self._closing = True
        self._wake.set()
        await writer
        await asyncio.gather(*(queue.delivery.stop(task) for queue, task in zip(self.queues, deliveries)))
        for queue in self.queues:
            await queue.spool.close()


#: the application's Notifier, or None (set either way: a key that is missing costs a KeyError to look up)
NOTIFIER_KEY = web.AppKey("notifier", object)


def setup(app: web.Application, settings: Settings, data_dir: str) -> Notifier | None:
    """The notifier for notifications.endpoints (those not disabled); None when there are none."""
    notifications = settings.notifications
    endpoints = [endpoint for endpoint in notifications.endpoints if not endpoint.disabled]
    for endpoint in notifications.endpoints:
        if endpoint.disabled:
            log.info("notifications: endpoint %s disabled, skipping", endpoint.name)
    app[NOTIFIER_KEY] = None
    if not endpoints:
        return None
    spool = os.path.abspath(notifications.spool or os.path.join(data_dir, "notifications"))
    queues, locks = [], []
    for endpoint in endpoints:
        directory = os.path.join(spool, _directory_name(endpoint.name))
        try:
            locks.append(lock_directory(directory))
        except SpoolLocked:
            raise ConfigError(f"notifications.spool {spool}: another registry process uses it; give each process "
                              "a spool directory of its own") from None
        except OSError as exc:
            raise ConfigError(f"notifications.spool {spool}: {exc.strerror or exc}") from None
        queues.append(EndpointQueue(endpoint, directory, notifications.queuelimit))
        log.info("notifications: endpoint %s (%s), timeout %gs, queued in %s", endpoint.name, endpoint.url,
                 endpoint.timeout, directory)
    notifier = Notifier(EventSource(settings.http.host_port[1], settings.http.host), queues,
                        notifications.events.includereferences, locks)
    app[NOTIFIER_KEY] = notifier
    app.cleanup_ctx.append(notifier.run)
    return notifier


def _directory_name(name: str) -> str:
    """An endpoint's name as a file name: letters, digits, - and _ kept, every other byte as %XX."""
    return "".join(chr(b) if chr(b).isalnum() and b < 128 or b in b"-_" else f"%{b:02X}" for b in name.encode())
