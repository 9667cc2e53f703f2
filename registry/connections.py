"""Client connections: how long a client may take, how many may be open, and what the wrong protocol gets.

aiohttp's server has a keep-alive timeout and limits on header sizes, but no deadline for a
request's head and none for a body that stops arriving: a client trickling one header byte
every few seconds, or a body that stalls halfway, holds its connection (and its descriptor,
and, for an upload, the upload's lock) for ever. And asyncio accepts every connection it is
offered until the process runs out of descriptors. This module adds, with few hooks into
aiohttp's internals (named where they are used):

- GuardedHandler, aiohttp's RequestHandler (the per-connection protocol) with two clocks.
  The *head clock* runs from a connection's start, and again from the first byte of each
  following request, until the parser has the whole head (http.timeouts.header, as Go's
  ReadHeaderTimeout). The *body clock* runs while a request is in progress and the connection
  waits on the client: its body has not all arrived, or the response's bytes wait in a full
  send buffer. It is lazy, as aiohttp's keep-alive clock is: data_received only notes the
  time, and the timer, when it fires, re-arms itself for the deadline that the last byte
  moved. While the server itself holds reading back (a handler busy writing to storage), the
  client is not to blame and the clock does not run. A connection over either deadline is
  closed: its handler's read then fails, so an upload writer is cancelled and its lock
  released, as for any client that goes away.
- Early answers close the connection: when a handler answers without reading the whole body
  (413 for an oversized manifest, 503 when the manifest memory budget is spent, a 404 for a
  PATCH to an unknown upload), at most DRAIN_BYTES of the rest are read and dropped (so that
  a client still sending can read the answer, as Go's server does), then the connection
  closes instead of reading on.
- GuardedSite, a site with its own accept loop, so that at most http.limits.connections are
  open: when the limit is reached, the connection idle longest (between requests, or still
  sending its head) is closed to make room, as nginx reuses idle keep-alive connections; when
  every connection is busy, accepting pauses and new ones wait in the kernel's backlog,
  costing no descriptor. A connection that sends a TLS handshake to a plain-HTTP port is
  answered as Go's server answers it (400 Bad Request) and one line is logged; on a TLS port,
  the first bytes are peeked at before the handshake, and plain HTTP gets Go's answer
  "Client sent an HTTP request to an HTTPS server."
- raise_descriptor_limit() lifts the soft RLIMIT_NOFILE to the hard limit at startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from .config.schema import Http

log = logging.getLogger("registry.connections")

#: of an answered request's unread body, at most this much is read and dropped before closing
DRAIN_BYTES = 256 << 10
DRAIN_SECONDS = 1.0
#: descriptors kept for everything but client connections: storage files, S3 connections, logs
RESERVED_DESCRIPTORS = 256
#: how often, at most, the connection limit being reached is logged
LIMIT_WARNING_INTERVAL = 60.0
#: a deadline's timer that fires this much late found the event loop busy: data may be waiting that the
#: loop has not read yet (uvloop runs due timers before it polls), so the verdict waits one more turn
LATE_SECONDS = 0.25
#: Go's answers to a client speaking the wrong protocol
TLS_ON_PLAIN_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                       b"Connection: close\r\n\r\n400 Bad Request")
PLAIN_ON_TLS_ANSWER = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
_TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a handshake


@dataclass(frozen=True)
class ConnectionLimits:
    """The http.timeouts and http.limits settings, in seconds and counts."""

    header: float = 10.0
    body: float = 60.0
    keepalive: float = 75.0
    connections: int = 1000


def raise_descriptor_limit() -> int:
    """Lift the soft limit on open descriptors to the hard one; the soft limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft


def connection_cap(configured: int, descriptors: int) -> int:
    """The connections that fit beside what the server itself needs, at most `configured`."""
    reserve = min(RESERVED_DESCRIPTORS, descriptors // 4)
    cap = max(1, min(configured, descriptors - reserve))
    if cap < configured:
        log.warning("http.limits.connections is %d, but the descriptor limit (ulimit -n) is %d: serving at most "
                    "%d connections; raise the limit (LimitNOFILE=, ulimit -n) to serve more", configured,
                    descriptors, cap)
    return cap


def connection_limits(http: Http) -> ConnectionLimits:
    """The configured limits, the connection limit fitted to the descriptors this process may open."""
    timeouts = http.timeouts
    cap = connection_cap(http.limits.connections, raise_descriptor_limit())
    return ConnectionLimits(timeouts.header, timeouts.body, timeouts.keepalive, cap)


def handler_options(limits: ConnectionLimits) -> dict[str, Any]:
    """aiohttp's own per-connection settings (AppRunner keyword arguments) that go with GuardedHandler."""
    # no lingering read of unread bodies: GuardedHandler drains a bounded amount itself
    return {"keepalive_timeout": limits.keepalive, "lingering_time": 0}


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


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with a head deadline, an idle-body deadline, bounded draining of
    unread bodies, and a plain answer to TLS on a plain port (see the module docstring).

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
            if not self._tls and data[:1] == bytes([_TLS_HANDSHAKE]):
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
            answer = web.Response(status=status, text=why, content_type="text/plain")
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


class GuardedSite(web.BaseSite):
    """A TCP site that accepts connections itself: at most `limits.connections` open, GuardedHandler
    for each, and on TLS a look at the first bytes before the handshake (see the module docstring)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: ConnectionLimits,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = socket.SOMAXCONN) -> None:
        """backlog: connections the kernel holds for accepting, as Go's listeners take (the system's
        somaxconn caps it): when the limit is reached, newcomers wait there rather than see their
        connection attempt dropped and retried a second later."""
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._limits = limits
        self.pool = ConnectionPool(limits.connections)
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            for family, kind, proto, address in dict.fromkeys((f, k, p, a) for f, k, p, _, a in found):
                self._sockets.append(_listen(family, kind, proto, address, self._backlog))
        except BaseException:
            self._close_sockets()
            raise
        for listener in self._sockets:
            self._spawn(self._accept_forever(listener))

    async def stop(self) -> None:
        self._close_sockets()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._runner._unreg_site(self)

    def _close_sockets(self) -> None:
        for listener in self._sockets:
            listener.close()
        self._sockets.clear()

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handler(self) -> GuardedHandler:
        server = self._runner.server
        assert server is not None
        # the keyword arguments AppRunner was given for its handlers (access log, keep-alive, ...)
        options = dict(server._kwargs)
        return GuardedHandler(server, loop=asyncio.get_running_loop(), pool=self.pool, limits=self._limits,
                              tls=self._ssl_context is not None, **options)

    async def _accept_forever(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.pool.make_room()
            try:
                connection, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors, say: wait a moment rather than spin
                log.error("accepting a connection failed: %s", exc)
                await asyncio.sleep(1)
                continue
            if self._ssl_context is None:
                await self._serve(connection, None)
            else:
                self._spawn(self._serve_tls(connection))

    async def _serve(self, connection: socket.socket, context: ssl.SSLContext | None) -> None:
        handler = self._handler()
        self.pool.add(handler)
        peer = _peer(connection)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: handler, connection, ssl=context,
                ssl_handshake_timeout=self._limits.header if context else None)
        except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.pool.remove(handler)
            connection.close()
            if context is not None:
                log.info("TLS handshake with %s failed: %s", peer, exc)

    async def _serve_tls(self, connection: socket.socket) -> None:
        """Peek at the first bytes: a TLS handshake is served; plain HTTP gets Go's answer."""
        waiting = _Sniffing(asyncio.current_task(), asyncio.get_running_loop().time())
        self.pool.add(waiting)
        try:
            first = await _peek(connection, self._limits.header)
        except (asyncio.TimeoutError, asyncio.CancelledError, OSError):  # silent, gone, or evicted
            connection.close()
            return
        finally:
            self.pool.remove(waiting)
        if first[:1] == bytes([_TLS_HANDSHAKE]):
            await self._serve(connection, self._ssl_context)
            return
        if first[:1].isalpha():
            log.warning("client %s sent plain HTTP to this TLS port: it must use https:// (or http.tls must go)",
                        _peer(connection))
            with contextlib.suppress(OSError):
                connection.recv(65536)  # the request, read so that closing does not reset the answer away
                connection.send(PLAIN_ON_TLS_ANSWER)
                connection.shutdown(socket.SHUT_WR)
        connection.close()


@dataclass(eq=False)
class _Sniffing:
    """A TLS-port connection whose first bytes have not come yet: evictable, like an idle one."""

    task: asyncio.Task[Any] | None
    idle_since: float

    def evictable(self) -> bool:
        return True

    def evict(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def _peek(connection: socket.socket, timeout: float) -> bytes:
    """The first bytes waiting on the connection, left there for whoever reads next (b"" at EOF)."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    loop.add_reader(connection.fileno(), lambda: readable.done() or readable.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await readable
    finally:
        loop.remove_reader(connection.fileno())
    return connection.recv(8, socket.MSG_PEEK)


def _listen(family: int, kind: int, proto: int, address: Any, backlog: int) -> socket.socket:
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind(address)
        listener.listen(backlog)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


def _peer(connection: socket.socket) -> str:
    try:
        return str(connection.getpeername()[0])
    except OSError:
        return "unknown"
