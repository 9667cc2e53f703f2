"""GET /v2/: the API version check clients start with."""

from aiohttp import web

from .common import json_response


async def version_check(request: web.Request) -> web.Response:
    return json_response({})
