"""A response that sends part of a local file with the kernel's sendfile, from worker threads.

aiohttp's FileResponse would do, but it sets its own ETag and Content-Type and
parses Range itself, where a registry's are content digests and single ranges;
and the event loop's sendfile runs every copy on the loop's one thread (uvloop
has none at all). Here, once the headers are flushed, a worker thread calls
sendfile on the socket until the range is sent, so that concurrent pulls spread
over every core while the loop serves other requests.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from aiohttp import web

#: concurrent sendfile transfers; more wait for a thread, without blocking the loop
SENDFILE_THREADS = 64
#: a client that takes nothing for this long loses the connection
STALL_TIMEOUT_SECONDS = 120
#: a larger socket buffer means fewer wake-ups per transfer
SEND_BUFFER = 4 << 20

_executor = ThreadPoolExecutor(SENDFILE_THREADS, thread_name_prefix="sendfile")


def _send(sock_fd: int, file_fd: int, offset: int, count: int) -> None:
    with socket.socket(fileno=os.dup(sock_fd)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    while count > 0:
        try:
            sent = os.sendfile(sock_fd, file_fd, offset, count)
        except BlockingIOError:
            if not poller.poll(STALL_TIMEOUT_SECONDS * 1000):
                raise TimeoutError("client stopped reading") from None
            continue
        if sent == 0:
            raise ConnectionResetError("file shorter than expected")
        offset += sent
        count -= sent


class SendfileResponse(web.StreamResponse):
    def __init__(self, data: BinaryIO | None, offset: int, count: int, **kwargs: Any) -> None:
        """data: the open file, which this response closes; None for HEAD and empty bodies."""
        super().__init__(**kwargs)
        self._data = data
        self._offset = offset
        self._count = count
        self._sent = 0
        self.content_length = count
        self.content_type = "application/octet-stream"

    async def prepare(self, request: web.BaseRequest):  # type: ignore[override]
        if self._data is None:
            return await super().prepare(request)
        with self._data as f:
            writer = await super().prepare(request)
            transport = request.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            if transport is None or sock is None:
                raise ConnectionResetError("connection lost")
            await self._flush(transport, writer)
            try:
                await asyncio.get_running_loop().run_in_executor(
                    _executor, _send, sock.fileno(), f.fileno(), self._offset, self._count
                )
            except (OSError, TimeoutError):
                transport.close()
                raise ConnectionResetError("client went away during sendfile") from None
            self._sent = self._count
            await super().write_eof()
        return writer

    @staticmethod
    async def _flush(transport: asyncio.Transport, writer: Any) -> None:
        """Wait until the transport has written everything it holds (the headers), so the
        thread's bytes follow them on the socket and nothing else writes meanwhile."""
        await writer.drain()
        while transport.get_write_buffer_size() and not transport.is_closing():
            await asyncio.sleep(0.001)

    async def write_eof(self, data: bytes = b"") -> None:
        pass  # prepare() ends the body itself

    @property
    def body_length(self) -> int:
        """What went out, the bytes the thread sent included (for the access log and metrics)."""
        return super().body_length + self._sent
