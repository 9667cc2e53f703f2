"""The pages that change something: logging in and out, and deleting a tag or a manifest."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from aiohttp import web

from ..errors import RegistryError
from ..references import is_digest
from .pages import UI, check_form, render, see_other, set_session
from .session import Session
from .urls import PREFIX, repository_url
from .viewer import Viewer, log_in

log = logging.getLogger("registry.ui")


async def login(request: web.Request, ui: UI, viewer: Viewer) -> web.StreamResponse:
    guard = ui.guard
    if guard is None:
            return see_other("/")
    error = None
    if request.method == "POST":
        form = await check_form(request, viewer)
        try:
            session = await log_in(request, guard, form.get("username", "").strip(), form.get("password", ""),
                                   form.get("token", "").strip())
        except RegistryError as exc:
            if exc.status == 429:
                raise
            error = exc.message
        else:
            codec = await ui.keys.codec()
            set_session(viewer, session, codec.csrf(session))
            return see_other("/")
    return render(request, viewer, "login.html", status=401 if error else 200, error=error,
                  passwords=guard.htpasswd is not None, tokens=guard.verifier is not None)


async def logout(request: web.Request, ui: UI, viewer: Viewer) -> web.StreamResponse:
    await check_form(request, viewer)
    session = Session.new()
    codec = await ui.keys.codec()
    set_session(viewer, session, codec.csrf(session))
    return see_other("/" if ui.guard is None else f"{PREFIX}/login")


async def delete(request: web.Request, ui: UI, viewer: Viewer, name: str) -> web.StreamResponse:
    """GET: what would go, and a form to confirm. POST (from that form): delete it."""
    registry = ui.registry
    if not viewer.may(name):
        raise RegistryError("NOT_FOUND", f"repository {name} not found (or you may not see it)")
    registry.check_deletable()
    if not viewer.may(name, "delete"):
        raise RegistryError("DENIED", f"you may not delete in {name}")
    if ui.mirror is not None:
        ui.mirror.refuse_writes(name)
    form = await check_form(request, viewer) if request.method == "POST" else dict(request.query)
    reference = form.get("reference", "")
    digest = await registry.manifests.resolve(name, reference)  # 404 for a tag or digest it does not hold
    if request.method == "POST":
        await registry.manifests.delete(name, reference)
        ui.snapshots.changed()
        log.warning("web UI: %s deleted %s %s@%s", viewer.name or "anonymous", "tag" if not is_digest(reference)
                    else "manifest", name, reference)
        try:  # its last manifest gone, a repository has no page (no tags) on any backend
            await registry.manifests.check_has_manifests(name)
        except RegistryError:
            return see_other(f"/?{urlencode({'deleted': f'{name}@{reference}'})}")
        return see_other(f"{repository_url(name)}?{urlencode({'deleted': reference})}")
    tags = await registry.manifests.tags_of(name, digest) if is_digest(reference) else []
    return render(request, viewer, "delete.html", name=name, reference=reference, digest=digest,
                  by_digest=is_digest(reference), tags=tags)
