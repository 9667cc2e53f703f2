"""Wiring observability into the server: one call for the application (setup), the runner's options,
the debug server (http.debug.addr) and the graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from aiohttp import web

from ..config import ConfigError, Settings, schema
from ..config.values import split_address
from ..domain import Registry
from .health import Health, build_health
from .metrics import exposition
from .traffic import RequestIds, in_flight, observe_middleware, observer_class, response_hook

if TYPE_CHECKING:
    from .tracing import Tracing

log = logging.getLogger("registry")
#: what the runner's own shutdown waits for a request after shut_down() has drained them
CLOSE_TIMEOUT_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.05
HEALTH_KEY = web.AppKey("health", Health)
REQUEST_IDS_KEY = web.AppKey("request_ids", RequestIds)


def start_tracing(settings: schema.Tracing) -> "Tracing | None":
    """The tracer provider when tracing.enabled (its export thread starts), else None."""
    if not settings.enabled:
        return None
    try:
        from .tracing import Tracing
    except ImportError as exc:
        raise ConfigError(f"tracing.enabled needs the OpenTelemetry SDK, and {exc.name} is missing: "
                          "pip install 'oci-registry[tracing]'") from None
    return Tracing(settings)


def setup(app: web.Application, settings: Settings, registry: Registry, tracing: "Tracing | None" = None) -> Health:
    """Request ids, metrics and the access log for every request; the health checks and endpoints;
    metrics on the main port when http.debug.prometheus.mainport says so (default: without auth);
    a span per request with tracing."""
    health = build_health(settings, registry)
    app[HEALTH_KEY] = health
    app[REQUEST_IDS_KEY] = RequestIds(settings.http.requestid.trustfrom)
    app.middlewares.insert(0, observe_middleware(app[REQUEST_IDS_KEY], health))
    if tracing is not None:
        app.middlewares.insert(1, tracing.middleware())
        app.cleanup_ctx.append(_exporting(tracing))
    app.on_response_prepare.append(response_hook(health))
    app.router.add_routes(health.routes())
    prometheus = settings.http.debug.prometheus
    mainport = prometheus.mainport if prometheus.mainport is not None else settings.auth is None
    if mainport:
        app.router.add_get(prometheus.path, serve_metrics, allow_head=False)
    app.cleanup_ctx.append(health.run_checks)
    return health


def _exporting(tracing: "Tracing") -> Any:
    async def exporting(app: web.Application) -> AsyncIterator[None]:
        yield
        await asyncio.get_running_loop().run_in_executor(None, tracing.shutdown)  # the last spans sent

    return exporting


async def serve_metrics(request: web.Request) -> web.Response:
    body, content_type = exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def runner_options(app: web.Application, settings: Settings) -> dict[str, Any]:
    """AppRunner options: metrics and access lines are written once each response has been sent;
    requests in flight are drained by shut_down() before the runner's cleanup."""
    return {"access_log_class": observer_class(settings.log, app[REQUEST_IDS_KEY]),
            "access_log": logging.getLogger("registry.access"),
            "shutdown_timeout": CLOSE_TIMEOUT_SECONDS}


class DebugServer:
    """http.debug.addr: /debug/health, /livez, /readyz and, with http.debug.prometheus.enabled, the
    metrics, for monitoring on an address of their own (keep it off the public network)."""

    def __init__(self, settings: Settings, health: Health) -> None:
        self.addr = settings.http.debug.addr
        app = web.Application()
        app.router.add_routes(health.routes())
        if settings.http.debug.prometheus.enabled:
            app.router.add_get(settings.http.debug.prometheus.path, serve_metrics, allow_head=False)
        self.runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        assert self.addr is not None
        await self.runner.setup()
        host, port = split_address(self.addr)
        await web.TCPSite(self.runner, host, port, reuse_address=True).start()
        log.info("debug server listening on http://%s", self.addr)

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_debug_server(app: web.Application, settings: Settings) -> DebugServer | None:
    if not settings.http.debug.addr:
        return None
    server = DebugServer(settings, app[HEALTH_KEY])
    await server.start()
    return server


async def shut_down(app: web.Application, settings: Settings, runner: web.AppRunner) -> None:
    """At SIGTERM: /readyz answers 503 at once and every response closes its connection; requests
    keep being served for http.shutdowndelay, so that load balancers stop sending new ones before the
    listener closes; then requests in flight get http.draintimeout to finish, their bodies still read
    (aiohttp's own shutdown stops reading request bodies, which would cut uploads off)."""
    app[HEALTH_KEY].draining = True
    delay = settings.http.shutdowndelay
    if delay:
        log.info("shutting down: /readyz answers 503; serving for %gs more (http.shutdowndelay)", delay)
        await asyncio.sleep(delay)
    log.info("stopping: requests in flight have up to %gs to finish (http.draintimeout)", settings.http.draintimeout)
    for site in list(runner.sites):
        await site.stop()
    deadline = time.monotonic() + settings.http.draintimeout
    while in_flight() and time.monotonic() < deadline:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    if in_flight():
        log.warning("%d request(s) still in flight after http.draintimeout; cutting them off", in_flight())
    await runner.cleanup()
