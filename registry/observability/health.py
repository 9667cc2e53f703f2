"""Health: Distribution's periodic checks, /debug/health, /livez and /readyz.

Checks (health.storagedriver, .file, .http, .tcp) run in the background every `interval`, the first
time at startup; one fails once it has failed `threshold` times in a row. While any check fails the
registry API answers 503 UNAVAILABLE, as Distribution's does (so `health.file` takes a replica out of
rotation), and /readyz is 503.

- /debug/health: Distribution's format, 200 `{}`, or 503 with the failing checks and their errors.
- /livez: 200 while the process answers.
- /readyz: 200 when the store answers and takes writes within the storage timeout, no check fails,
  and the registry is not shutting down; else 503 with the reasons. From SIGTERM on it is 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from ..config import schema
from ..domain import Registry
from ..config.values import split_address

log = logging.getLogger("registry.health")
#: /readyz probes the store at most this often; probes in between share the last result
READY_PROBE_SECONDS = 1.0
Probe = Callable[[], Awaitable[None]]


class CheckFailed(Exception):
    """A check's failure, worded for /debug/health."""


@dataclass
class Check:
    name: str
    probe: Probe
    interval: float
    threshold: int = 0
    failures: int = 0
    error: str | None = None

    @property
    def failing(self) -> bool:
        return self.error is not None and self.failures >= max(self.threshold, 1)

    async def run(self) -> None:
        try:
            await self.probe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the checked thing is the check's result
            self.failures += 1
            if self.error is None or self.failures == self.threshold:
                log.warning("health check %s failed: %s", self.name, _describe(exc))
            self.error = _describe(exc)
        else:
            if self.failing:
                log.info("health check %s passes again", self.name)
            self.failures, self.error = 0, None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (CheckFailed, asyncio.TimeoutError)):
        return str(exc) or "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass
class Health:
    registry: Registry
    storage_timeout: float
    checks: list[Check] = field(default_factory=list)
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: set at SIGTERM: /readyz answers 503 from then on
    draining: bool = False
    _probe: asyncio.Task[str | None] | None = None
    _probed_at: float = 0.0

    @property
    def failing(self) -> dict[str, str]:
        return {check.name: check.error or "" for check in self.checks if check.failing}

    async def storage_error(self) -> str | None:
        """Why the store is not usable now (None: it is), probed at most once a second."""
        if self._probe is None or (self._probe.done() and time.monotonic() - self._probed_at > READY_PROBE_SECONDS):
            self._probed_at = time.monotonic()
            self._probe = asyncio.ensure_future(self._probe_storage())
        return await asyncio.shield(self._probe)

    async def _probe_storage(self) -> str | None:
        try:
            await asyncio.wait_for(self.registry.probe_storage(self.instance), self.storage_timeout)
        except asyncio.TimeoutError:
            return f"storage did not answer within {self.storage_timeout:g}s"
        except Exception as exc:  # whatever the backend raises, the store is not usable
            return f"storage: {_describe(exc)}"
        return None

    async def debug_health(self, request: web.Request) -> web.Response:
        failing = self.failing
        return web.json_response(failing, status=503 if failing else 200)

    async def livez(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(self, request: web.Request) -> web.Response:
        reasons = ["shutting down"] if self.draining else []
        reasons += [f"health check {name} failing" for name in self.failing]
        if not self.draining:
            storage = await self.storage_error()
            if storage is not None:
                reasons.append(storage)
        if reasons:
            return web.json_response({"ready": False, "reasons": reasons}, status=503)
        return web.json_response({"ready": True})

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/debug/health", self.debug_health, allow_head=True),
                web.get("/livez", self.livez, allow_head=True),
                web.get("/readyz", self.readyz, allow_head=True)]

    async def run_checks(self, _: web.Application) -> AsyncIterator[None]:
        """The checks' background polling while the server runs (an application cleanup context)."""
        session = aiohttp.ClientSession()
        for check in self.checks:
            if isinstance(check.probe, _NeedsSession):
                check.probe.session = session
        tasks = [asyncio.create_task(_poll(check)) for check in self.checks]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await session.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.registry.remove_probe(self.instance), self.storage_timeout)


async def _poll(check: Check) -> None:
    while True:
        await check.run()
        await asyncio.sleep(check.interval)


def build_health(settings: schema.Settings, registry: Registry) -> Health:
    health = settings.health
    state = Health(registry, health.storagedriver.timeout)
    driver = health.storagedriver
    if driver.enabled:
        state.checks.append(Check(f"storagedriver_{settings.storage.driver}", _storage_probe(state),
                                  driver.interval, driver.threshold))
    for file_check in health.file:
        state.checks.append(Check(file_check.file, _file_probe(file_check.file), file_check.interval))
    for http_check in health.http:
        state.checks.append(Check(http_check.uri, _HttpProbe(http_check), http_check.interval, http_check.threshold))
    for tcp_check in health.tcp:
        state.checks.append(Check(tcp_check.addr, _tcp_probe(tcp_check), tcp_check.interval, tcp_check.threshold))
    for check in state.checks:
        log.info("health check %s every %gs", check.name, check.interval)
    return state


def _storage_probe(state: Health) -> Probe:
    async def probe() -> None:
        error = await state._probe_storage()
        if error is not None:
            raise CheckFailed(error)

    return probe


def _file_probe(path: str) -> Probe:
    async def probe() -> None:
        if await asyncio.to_thread(os.path.exists, path):
            raise CheckFailed("file exists")

    return probe


def _tcp_probe(check: schema.TcpCheck) -> Probe:
    host, port = split_address(check.addr)

    async def probe() -> None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), check.timeout)
        except (OSError, asyncio.TimeoutError):
            raise CheckFailed(f"connection to {check.addr} failed") from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    return probe


class _NeedsSession:
    session: aiohttp.ClientSession | None = None


class _HttpProbe(_NeedsSession):
    """HEAD of the uri must answer statuscode."""

    def __init__(self, check: schema.HttpCheck) -> None:
        self.check = check
        self.headers = [(name, value.get_secret_value()) for name, values in check.headers.items()
                        for value in values]

    async def __call__(self) -> None:
        assert self.session is not None
        try:
            async with self.session.head(self.check.uri, headers=self.headers, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=self.check.timeout)) as response:
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CheckFailed(f"error while checking: {_describe(exc)}") from None
        if status != self.check.statuscode:
            raise CheckFailed(f"downstream service returned unexpected status: {status}")
