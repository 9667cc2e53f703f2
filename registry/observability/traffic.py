"""Each request: its id, the HTTP metrics, and its access log line.

The middleware runs first: it gives the request its id (a trusted client's X-Request-Id, else a new
one), finds its route name and counts it in flight. The access log line and the metrics are written
by RequestObserver once the response has been sent (aiohttp calls it then), so that durations and
sizes cover the whole body, a blob sent with sendfile included.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import secrets
import uuid
from bisect import bisect_left
from contextvars import ContextVar
from functools import lru_cache
from time import perf_counter
from types import MappingProxyType
from typing import Awaitable, Callable, Mapping, Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..api.app import error_response, route_of
from ..config import schema
from ..errors import RegistryError
from . import access, metrics
from .health import Health
from .logs import REQUEST_ID
from .stats import Cell

REQUEST_ID_HEADER = "X-Request-Id"
#: what a client's request id may look like; anything else is replaced (it goes into logs and events)
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Observed:
    """A request as the middleware saw it, for the line and metrics written once it is answered.
    While it is in flight it counts in its route's in-flight gauge (and, for upload data, in the
    uploads in progress)."""

    __slots__ = ("request_id", "route", "params", "started", "in_flight", "uploading", "span_end")

    def __init__(self, request_id: str, route: str, params: Mapping[str, str], started: float | None,
                 in_flight: Cell | None, uploading: bool = False) -> None:
        self.request_id = request_id
        self.route = route
        self.params = params  # the API route's parameters (name, reference, ...), for the access line
        #: perf_counter() at the middleware (aiohttp's own clock is coarse under uvloop); None: not seen there
        self.started = started
        self.in_flight = in_flight
        self.uploading = uploading
        #: with tracing.enabled, what ends the request's span, given the status sent (None: no response)
        self.span_end: Callable[[int | None], None] | None = None

    def finish(self, status: int | None = None) -> None:
        if self.in_flight is not None:
            self.in_flight.value -= 1
            self.in_flight = None
            if self.uploading:
                _UPLOADING.value -= 1
        if self.span_end is not None:
            self.span_end, span_end = None, self.span_end
            span_end(status)


#: the request the current task serves (aiohttp runs each request in a task of its own)
OBSERVED: ContextVar[Observed | None] = ContextVar("registry_observed", default=None)


def in_flight() -> int:
    """Requests this process is serving, from the middleware until their response is sent."""
    return int(sum(cell.value for cell in metrics.HTTP_IN_FLIGHT.cells.values()))


class Recorder:
    """The metric cells one kind of request (route, method, status) updates, found once.

    record() runs for every request, so the histograms' observe() is written out in it: a Python call
    costs about as much as the update itself. Bytes received and sent are the size histograms' sums."""

    __slots__ = ("requests", "duration", "request_size", "response_size")

    def __init__(self, route: str, method: str, status: int) -> None:
        self.requests = metrics.HTTP_REQUESTS.cell((route, method, str(status)))
        self.duration = metrics.HTTP_DURATION.child((route, method))
        self.request_size = metrics.HTTP_REQUEST_SIZE.child((route,))
        self.response_size = metrics.HTTP_RESPONSE_SIZE.child((route,))

    def record(self, duration: float, received: int, sent: int) -> None:
        self.requests.value += 1
        histogram = self.duration
        histogram.counts[bisect_left(histogram.bounds, duration)] += 1
        histogram.sum += duration
        histogram = self.request_size
        histogram.counts[bisect_left(histogram.bounds, received) if received else 0] += 1
        histogram.sum += received
        histogram = self.response_size
        histogram.counts[bisect_left(histogram.bounds, sent) if sent else 0] += 1
        histogram.sum += sent


_recorders: dict[tuple[str, str, int], Recorder] = {}
_UPLOADS = frozenset({"blob_upload", "blob_upload_chunk"})
_UPLOADING = metrics.UPLOADS_IN_PROGRESS.cell()
_FINISHED = {result: metrics.UPLOADS_FINISHED.cell((result,)) for result in ("completed", "cancelled", "failed")}
#: methods counted by name; any other token a client sends is counted as OTHER (bounded labels)
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


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
        if given is not None and _CLIENT_ID.fullmatch(given) and self._trusted(request.remote or ""):
            return given
        return f"{self._head}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


#: the route (name and parameters) of an API path, remembered for the paths seen most
_route_of = lru_cache(maxsize=8192)(route_of)
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


def request_route(request: web.BaseRequest) -> tuple[str, Mapping[str, str]]:
    """Distribution's route name (`manifest`, `blob`, ...) and the parameters for the API; the route's
    template (`/admin/readonly`) for the rest; `not_found` for no route. Never the path itself."""
    path = request.path
    if path.startswith("/v2"):
        return _route_of(path) or ("not_found", _NO_PARAMS)
    info = getattr(request, "match_info", None)
    if info is None or info.http_exception is not None or info.route.resource is None:
        return "not_found", _NO_PARAMS
    return info.route.resource.canonical, _NO_PARAMS


def observe_middleware(ids: RequestIds, health: Health
                       ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    in_flight: dict[str, Cell] = {}

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = ids.of(request)
        REQUEST_ID.set(request_id)
        route, params = request_route(request)
        cell = in_flight.get(route)
        if cell is None:
            cell = in_flight[route] = metrics.HTTP_IN_FLIGHT.cell((route,))
        cell.value += 1
        uploading = route in _UPLOADS and (request.method in ("PATCH", "PUT") if route == "blob_upload_chunk"
                                           else "digest" in request.query)
        if uploading:
            _UPLOADING.value += 1
        observed = Observed(request_id, route, params, perf_counter(), cell, uploading)
        OBSERVED.set(observed)
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
        observed = OBSERVED.get()
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
            observed = OBSERVED.get()
            if observed is None:  # refused before routing (a malformed request)
                observed = Observed(ids.of(request), "not_found", _NO_PARAMS, None, None)
                REQUEST_ID.set(observed.request_id)
            else:
                observed.finish(response.status)
                time = perf_counter() - observed.started  # type: ignore[operator]
            method, status = request.method, response.status
            received = request.content.total_bytes
            # the body bytes: aiohttp counts what it wrote, headers included, so a body sent whole is
            # its Content-Length; one cut short or chunked is what was written
            if method == "HEAD" or status in (204, 304):
                sent = 0
            else:
                length, sent = response.content_length, response.body_length
                if length is not None and sent >= length:
                    sent = length
            if method not in METHODS:
                method = "OTHER"
            route = observed.route
            recorder = _recorders.get((route, method, status))
            if recorder is None:
                recorder = _recorders[(route, method, status)] = Recorder(route, method, status)
            recorder.record(time, received, sent)
            if route in _UPLOADS:
                _count_upload(route, method, status, request)
            if access_lines:
                access.write(request, response, observed, time, received, sent, json_lines)

    return RequestObserver


def _count_upload(route: str, method: str, status: int, request: web.BaseRequest) -> None:
    if route == "blob_upload_chunk":
        if method == "PUT":
            if status == 201:
                _FINISHED["completed"].value += 1
            elif status in (400, 416) or status >= 500:
                _FINISHED["failed"].value += 1
        elif method == "DELETE" and status == 204:
            _FINISHED["cancelled"].value += 1
    elif method == "POST" and status == 201 and "mount" not in request.query:
        _FINISHED["completed"].value += 1
