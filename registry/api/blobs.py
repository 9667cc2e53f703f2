"""GET, HEAD and DELETE /v2/<name>/blobs/<digest>"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from storage_backends import PathNotFound

from .. import events, layout
from ..errors import RegistryError
from ..numbers import parse_position
from ..mirror.service import Mirror
from ..references import Digest
from .common import mirror_for, not_modified, registry_of
from .sendfile import SendfileResponse

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(offset, count) of a single byte range; None serves the whole blob.

    Several ranges, or a header we cannot read, are ignored as RFC 9110 allows.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    start, end = (_position(part) for part in match.groups())
    if start is None:  # suffix: the last N bytes
        count = min(end or 0, size)
        if count == 0:
            raise _unsatisfiable(size)
        return size - count, count
    end = size - 1 if end is None else min(end, size - 1)
    if start >= size or end < start:
        raise _unsatisfiable(size)
    return start, end - start + 1


def _position(digits: str) -> int | None:
    return parse_position(digits) if digits else None


def _unsatisfiable(size: int) -> RegistryError:
    return RegistryError("RANGE_INVALID", f"requested range not satisfiable; blob is {size} bytes",
                         headers={"Content-Range": f"bytes */{size}"})


async def get_blob(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    registry = registry_of(request)
    parsed = Digest.parse(digest)
    mirror = mirror_for(request, name)
    if mirror is not None:
        if not await registry.blobs.is_linked(name, parsed):
            return await mirrored_blob(request, mirror, name, parsed)
        mirror.count_hit(name, "blob")
    info = await registry.blobs.stat(name, parsed, recent_link=request.method == "GET")
    etag = f'"{parsed}"'
    headers = {
        "Docker-Content-Digest": str(parsed),
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }
    unchanged = not_modified(request, etag, headers)
    if unchanged is not None:
        return unchanged
    path = layout.blob_data(parsed)
    if request.method == "GET":
        events.blob_pulled(request, name, parsed, info.size)
        url = await registry.backend.redirect_url(path)
        if url is not None:
            return web.Response(status=307, headers={**headers, "Location": url})
    status, offset, count = 200, 0, info.size
    byte_range = parse_range(request.headers.get("Range"), info.size)
    if byte_range is not None:
        status, (offset, count) = 206, byte_range
        headers["Content-Range"] = f"bytes {offset}-{offset + count - 1}/{info.size}"
    local = registry.backend.local_file(path)
    # sendfile writes beneath TLS, which would corrupt an https stream: there the bytes go through the transport
    if local is not None and not _tls(request):
        data = None
        if request.method == "GET" and count:
            try:  # opened here, before any header is out, so that a vanished file is a clean 404
                data = open(local, "rb")
            except FileNotFoundError:
                raise registry.blobs.missing(parsed) from None
        return SendfileResponse(data, offset, count, status=status, headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = count
    chunks = registry.backend.read(path, offset, count) if request.method == "GET" else None
    # the first bytes come before the status line: a store that fails from the start is a clean 503
    try:
        first = await anext(chunks, b"") if chunks is not None else b""
    except PathNotFound:
        raise registry.blobs.missing(parsed) from None
    await response.prepare(request)
    if first:
        await response.write(first)
    if chunks is not None:
        async for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


def _tls(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


async def mirrored_blob(request: web.Request, mirror: Mirror, name: str, digest: Digest) -> web.StreamResponse:
    """A blob not cached yet. HEAD asks the upstream; GET streams the fill as it arrives, or,
    when another client's fill is already under way, waits for it and serves the stored blob."""
    headers = {"Docker-Content-Digest": str(digest), "ETag": f'"{digest}"', "Accept-Ranges": "bytes"}
    if request.method == "HEAD":
        size = await mirror.blob_size(name, digest)
        return web.Response(headers={**headers, "Content-Length": str(size),
                                     "Content-Type": "application/octet-stream"})
    fill = mirror.fill(name, digest)
    queue = None if "Range" in request.headers else fill.watch()
    if queue is None:
        await asyncio.shield(fill.done.wait())
        if fill.error is not None:
            raise fill.error
        return await get_blob(request, name, str(digest))
    try:
        await fill.headers_ready.wait()
        if fill.error is not None:
            raise fill.error
        events.blob_pulled(request, name, digest, fill.size)
        response = web.StreamResponse(headers=headers)
        response.content_type = "application/octet-stream"
        if fill.size is not None:
            response.content_length = fill.size
        await response.prepare(request)
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise ConnectionResetError(f"upstream fill of {digest} failed") from item
            await response.write(item)
        await response.write_eof()
        return response
    finally:
        fill.unwatch(queue)


async def delete_blob(request: web.Request, name: str, digest: str) -> web.Response:
    registry = registry_of(request)
    registry.check_deletable()
    parsed = Digest.parse(digest)
    await registry.blobs.unlink(name, parsed)
    await events.blob_deleted(request, name, parsed)
    return web.Response(status=202, headers={"Docker-Content-Digest": str(parsed)})
