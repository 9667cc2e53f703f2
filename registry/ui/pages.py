"""What every page shares: the UI's state, the session cookie, rendering, errors and security headers."""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web

from storage_backends import StorageError

from ..auth.guard import Guard
from ..domain import Registry
from ..errors import RegistryError
from ..forms import read_form
from ..mirror.service import Mirror
from .session import COOKIE, SESSION_SECONDS, Session, SessionKeys
from .snapshots import Snapshots
from .urls import PREFIX
from .viewer import Viewer, identity_of

log = logging.getLogger("registry.ui")

#: scripts and styles only from this server's own files; no inline script, no framing, forms post only here
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass
class UI:
    registry: Registry
    guard: Guard | None
    mirror: Mirror | None
    keys: SessionKeys
    snapshots: Snapshots
    #: http.host: the address shown in pull commands (else the one the browser used)
    base_url: str | None


UI_KEY = web.AppKey("ui", UI)
Page = Callable[[web.Request, UI, Viewer], Awaitable[web.StreamResponse]]


def is_ui_path(path: str) -> bool:
    return path == "/" or path.startswith(PREFIX + "/")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not is_ui_path(request.path):
        return
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith(f"{PREFIX}/static/"):
        response.headers["Cache-Control"] = "no-store"


async def viewer_of(request: web.Request, ui: UI) -> Viewer:
    """The visitor's session from the cookie; a new anonymous one when there is none that stands."""
    raw = request.cookies.get(COOKIE)
    session = await ui.keys.decode(raw) if raw else None
    identity = identity_of(ui.guard, session) if session is not None else None
    issue = False
    if session is None or identity is None:
        session = Session.new()
        identity = identity_of(ui.guard, session)
        # a cross-site navigation arrives without the (SameSite=Strict) cookie: answering it
        # with a new session would log the visitor out of the one their browser holds
        issue = request.headers.get("Sec-Fetch-Site") != "cross-site"
    assert identity is not None
    codec = await ui.keys.codec()
    return Viewer(session, identity, codec.csrf(session), ui.guard, issue)


def set_session(viewer: Viewer, session: Session, csrf: str) -> None:
    viewer.session, viewer.csrf, viewer.issue = session, csrf, True


def page(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A UI handler: it gets the UI and the viewer; failures become HTML error pages."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        ui = request.app[UI_KEY]
        viewer = await viewer_of(request, ui)
        try:
            response = await handler(request, ui, viewer)
        except RegistryError as error:
            response = error_page(request, viewer, error.status, error.message)
        except StorageError as exc:
            log.error("storage failure serving %s %s: %s", request.method, request.path, exc)
            response = error_page(request, viewer, 503, "The storage backend is unavailable; try again later.")
        if viewer.issue:
            codec = await ui.keys.codec()
            secure = request.secure or (ui.base_url or "").startswith("https:")
            response.set_cookie(COOKIE, codec.encode(viewer.session), max_age=SESSION_SECONDS, path="/",
                                httponly=True, samesite="Strict", secure=secure)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    return wrapped


def render(request: web.Request, viewer: Viewer, template: str, status: int = 200, **context: Any) -> web.Response:
    ui = request.app[UI_KEY]
    context.update(viewer=viewer, ui=ui, request=request, prefix=PREFIX,
                   deletes=ui.registry.policy.delete_enabled and not ui.registry.policy.read_only)
    return aiohttp_jinja2.render_template(template, request, context, status=status)


def see_other(location: str) -> web.Response:
    """A redirect returned (not raised), so that the page wrapper still sets the session cookie."""
    return web.Response(status=303, headers={"Location": location})


def error_page(request: web.Request, viewer: Viewer, status: int, message: str) -> web.Response:
    if status == 401:
        status = 403 if viewer.name else 401
    return render(request, viewer, "error.html", status=status, status_code=status, message=message)


def not_found(what: str) -> RegistryError:
    return RegistryError("NOT_FOUND", f"{what} not found (or you may not see it)")


async def check_form(request: web.Request, viewer: Viewer) -> dict[str, str]:
    """A POSTed form, refused unless it comes from one of this session's own pages.

    Cross-site requests carry no session (SameSite=Strict), and the CSRF token in the
    form must be this session's; a browser's Origin and Sec-Fetch-Site must say same origin.
    """
    origin = request.headers.get("Origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.host):
        raise RegistryError("DENIED", "cross-origin form submission refused")
    if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        raise RegistryError("DENIED", "cross-site form submission refused")
    form = await read_form(request)
    token = form.get("csrf")
    if viewer.issue or not isinstance(token, str) or not hmac.compare_digest(token, viewer.csrf):
        raise RegistryError("DENIED", "the form's session has ended or is not yours: reload the page and try again")
    return {key: value for key, value in form.items() if isinstance(value, str)}
