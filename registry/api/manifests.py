"""PUT, GET, HEAD and DELETE /v2/<name>/manifests/<reference>"""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from .. import events
from ..errors import RegistryError
from ..manifests import MAX_MANIFEST_SIZE
from ..references import is_digest
from .budget import MANIFEST_MEMORY_KEY
from .common import mirror_for, not_modified, registry_of

#: tags one manifest PUT may set with `?tag=` (the spec asks for at least 10)
MAX_TAG_PARAMS = 100


async def _read_limited(request: web.Request, take: Callable[[int], None]) -> bytes:
    """The body, refusing one over the manifest limit before reading more of it than the limit,
    and taking what it holds from the manifest memory budget first."""
    too_large = RegistryError("MANIFEST_TOO_LARGE", f"manifest exceeds the limit of {MAX_MANIFEST_SIZE} bytes")
    declared = request.content_length
    if declared is not None:
        if declared > MAX_MANIFEST_SIZE:
            raise too_large
        take(declared)  # the parser stops a body at its Content-Length
    parts: list[bytes] = []
    size = 0
    async for data in request.content.iter_any():
        size += len(data)
        if size > MAX_MANIFEST_SIZE:
            raise too_large
        if declared is None:
            take(len(data))
        parts.append(data)
    return b"".join(parts)


async def put_manifest(request: web.Request, name: str, reference: str) -> web.Response:
    registry = registry_of(request)
    registry.check_writable()
    tags = request.query.getall("tag", []) if is_digest(reference) else []
    if len(tags) > MAX_TAG_PARAMS:
        raise RegistryError("TOO_MANY_TAGS", f"at most {MAX_TAG_PARAMS} tag parameters per request")
    with request.app[MANIFEST_MEMORY_KEY].lease() as take:
        body = await _read_limited(request, take)
        manifest = await registry.manifests.put(name, reference, body, request.headers.get("Content-Type"), tags)
    await events.manifest_pushed(request, name, manifest, tags if is_digest(reference) else [reference])
    headers = {
        "Location": f"/v2/{name}/manifests/{manifest.digest}",
        "Docker-Content-Digest": str(manifest.digest),
    }
    if tags:
        headers["OCI-Tag"] = ", ".join(tags)
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject)
    return web.Response(status=201, headers=headers)


async def get_manifest(request: web.Request, name: str, reference: str) -> web.Response:
    """The manifest exactly as pushed: never converted, whatever the Accept lines ask for."""
    mirror = mirror_for(request, name)
    if mirror is not None:
        manifest = await mirror.manifest(name, reference)
    else:
        manifest = await registry_of(request).manifests.get(name, reference)
    etag = f'"{manifest.digest}"'
    headers = {"Docker-Content-Digest": str(manifest.digest), "ETag": etag}
    unchanged = not_modified(request, etag, headers)
    if unchanged is not None:
        return unchanged
    if request.method == "GET":
        events.manifest_pulled(request, name, manifest, reference)
    return web.Response(body=manifest.body, headers={**headers, "Content-Type": manifest.media_type})


async def delete_manifest(request: web.Request, name: str, reference: str) -> web.Response:
    registry = registry_of(request)
    registry.check_deletable()
    removed_tags = await registry.manifests.delete(name, reference)
    await events.manifest_deleted(request, name, reference, removed_tags)
    return web.Response(status=202)
