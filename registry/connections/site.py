"""GuardedSite: a TCP site that accepts connections itself (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .handler import TLS_HANDSHAKE, GuardedHandler
from .limits import ConnectionLimits
from .pool import ConnectionPool

log = logging.getLogger("registry.connections")

#: Go's answer to plain HTTP on a TLS port
PLAIN_ON_TLS_ANSWER = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"


class GuardedSite(web.BaseSite):
    """A TCP site that accepts connections itself: at most `limits.connections` open, GuardedHandler
    for each, and on TLS a look at the first bytes before the handshake (see the package docstring)."""

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
        if first[:1] == bytes([TLS_HANDSHAKE]):
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
