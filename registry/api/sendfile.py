"""A response that sends part of a local file with the kernel's sendfile.

aiohttp's FileResponse would do, but it sets its own ETag and Content-Type and
parses Range itself; a registry's are content digests and single ranges.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

FALLBACK_CHUNK = 1 << 20


class SendfileResponse(web.StreamResponse):
    def __init__(self, path: str, offset: int, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._path = path
        self._offset = offset
        self._count = count
        self.content_length = count
        self.content_type = "application/octet-stream"

    async def prepare(self, request: web.BaseRequest):  # type: ignore[override]
        if request.method == "HEAD" or self._count == 0:
            return await super().prepare(request)
        loop = asyncio.get_running_loop()
        with open(self._path, "rb") as f:
            writer = await super().prepare(request)
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("connection lost")
            try:
                await loop.sendfile(transport, f, self._offset, self._count)
            except NotImplementedError:  # uvloop: read and write in pieces instead
                await self._copy(loop, f)
            await super().write_eof()
        return writer

    async def _copy(self, loop: asyncio.AbstractEventLoop, f: Any) -> None:
        f.seek(self._offset)
        remaining = self._count
        while remaining > 0:
            chunk = await loop.run_in_executor(None, f.read, min(FALLBACK_CHUNK, remaining))
            if not chunk:
                raise ConnectionResetError(f"{self._path} shrank while being sent")
            remaining -= len(chunk)
            await self.write(chunk)

    async def write_eof(self, data: bytes = b"") -> None:
        pass  # prepare() ends the body itself
