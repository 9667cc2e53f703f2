"""Delivering one endpoint's queue: oldest first, one event per request, each until it is accepted.

An answer in 2xx or 3xx is delivery (as in Distribution); anything else, a timeout or no connection
is retried: `threshold` times at once, then after `backoff`, doubling up to a minute between tries.
This runs beside the requests that queue events and never holds them up.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from http import HTTPStatus

import aiohttp

from ..config import schema
from ..observability import metrics
from .envelope import EVENTS_MEDIA_TYPE, envelope
from .spool import Spool

log = logging.getLogger("registry.notifications")
SIGNATURE_HEADER = "X-Registry-Signature-256"
MAX_BACKOFF_SECONDS = 60.0


class Delivery:
    def __init__(self, config: schema.Endpoint, spool: Spool) -> None:
        self.config = config
        self.spool = spool
        self.name = config.name
        self.headers = [(name, value.get_secret_value()) for name, values in config.headers.items()
                        for value in values]
        self.headers.append(("Content-Type", EVENTS_MEDIA_TYPE))
        self.secret = config.secret.get_secret_value().encode() if config.secret else None
        self.failures = 0
        self._ack: asyncio.Future[None] | None = None
        self.pending = metrics.NOTIFICATION_PENDING.labels(self.name)
        self._successes = metrics.NOTIFICATION_EVENTS.labels("Successes", self.name)
        self._refusals = metrics.NOTIFICATION_EVENTS.labels("Failures", self.name)
        self._errors = metrics.NOTIFICATION_EVENTS.labels("Errors", self.name)

    async def run(self) -> None:
        """Deliver, forever (until cancelled)."""
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self.pending.set(self.spool.pending)
                seq, line = await self.spool.next()
                if await self._post(session, envelope([line])):
                    # a shutdown that cancels this task lets the ack finish (stop() waits for it), so
                    # that an event delivered before SIGTERM is not delivered again after the restart
                    self._ack = asyncio.ensure_future(self.spool.ack(seq))
                    await asyncio.shield(self._ack)
                    if self.failures:
                        log.info("notifications: endpoint %s accepts events again (after %d failed attempts)",
                                 self.name, self.failures)
                    self.failures = 0
                else:
                    self.failures += 1
                    await self._back_off()

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Cancel the delivery task, after the cursor has recorded an event already delivered."""
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self._ack is not None:
            await asyncio.gather(self._ack, return_exceptions=True)

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> bool:
        headers = list(self.headers)
        if self.secret is not None:
            headers.append((SIGNATURE_HEADER, "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()))
        try:
            async with session.post(self.config.url, data=body, headers=headers, allow_redirects=False) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self._errors.inc()
            self._failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return False
        metrics.NOTIFICATION_STATUS.labels(_status_text(status), self.name).inc()
        if 200 <= status < 400:
            self._successes.inc()
            return True
        self._refusals.inc()
        self._failed(f"answered {status}")
        return False

    def _failed(self, why: str) -> None:
        if self.failures == 0 or self.failures + 1 == self.config.threshold:
            log.warning("notifications: endpoint %s (%s): delivery failed: %s; %d event(s) waiting, retrying",
                        self.name, self.config.url, why, self.spool.pending)

    async def _back_off(self) -> None:
        beyond = self.failures - self.config.threshold
        if beyond >= 0:
            await asyncio.sleep(min(self.config.backoff * 2 ** min(beyond, 16),
                                    max(self.config.backoff, MAX_BACKOFF_SECONDS)))


def _status_text(status: int) -> str:
    """"202 Accepted", as Distribution labels statuses."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
