"""GET /openapi.yaml: the description of every route this server has (openapi.yaml at the repository root)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from aiohttp import web

#: a link to the repository's openapi.yaml, so that an installed package carries it too
DOCUMENT = Path(__file__).with_name("openapi.yaml")


@cache
def _document() -> bytes:
    return DOCUMENT.read_bytes()


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=_document(), content_type="application/yaml")
