"""GET /v2/<name>/tags/list"""

from aiohttp import web

from ..pagination import Page
from .common import json_response, next_link, registry_of


async def list_tags(request: web.Request, name: str) -> web.Response:
    page = Page.from_query(request.query)
    tags, last = await registry_of(request).tags.list(name, page)
    return json_response({"name": name, "tags": tags}, headers=next_link(request.path, page.n, last))
