"""GuardedHandler: aiohttp's per-connection protocol with deadlines (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from ..errors import RegistryError
from .limits import ConnectionLimits
from .pool import ConnectionPool

log = logging.getLogger("registry.connections")

#: of an answered request's unread body, at most this much is read and dropped before closing
DRAIN_BYTES = 256 << 10
DRAIN_SECONDS = 1.0
#: a deadline's timer that fires this much late found the event loop busy: data may be waiting that the
#: loop has not read yet (uvloop runs due timers before it polls), so the verdict waits one more turn
LATE_SECONDS = 0.25
#: Go's answer to a TLS handshake on a plain-HTTP port
TLS_ON_PLAIN_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                       b"Connection: close\r\n\r\n400 Bad Request")
TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a handshake


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with a head deadline, an idle-body deadline, bounded draining of
    unread bodies, and a plain answer to TLS on a plain port (see the package docstring).

    aiohttp internals it relies on: `_request_count` (incremented per parsed request head),
    `_messages` (parsed requests not yet handled), `_request_in_progress`, `_reading_paused`
    and `_buffer_paused` (aiohttp holds reading back), `_paused` (the transport's send buffer is
    full), `_force_close`, and `_next_keepalive_close_time` (aiohttp's idle clock re-arms itself
    for that time when it fires early).
    """

    def __init__(self, manager: web.Server, *, pool: ConnectionPool, limits: ConnectionLimits, tls: bool,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._pool = pool
        self._limits = limits
        self._tls = tls
        self._first_data = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0
        self._head_started = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: Any = None  # the newest request's body (aiohttp's StreamReader)
        self._last_io = 0.0
        self._send_backlog = 0
        self.idle_since = 0.0
        self.peer = "unknown"

    # -- the pool's view -------------------------------------------------------------------------

    def evictable(self) -> bool:
        """Idle between requests or still sending a head: nothing is lost by closing it."""
        return self.transport is not None and not self._request_in_progress and not self._messages

    def evict(self) -> None:
        log.debug("closed the idle connection from %s to make room (http.limits.connections)", self.peer)
        self.force_close()

    # -- protocol events ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self.idle_since = self._last_io = self._loop.time()
        self._start_head_clock(started=False)  # the first request's head is due from the start, as in Go

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._pool.remove(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_io = self._loop.time()
        if self._first_data:
            self._first_data = False
            if not self._tls and data[:1] == bytes([TLS_HANDSHAKE]):
                self._refuse_tls()
                return
        heads = self._request_count
        in_body = self._body is not None and not self._body.is_eof()  # these bytes continue a body
        super().data_received(data)
        if self._request_count != heads:  # the parser has one or more whole heads
            self._stop_head_clock()
            if self._messages:
                self._body = self._messages[-1][1]
                if not self._body.is_eof():
                    self._arm_body_clock()
        elif self._head_timer is not None:
            self._head_started = True  # the first request's head: still due from the connection's start
        elif not in_body:  # the start of the next request's head
            self._start_head_clock(started=True)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._last_io = self._loop.time()
        self._send_backlog = self.transport.get_write_buffer_size() if self.transport is not None else 0
        self._arm_body_clock()

    async def finish_response(self, request: BaseRequest, resp: StreamResponse,
                              start_time: float | None) -> tuple[StreamResponse, bool]:
        """Answer; when the request's body was not all read, drop at most DRAIN_BYTES more, then close."""
        unread = not request.content.is_eof()
        if unread and not resp.prepared:
            resp.force_close()
        result = await super().finish_response(request, resp, start_time)
        if unread:
            await self._drain(request)
        self.idle_since = self._loop.time()
        return result

    # -- the head clock ----------------------------------------------------------------------------

    def _start_head_clock(self, started: bool) -> None:
        """started: a byte of the head arrived (else the clock runs from the connection's start)."""
        if self._head_timer is not None:
            self._head_timer.cancel()
        deadline = self._loop.time() + self._limits.header
        self._head_count = self._request_count
        self._head_started = started
        self._head_timer = self._loop.call_at(deadline, self._head_overdue, deadline)
        # aiohttp's keep-alive clock must not close a connection while its head is due
        self._next_keepalive_close_time = max(self._next_keepalive_close_time, deadline + 1)

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self, due: float) -> None:
        self._head_timer = None
        if self._request_count != self._head_count or self.transport is None or self._force_close:
            return
        if self._late(due):
            self._head_timer = self._loop.call_later(LATE_SECONDS, self._head_overdue, math.inf)
            return
        # a connection that never said anything is routine (port checks, preconnecting clients)
        log.log(logging.INFO if self._head_started else logging.DEBUG,
                "closed the connection from %s: no whole request head within %gs (http.timeouts.header)",
                self.peer, self._limits.header)
        self.force_close()

    def _late(self, due: float) -> bool:
        """Whether a timer due then fired so late that the loop may not have read what came meanwhile."""
        return self._loop.time() > due + LATE_SECONDS

    # -- the body clock ----------------------------------------------------------------------------

    def _arm_body_clock(self) -> None:
        if self._body_timer is None and self.transport is not None:
            due = self._last_io + self._limits.body
            self._body_timer = self._loop.call_at(due, self._body_overdue, due)

    def _body_overdue(self, due: float) -> None:
        self._body_timer = None
        transport = self.transport
        if transport is None or self._force_close:
            return
        if self._late(due):
            self._body_timer = self._loop.call_later(LATE_SECONDS, self._body_overdue, math.inf)
            return
        receiving = self._body is not None and not self._body.is_eof()
        sending = self._paused
        if not receiving and not sending:
            return  # nothing waits on the client; the next body or full send buffer arms the clock again
        now = self._loop.time()
        if receiving and (self._reading_paused or self._buffer_paused):
            self._last_io = now  # the server holds the client back, not the other way round
        if sending:
            backlog = transport.get_write_buffer_size()
            if backlog < self._send_backlog:
                self._last_io = now  # the client took some of it
            self._send_backlog = backlog
        if now < self._last_io + self._limits.body:
            self._arm_body_clock()
            return
        what = "sent no byte of its request body" if receiving else "took no byte of the response"
        log.info("closed the connection from %s: it %s for %gs (http.timeouts.body)", self.peer, what,
                 self._limits.body)
        self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> StreamResponse:
        if isinstance(exc, ConnectionError) and self.transport is None:
            # the connection is gone (the client left, or a deadline closed it): no one to answer, no traceback
            raise exc
        if isinstance(exc, HttpProcessingError):  # a malformed request: the client's mistake, one line
            why = (message or str(exc) or "Bad Request")[:200]
            log.info("refused a malformed request from %s: %s", self.peer, why)
            answer = web.Response(status=400, body=RegistryError("INVALID_REQUEST", why).body(),
                                  content_type="application/json")
            answer.force_close()
            return answer
        return super().handle_error(request, status, exc, message)

    # -- unread bodies and the wrong protocol --------------------------------------------------------

    async def _drain(self, request: BaseRequest) -> None:
        """Read and drop a little of an unread body, so that a client still sending sees the answer;
        the connection then closes (lingering_time=0) if the body still goes on."""
        drained = 0
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DRAIN_SECONDS):
                while drained < DRAIN_BYTES and not request.content.is_eof():
                    drained += len(await request.content.readany())

    def _refuse_tls(self) -> None:
        log.warning("client %s sent a TLS handshake to this plain-HTTP port: it expects https; tell it the "
                    "registry is insecure (http://), or configure http.tls", self.peer)
        if self.transport is not None:
            self.transport.write(TLS_ON_PLAIN_ANSWER)
        self.force_close()
