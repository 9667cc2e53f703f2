"""The web UI: server-rendered pages at / and under /ui/, over the same domain services as the API.

Routes: `/` (repositories), `/ui/r/<name>` (tags), `/ui/r/<name>/-/manifest/<tag or digest>`,
`/ui/r/<name>/-/blob/<digest>`, `/ui/r/<name>/-/delete`, `/ui/storage`, `/ui/login`,
`/ui/logout` and `/ui/static/` (see urls.py).
"""

from __future__ import annotations

from pathlib import Path
import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..auth.guard import Guard
from ..domain import Registry
from ..errors import RegistryError
from ..mirror.service import Mirror
from ..references import check_name
from .actions import delete, login, logout
from .browse import blob_page, catalog, manifest_page, repository
from .format import FILTERS
from .pages import UI, UI_KEY, not_found, page, security_headers
from .session import SessionKeys
from .snapshots import Snapshots
from .storage import storage
from .urls import PREFIX, URL_HELPERS, split_repository_path
from .viewer import Viewer

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_FILES = frozenset(path.name for path in STATIC.iterdir())


async def repository_views(request: web.Request, ui: UI, viewer: Viewer) -> web.StreamResponse:
    name, view, reference = split_repository_path(request.match_info["path"])
    check_name(name)
    if request.method == "POST":
        if view == "delete" and reference is None:
            return await delete(request, ui, viewer, name)
    elif view is None:
        return await repository(request, ui, viewer, name)
    elif view == "manifest" and reference:
        return await manifest_page(request, ui, viewer, name, reference)
    elif view == "blob" and reference:
        return await blob_page(request, ui, viewer, name, reference)
    elif view == "delete" and reference is None:
        return await delete(request, ui, viewer, name)
    raise not_found("page")


async def static_file(request: web.Request) -> web.StreamResponse:
    """The stylesheet, script and icon; any other name is the API's 404 (aiohttp's static route
    answers a missing file with an empty 404 and a directory with a plain-text 403)."""
    name = request.match_info["filename"]
    if name not in STATIC_FILES:
        raise RegistryError("NOT_FOUND", f"no such file: {name[:100]}")
    return web.FileResponse(STATIC / name)


def setup(app: web.Application, registry: Registry, guard: Guard | None = None, mirror: Mirror | None = None,
          secret: str | None = None, base_url: str | None = None) -> None:
    """Serve the UI from app; `secret` (http.secret) signs sessions, else a key kept in the store."""
    ui = UI(registry, guard, mirror, SessionKeys(registry.backend, secret), Snapshots(registry), base_url)
    app[UI_KEY] = ui
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"),
                               autoescape=jinja2.select_autoescape(default=True), filters=FILTERS)
    env.globals.update(URL_HELPERS)
    app.router.add_get("/", page(catalog))
    app.router.add_get(f"{PREFIX}/r/{{path:.+}}", page(repository_views))
    app.router.add_post(f"{PREFIX}/r/{{path:.+}}", page(repository_views))
    app.router.add_get(f"{PREFIX}/storage", page(storage))
    app.router.add_get(f"{PREFIX}/login", page(login))
    app.router.add_post(f"{PREFIX}/login", page(login))
    app.router.add_post(f"{PREFIX}/logout", page(logout))
    app.router.add_get(f"{PREFIX}/static/{{filename}}", static_file)
    app.on_response_prepare.append(security_headers)

    async def note_writes(request: web.Request, response: web.StreamResponse) -> None:
        if request.method in ("PUT", "DELETE") and request.path.startswith("/v2/") and response.status < 300:
            ui.snapshots.changed()

    app.on_response_prepare.append(note_writes)
