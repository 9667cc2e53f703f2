"""Each request: its id, the HTTP metrics, and its access log line.

The middleware runs first: it gives the request its id (a trusted client's X-Request-Id, else a new
one), finds its route name and counts it in flight. The access log line and the metrics are written
by RequestObserver once the response has been sent (aiohttp calls it then), so that durations and
sizes cover the whole body, a blob sent with sendfile included.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import re
import secrets
import uuid
from functools import lru_cache
from time import perf_counter
from typing import Any, Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..api.app import error_response, route_of
from ..auth.guard import IDENTITY_KEY
from ..config import schema
from ..errors import RegistryError
from . import metrics
from .health import Health
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


class Observed:
    """A request as the middleware saw it, for the line and metrics written once it is answered. While
    it is in flight it counts in `in_flight`, in its route's in-flight gauge and, for upload data, in
    the uploads in progress."""

    __slots__ = ("request_id", "route", "started", "in_flight", "in_flight_cell", "uploading")

    def __init__(self, request_id: str, route: str, in_flight: "InFlight | None" = None,
                 uploading: bool = False) -> None:
        self.request_id = request_id
        self.route = route
        #: perf_counter() at the middleware (aiohttp's own clock is coarse under uvloop); None: not seen there
        self.started = perf_counter() if in_flight is not None else None
        self.in_flight = in_flight
        self.in_flight_cell = metrics.HTTP_IN_FLIGHT.cell((route,))
        self.uploading = uploading
        if in_flight is not None:
            in_flight.inc()
            self.in_flight_cell.value += 1
            if uploading:
                metrics.UPLOADS_IN_PROGRESS.inc()

    def finish(self) -> None:
        if self.in_flight is not None:
            self.in_flight.dec()
            self.in_flight_cell.value -= 1
            if self.uploading:
                metrics.UPLOADS_IN_PROGRESS.dec()
            self.in_flight = None


class Recorder:
    """The metric cells one kind of request (route, method, status) updates, found once."""

    __slots__ = ("requests", "duration", "request_size", "response_size", "received", "sent")

    def __init__(self, route: str, method: str, status: int) -> None:
        self.requests = metrics.HTTP_REQUESTS.cell((route, method, str(status)))
        self.duration = metrics.HTTP_DURATION.child((route, method))
        self.request_size = metrics.HTTP_REQUEST_SIZE.child((route,))
        self.response_size = metrics.HTTP_RESPONSE_SIZE.child((route,))
        self.received = metrics.RECEIVED_BYTES.cell((route,))
        self.sent = metrics.SENT_BYTES.cell((route,))

    def record(self, duration: float, received: int, sent: int) -> None:
        self.requests.value += 1
        self.duration.observe(duration)
        self.request_size.observe(received)
        self.response_size.observe(sent)
        self.received.value += received
        self.sent.value += sent


_recorders: dict[tuple[str, str, int], Recorder] = {}
#: methods counted by name; any other token a client sends is counted as OTHER (bounded labels)
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


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
    """X-Request-Id from clients in trusted networks (a proxy, a load balancer), else a new id: shaped
    as a UUID, random per process and counting per request (cheaper than a random UUID each time)."""

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
        self._head = str(uuid.uuid4())[:24]
        self._counter = itertools.count(secrets.randbits(40))

    def of(self, request: web.BaseRequest) -> str:
        given = request.headers.get(REQUEST_ID_HEADER)
        if given and _CLIENT_ID.fullmatch(given) and self._trusted(request.remote or ""):
            return given
        return self.new()

    def new(self) -> str:
        return f"{self._head}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


@lru_cache(maxsize=8192)
def _api_route(path: str) -> str:
    found = route_of(path)
    return found[0] if found is not None else "not_found"


def route_name(request: web.BaseRequest) -> str:
    """Distribution's route name (`manifest`, `blob`, ...) for the API; the route's template
    (`/admin/readonly`) for the rest; `not_found` for no route. Never the path itself."""
    if request.path.startswith("/v2"):
        return _api_route(request.path)
    info = getattr(request, "match_info", None)
    if info is None or info.http_exception is not None or info.route.resource is None:
        return "not_found"
    return info.route.resource.canonical


def observe_middleware(ids: RequestIds, in_flight: InFlight, health: Health
                       ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = ids.of(request)
        REQUEST_ID.set(request_id)  # the request runs in a task of its own: this is its id only
        route = route_name(request)
        uploading = (route, request.method) in _UPLOAD_DATA or (route == "blob_upload" and "digest" in request.query)
        observed = request[OBSERVED_KEY] = Observed(request_id, route, in_flight, uploading)
        if health.checks and request.path.startswith("/v2") and health.failing:  # as Distribution's: the API is 503
            return error_response(RegistryError("UNAVAILABLE", "health check failed: please see /debug/health"),
                                  request)
        try:
            return await handler(request)
        except BaseException:
            # cancelled (aiohttp then calls no observer) or a body cut off: the request ends here
            observed.finish()
            raise

    return observe


def response_hook(health: Health) -> Callable[[web.BaseRequest, web.StreamResponse], Awaitable[None]]:
    async def on_prepare(request: web.BaseRequest, response: web.StreamResponse) -> None:
        """The request id goes back to the client; from SIGTERM on, every connection closes after its
        response, so that clients come back through the load balancer."""
        observed = request.get(OBSERVED_KEY)
        if observed is not None:
            response.headers[REQUEST_ID_HEADER] = observed.request_id
        if health.draining:
            response.force_close()

    return on_prepare


def observer_class(settings: schema.Log, ids: RequestIds) -> type[AbstractAccessLogger]:
    """The access logger aiohttp calls after each response: metrics always, a log line unless
    log.accesslog.disabled; JSON with Distribution's keys, or a text line."""
    access_lines = not settings.accesslog.disabled
    json_lines = settings.formatter != "text"

    class RequestObserver(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            observed = request.get(OBSERVED_KEY)
            if observed is None:  # refused before routing (a malformed request)
                observed = Observed(ids.new(), "not_found")
                REQUEST_ID.set(observed.request_id)
            observed.finish()
            received = request.content.total_bytes if request.content is not None else 0
            sent = _body_bytes(request, response)
            if observed.started is not None:
                time = perf_counter() - observed.started
            _count(observed.route, request.method, response.status, time, received, sent, request)
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
           request: web.BaseRequest) -> None:
    if method not in METHODS:
        method = "OTHER"
    recorder = _recorders.get((route, method, status))
    if recorder is None:
        recorder = _recorders[(route, method, status)] = Recorder(route, method, status)
    recorder.record(duration, received, sent)
    if route == "blob_upload_chunk":
        if method == "PUT":
            result = "completed" if status == 201 else "failed" if status in (400, 416) or status >= 500 else None
            if result is not None:
                metrics.UPLOADS_FINISHED.inc((result,))
        elif method == "DELETE" and status == 204:
            metrics.UPLOADS_FINISHED.inc(("cancelled",))
    elif route == "blob_upload" and method == "POST" and status == 201 and "mount" not in request.query:
        metrics.UPLOADS_FINISHED.inc(("completed",))


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
    found = route_of(request.path) if request.path.startswith("/v2") else None
    params = found[1] if found is not None else {}
    if "name" in params:
        fields["vars.name"] = params["name"]
    for key in ("reference", "digest", "upload_id"):
        if key in params:
            fields["vars.uuid" if key == "upload_id" else f"vars.{key}"] = params[key]
    identity = request.get(IDENTITY_KEY)
    if identity is not None and identity.name:
        fields["auth.user.name"] = identity.name
    return fields
