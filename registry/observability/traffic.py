"""Each request: its id, the HTTP metrics, and its access log line.

The middleware runs first: it gives the request its id (a trusted client's X-Request-Id, else a new
one), finds its route name and counts it in flight. The access log line and the metrics are written
by RequestObserver once the response has been sent (aiohttp calls it then), so that durations and
sizes cover the whole body, a blob sent with sendfile included.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import uuid
from time import perf_counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import Gauge

from ..api.app import route_of
from ..auth.guard import IDENTITY_KEY
from ..config import schema
from . import metrics
from .logs import REQUEST_ID, go_duration, masked_uri

log = logging.getLogger("registry.access")
REQUEST_ID_HEADER = "X-Request-Id"
#: what a client's request id may look like; anything else is replaced (it goes into logs and events)
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
#: the request's Observed record
OBSERVED_KEY = "registry.observed"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_UPLOAD_DATA = {("blob_upload_chunk", "PATCH"), ("blob_upload_chunk", "PUT")}


@dataclass
class Observed:
    """What the middleware learnt about a request, for the line and metrics written after it."""

    request_id: str
    route: str
    params: dict[str, str]
    #: perf_counter() when the middleware saw it (aiohttp's own clock is coarse under uvloop)
    started: float | None = None
    #: gauges to decrement once the request is over (in flight; uploads in progress)
    active: list[Any] = field(default_factory=list)

    def finish(self) -> None:
        for gauge in self.active:
            gauge.dec()
        self.active.clear()


class InFlight:
    """Requests in flight in this process, from the middleware until their response is sent."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def inc(self) -> None:
        self.count += 1
        self._idle.clear()

    def dec(self) -> None:
        self.count -= 1
        if self.count <= 0:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


class RequestIds:
    """X-Request-Id from clients in trusted networks (a proxy, a load balancer), else a new uuid."""

    def __init__(self, trusted: Sequence[Network]) -> None:
        networks = tuple(trusted)

        @lru_cache(maxsize=4096)
        def trusted_address(address: str) -> bool:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return False
            return any(ip.version == net.version and ip in net for net in networks)

        self._trusted = trusted_address

    def of(self, request: web.BaseRequest) -> str:
        given = request.headers.get(REQUEST_ID_HEADER)
        if given and _CLIENT_ID.fullmatch(given) and self._trusted(request.remote or ""):
            return given
        return str(uuid.uuid4())


def route_name(request: web.BaseRequest) -> tuple[str, dict[str, str]]:
    """Distribution's route name (`manifest`, `blob`, ...) for the API; the route's template
    (`/admin/readonly`) for the rest; `not_found` for no route. Never the path itself."""
    if request.path.startswith("/v2"):
        found = route_of(request.path)
        return found if found is not None else ("not_found", {})
    info = getattr(request, "match_info", None)
    if info is None or info.http_exception is not None or info.route.resource is None:
        return "not_found", {}
    return info.route.resource.canonical, {}


def observe_middleware(ids: RequestIds, in_flight: InFlight
                       ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = ids.of(request)
        REQUEST_ID.set(request_id)  # the request runs in a task of its own: this is its id only
        route, params = route_name(request)
        observed = Observed(request_id, route, params, perf_counter())
        request[OBSERVED_KEY] = observed
        _start(observed, in_flight)
        _start(observed, metrics.HTTP_IN_FLIGHT.labels(route))
        if (route, request.method) in _UPLOAD_DATA or (route == "blob_upload" and "digest" in request.query):
            _start(observed, metrics.UPLOADS_IN_PROGRESS)
        try:
            return await handler(request)
        except BaseException:  # cancelled, the observer is not called: the request is over here
            observed.finish()
            raise

    return observe


def _start(observed: Observed, gauge: Gauge | InFlight) -> None:
    gauge.inc()
    observed.active.append(gauge)


async def echo_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    observed = request.get(OBSERVED_KEY)
    if observed is not None:
        response.headers[REQUEST_ID_HEADER] = observed.request_id


def observer_class(settings: schema.Log) -> type[AbstractAccessLogger]:
    """The access logger aiohttp calls after each response: metrics always, a log line unless
    log.accesslog.disabled; JSON with Distribution's keys, or a text line."""
    access_lines = not settings.accesslog.disabled
    json_lines = settings.formatter != "text"

    class RequestObserver(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            observed = request.get(OBSERVED_KEY)
            if observed is None:  # refused before routing (a malformed request)
                observed = Observed(str(uuid.uuid4()), "not_found", {})
                REQUEST_ID.set(observed.request_id)
            observed.finish()
            received = request.content.total_bytes if request.content is not None else 0
            sent = _body_bytes(request, response)
            if observed.started is not None:
                time = perf_counter() - observed.started
            _count(observed.route, request.method, response.status, time, received, sent, request.query)
            if access_lines:
                if json_lines:
                    log.info("response completed", extra=_fields(request, response, observed, time, received, sent))
                else:
                    log.info('%s "%s %s HTTP/%d.%d" %d %d %.6fs "%s"', request.remote, request.method,
                             masked_uri(request.path, request.query_string), *request.version, response.status,
                             sent, time, request.headers.get("User-Agent", ""))

    return RequestObserver


def _body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """The body bytes sent. aiohttp counts what it wrote, headers included: a body sent whole is its
    Content-Length; one cut short or chunked is what was written."""
    if request.method == "HEAD" or response.status in (204, 304):
        return 0
    length = response.content_length
    written = response.body_length
    return length if length is not None and written >= length else written


def _count(route: str, method: str, status: int, duration: float, received: int, sent: int,
           query: Any) -> None:
    metrics.HTTP_REQUESTS.labels(route, str(status), method).inc()
    metrics.HTTP_DURATION.labels(route, method).observe(duration)
    metrics.HTTP_REQUEST_SIZE.labels(route).observe(received)
    metrics.HTTP_RESPONSE_SIZE.labels(route).observe(sent)
    if received:
        metrics.RECEIVED_BYTES.labels(route).inc(received)
    if sent:
        metrics.SENT_BYTES.labels(route).inc(sent)
    if route == "blob_upload_chunk":
        if method == "PUT":
            result = "completed" if status == 201 else "failed" if status in (400, 416) or status >= 500 else None
            if result is not None:
                metrics.UPLOADS_FINISHED.labels(result).inc()
        elif method == "DELETE" and status == 204:
            metrics.UPLOADS_FINISHED.labels("cancelled").inc()
    elif route == "blob_upload" and method == "POST" and status == 201 and "mount" not in query:
        metrics.UPLOADS_FINISHED.labels("completed").inc()


def _fields(request: web.BaseRequest, response: web.StreamResponse, observed: Observed, duration: float,
            received: int, sent: int) -> dict[str, Any]:
    """The access line's fields, with Distribution's keys where it has them."""
    fields: dict[str, Any] = {
        "http.request.method": request.method,
        "http.request.uri": masked_uri(request.path, request.query_string),
        "http.request.route": observed.route,
        "http.request.host": request.host,
        "http.request.remoteaddr": request.remote,
        "http.request.useragent": request.headers.get("User-Agent", ""),
        "http.request.read": received,
        "http.response.status": response.status,
        "http.response.written": sent,
        "http.response.duration": go_duration(duration),
        "http.response.duration_seconds": round(duration, 6),
    }
    params = observed.params
    if "name" in params:
        fields["vars.name"] = params["name"]
    for key in ("reference", "digest", "upload_id"):
        if key in params:
            fields["vars.uuid" if key == "upload_id" else f"vars.{key}"] = params[key]
    identity = request.get(IDENTITY_KEY)
    if identity is not None and identity.name:
        fields["auth.user.name"] = identity.name
    return fields
