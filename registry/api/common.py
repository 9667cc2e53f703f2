"""Request parsing and response helpers shared by the handlers."""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator

from aiohttp import web
from storage_backends import Piece

from ..auth.guard import Guard
from ..domain import Registry
from ..mirror.service import Mirror
from ..errors import RegistryError
from ..numbers import parse_position

REGISTRY_KEY = web.AppKey("registry", Registry)
GUARD_KEY = web.AppKey("guard", Guard)
MIRROR_KEY = web.AppKey("mirror", Mirror)
#: a request body goes to storage in pieces of about this size, each hashed and written in one thread hop;
#: aiohttp buffers up to twice this much before it stops reading the socket, so memory stays bounded
BODY_PIECE = 2 << 20
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]+)-([0-9]+)")


def registry_of(request: web.Request) -> Registry:
    return request.app[REGISTRY_KEY]


async def body_pieces(request: web.Request) -> AsyncIterator[list[Piece]]:
    """The request body, never the whole of it: lists of exactly BODY_PIECE bytes (the last one: the rest)
    made of the buffers the HTTP parser made, handed on as they are or as views of them (joining them would
    copy every byte once more). Where a list ends does not depend on how the body arrived, so neither does
    where a storage that cuts parts at list ends (S3) cuts them."""
    content = request.content
    content.set_read_chunk_size(BODY_PIECE)  # else aiohttp pauses the socket at every 128 KiB
    pieces: list[Piece] = []
    size = 0
    while True:
        data, end_of_http_chunk = await content.readchunk()
        if not data:
            if end_of_http_chunk:  # Transfer-Encoding: chunked marks its chunks' ends; the body goes on
                continue
            break
        rest: Piece = data
        while size + len(rest) >= BODY_PIECE:
            view = memoryview(rest)
            cut = BODY_PIECE - size
            pieces.append(view[:cut])
            yield pieces
            pieces, size, rest = [], 0, view[cut:]
        if rest:
            pieces.append(rest)
            size += len(rest)
    if pieces:
        yield pieces


def has_body(request: web.Request) -> bool:
    return request.body_exists and (request.content_length is None or request.content_length > 0)


def chunk_bounds(request: web.Request) -> tuple[int | None, int | None]:
    """(start, length) of a chunk: from Content-Range, checked against Content-Length,
    or (None, Content-Length) for a streamed body that just continues the upload."""
    raw = request.headers.get("Content-Range")
    if raw is None:
        return None, request.content_length
    match = _CONTENT_RANGE.fullmatch(raw.strip())
    if not match:
        raise RegistryError("RANGE_INVALID", f"malformed Content-Range {raw[:100]!r}; expected <start>-<end>")
    start, end = parse_position(match.group(1)), parse_position(match.group(2))  # ASCII digits, by the pattern
    if end < start:
        raise RegistryError("RANGE_INVALID", f"Content-Range {raw[:100]!r} ends before it starts")
    length = end - start + 1
    if request.content_length is not None and request.content_length != length:
        raise RegistryError(
            "SIZE_INVALID", f"Content-Range covers {length} bytes but Content-Length is {request.content_length}"
        )
    return start, length


def json_response(document: Any, status: int = 200, content_type: str = "application/json", **kw: Any) -> web.Response:
    return web.Response(body=json.dumps(document).encode(), status=status, content_type=content_type, **kw)


def next_link(path: str, n: int | None, last: str | None) -> dict[str, str]:
    """The Link header pointing at the next page, when there is one."""
    if last is None or n is None:
        return {}
    return {"Link": f'<{path}?n={n}&last={last}>; rel="next"'}


def not_modified(request: web.Request, etag: str, headers: dict[str, str]) -> web.Response | None:
    """304 when If-None-Match names this ETag (or `*`); content by digest never changes."""
    raw = request.headers.get("If-None-Match")
    if raw is None:
        return None
    candidates = {value.strip().removeprefix("W/") for value in raw.split(",")}
    if "*" in candidates or etag in candidates:
        return web.Response(status=304, headers=headers)
    return None


async def may_pull(request: web.Request, name: str, granted: bool = False) -> bool:
    """Whether the caller may read name (always, on a registry without auth); see Guard.may."""
    guard = request.app.get(GUARD_KEY)
    return guard is None or await guard.may(request, name, "pull", granted)


def mirror_for(request: web.Request, name: str) -> Mirror | None:
    """The mirror, when name is a mirrored repository."""
    mirror = request.app.get(MIRROR_KEY)
    return mirror if mirror is not None and mirror.route(name) is not None else None
