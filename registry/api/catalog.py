"""GET /v2/_catalog"""

from aiohttp import web

from ..pagination import Page
from .common import json_response, may_pull, next_link, registry_of

DEFAULT_PAGE_SIZE = 100


async def list_repositories(request: web.Request) -> web.Response:
    page = Page.from_query(request.query, default_n=DEFAULT_PAGE_SIZE)
    repositories, last = await registry_of(request).catalog.page(page)
    visible = [name for name in repositories if await may_pull(request, name)]
    return json_response({"repositories": visible}, headers=next_link(request.path, page.n, last))
