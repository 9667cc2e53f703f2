"""The pages that show what is stored: repositories, a repository's tags, a manifest, a blob."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from ..errors import RegistryError
from ..images import Platform, blob_descriptors, child_descriptors, kind_of
from ..manifests import Manifest
from ..numbers import parse_natural
from ..pagination import Page
from ..references import Digest
from .commands import pull_commands, registry_address
from .pages import UI, not_found, render, see_other
from .urls import PREFIX
from .viewer import Viewer

#: repositories per catalog page, and tags per repository page
CATALOG_PAGE = 50
TAGS_PAGE = 100
#: a search or a restricted view reads the catalog in batches of this many names, and stops after
#: SCAN_BUDGET names or SCAN_SECONDS, whichever comes first: it then offers to go on from there
#: (never a full scan per request)
SCAN_BATCH = 250
SCAN_BUDGET = 2500
SCAN_SECONDS = 0.1
MAX_QUERY = 200


def query_text(request: web.Request) -> str:
    return request.query.get("q", "").strip()[:MAX_QUERY]


async def visible_page(ui: UI, viewer: Viewer, query: str, last: str | None,
                       n: int = CATALOG_PAGE) -> tuple[list[str], str | None, bool]:
    """Up to n repositories after last that contain query and that the viewer may pull.

    Returns them, the `last` of the next page (None at the end), and whether the scan
    budget ran out before the page filled (the page then says how far it searched)."""
    needle = query.lower()
    found: list[str] = []
    cursor, scanned = last, 0
    deadline = time.monotonic() + SCAN_SECONDS
    while True:
        want = min(n + 1 if scanned == 0 else SCAN_BATCH, SCAN_BUDGET - scanned)
        batch, following = await ui.registry.catalog.page(Page(want, cursor))
        for position, name in enumerate(batch):
            scanned += 1
            cursor = name
            if needle in name.lower() and viewer.may(name):
                found.append(name)
                if len(found) == n:
                    more = position + 1 < len(batch) or following is not None
                    return found, (name if more else None), False
        if following is None:
            return found, None, False
        if scanned >= SCAN_BUDGET or time.monotonic() > deadline:
            return found, cursor, True


async def catalog(request: web.Request, ui: UI, viewer: Viewer) -> web.StreamResponse:
    if not viewer.sees_anything:
        return see_other(f"{PREFIX}/login")
    query = query_text(request)
    last = request.query.get("last") or None
    names, next_last, budget_spent = await visible_page(ui, viewer, query, last)
    snapshot = await ui.snapshots.get()
    rows = []
    for name in names:
        try:
            tags, _ = await ui.registry.tags.list(name, Page(None, None))
        except RegistryError:
            continue  # deleted since it was listed
        usage = snapshot.by_name.get(name) if snapshot else None
        shared = snapshot.sharing.repositories.get(name) if snapshot else None
        rows.append({"name": name, "tags": len(tags), "size": usage.total if usage else None,
                     "last_pushed": shared.last_pushed if shared else None})
    return render(request, viewer, "catalog.html", rows=rows, query=query, last=last, next_last=next_last,
                  budget_spent=budget_spent, snapshot=snapshot,
                  deleted=request.query.get("deleted"))


async def repository(request: web.Request, ui: UI, viewer: Viewer, name: str) -> web.StreamResponse:
    if not viewer.may(name):
        raise not_found(f"repository {name}")
    registry = ui.registry
    all_tags, _ = await registry.tags.list(name, Page(None, None))
    query = query_text(request)
    by_time = request.query.get("sort") == "time"
    tags = [tag for tag in all_tags if query.lower() in tag.lower()]
    times: dict[str, float | None] = {}
    if by_time:  # every matching tag's time, to order them: one stat each
        times = {tag: await registry.manifests.tag_written_at(name, tag) for tag in tags}
        tags.sort(key=lambda tag: (-(times[tag] or 0), tag))
    pages = max(1, -(-len(tags) // TAGS_PAGE))
    try:
        current = min(max(parse_natural(request.query.get("page", "1")), 1), pages)
    except ValueError:  # not a number (nor "²", nor 5,000 digits): the first page
        current = 1
    rows = []
    for tag in tags[(current - 1) * TAGS_PAGE:current * TAGS_PAGE]:
        written = times[tag] if by_time else await registry.manifests.tag_written_at(name, tag)
        try:
            manifest = await registry.manifests.get(name, tag)
        except RegistryError:
            rows.append({"tag": tag, "written": written, "manifest": None})
            continue
        rows.append({"tag": tag, "written": written, "manifest": manifest,
                     "summary": await registry.images.summary(manifest)})
    host, plain = registry_address(request, ui.base_url)
    return render(request, viewer, "repository.html", name=name, rows=rows, query=query,
                  sort="time" if by_time else "name", page=current, pages=pages, total=len(all_tags),
                  matching=len(tags), deleted=request.query.get("deleted"),
                  push=f"docker push {host}/{name}:TAG", may_delete=viewer.may(name, "delete"), plain=plain)


def _config_rows(config: dict[str, Any]) -> list[tuple[str, str | list[str]]]:
    """The config fields a person looks for, in that order, leaving out those not set; a list of
    strings is shown one per line (Env), commands as JSON arrays as docker inspect shows them."""
    inner = config.get("config") or {}
    platform = Platform.of(config)

    def command(value: Any) -> str | None:
        return json.dumps(value, ensure_ascii=False) if value else None

    rows: list[tuple[str, Any]] = [
        ("Created", config.get("created")),
        ("Platform", str(platform) if platform else None),
        ("Author", config.get("author")),
        ("Entrypoint", command(inner.get("Entrypoint"))),
        ("Cmd", command(inner.get("Cmd"))),
        ("Working dir", inner.get("WorkingDir")),
        ("User", inner.get("User")),
        ("Exposed ports", ", ".join(sorted(inner.get("ExposedPorts") or {}))),
        ("Volumes", ", ".join(sorted(inner.get("Volumes") or {}))),
        ("Stop signal", inner.get("StopSignal")),
        ("Env", [str(item) for item in inner.get("Env") or []]),
    ]
    return [(label, value if isinstance(value, list) else str(value)) for label, value in rows if value]


def _layers(manifest: Manifest, config: dict[str, Any], snapshot: Any) -> list[dict[str, Any]]:
    """Each layer with the history step that made it and how widely it is shared."""
    steps = [h for h in config.get("history") or [] if isinstance(h, dict) and not h.get("empty_layer")]
    layers = []
    for index, descriptor in enumerate(manifest.document.get("layers") or []):
        sharing = snapshot.sharing.blobs.get(Digest.parse(descriptor["digest"])) if snapshot else None
        layers.append({"descriptor": descriptor, "step": steps[index] if index < len(steps) else None,
                       "sharing": sharing})
    return layers


async def manifest_page(request: web.Request, ui: UI, viewer: Viewer, name: str, reference: str) -> web.StreamResponse:
    if not viewer.may(name):
        raise not_found(f"repository {name}")
    registry = ui.registry
    manifest = await registry.manifests.get(name, reference)
    config = await registry.images.config(manifest)
    snapshot = await ui.snapshots.get()
    children = []
    for descriptor in child_descriptors(manifest):
        child = await registry.images.child(descriptor)
        children.append({"descriptor": descriptor, "platform": Platform.of(descriptor.get("platform")),
                         "summary": await registry.images.summary(child) if child else None})
    referrers: dict[str, list[dict[str, Any]]] = {}
    for descriptor in await registry.referrers.list(name, manifest.digest, None):
        referrers.setdefault(descriptor.get("artifactType") or "(none)", []).append(descriptor)
    host, plain = registry_address(request, ui.base_url)
    tags = await registry.manifests.tags_of(name, manifest.digest)
    return render(
        request, viewer, "manifest.html", name=name, reference=reference, manifest=manifest,
        kind=kind_of(manifest), summary=await registry.images.summary(manifest), tags=tags,
        config=config, config_rows=_config_rows(config), labels=(config.get("config") or {}).get("Labels") or {},
        history=config.get("history") or [], layers=_layers(manifest, config, snapshot), children=children,
        config_descriptor=blob_descriptors(manifest)[0] if blob_descriptors(manifest) else None,
        referrers=sorted(referrers.items()), subject=manifest.subject, snapshot=snapshot,
        raw=json.dumps(manifest.document, indent=2, ensure_ascii=False),
        commands=pull_commands(host, plain, name, reference), may_delete=viewer.may(name, "delete"),
    )


async def blob_page(request: web.Request, ui: UI, viewer: Viewer, name: str, reference: str) -> web.StreamResponse:
    if not viewer.may(name):
        raise not_found(f"repository {name}")
    digest = Digest.parse(reference)
    info = await ui.registry.blobs.stat(name, digest)
    snapshot = await ui.snapshots.get()
    sharing = snapshot.sharing.blobs.get(digest) if snapshot else None
    visible = [repo for repo in sharing.some_repositories if viewer.may(repo)] if sharing else []
    host, plain = registry_address(request, ui.base_url)
    scheme = "http" if plain else "https"
    return render(request, viewer, "blob.html", name=name, digest=digest, size=info.size, sharing=sharing,
                  repositories=visible, snapshot=snapshot, came_from=request.query.get("manifest"),
                  fetch=f"curl -L -o blob {scheme}://{host}/v2/{name}/blobs/{digest}")
