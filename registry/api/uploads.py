"""/v2/<name>/blobs/uploads/: start, mount, stream, chunk, finish, inspect and cancel uploads."""

from __future__ import annotations


from aiohttp import web

from .. import events
from ..errors import RegistryError
from ..references import ALGORITHMS, Digest, check_name
from ..uploads import upload_headers
from .common import GUARD_KEY, body_pieces, chunk_bounds, has_body, may_pull, registry_of


def _created(name: str, digest: Digest) -> web.Response:
    return web.Response(
        status=201,
        headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest)},
    )


def _digest_param(request: web.Request) -> Digest:
    raw = request.query.get("digest")
    if not raw:
        raise RegistryError("DIGEST_INVALID", "the digest query parameter is required to finish an upload")
    return Digest.parse(raw)


async def _may_mount(request: web.Request, source: str | None) -> bool:
    """Only from a repository the caller may read; with access control, a mount without `from`
    (from anywhere) would let anyone link any stored blob by digest, so it becomes an upload."""
    if source is None:
        return GUARD_KEY not in request.app
    return await may_pull(request, source, granted=True)


async def start_upload(request: web.Request, name: str) -> web.Response:
    registry = registry_of(request)
    registry.check_writable()
    mount = request.query.get("mount")
    source = request.query.get("from")
    if source is not None:  # checked even without mount: a malformed parameter is an error, not ignored
        check_name(source)
    if mount:
        digest = Digest.parse(mount)
        if await _may_mount(request, source) and await registry.blobs.mount(name, digest, source):
            await events.blob_mounted(request, registry, name, digest, source)
            return _created(name, digest)
    algorithm = request.query.get("digest-algorithm", "sha256")
    if algorithm not in ALGORITHMS:
        raise RegistryError("DIGEST_INVALID", f"unsupported digest algorithm {algorithm[:50]!r}")
    if "digest" in request.query:  # monolithic upload: the whole blob in this request
        digest = _digest_param(request)
        size = await registry.uploads.put_whole(name, digest, body_pieces(request), request.content_length)
        await events.blob_pushed(request, name, digest, size)
        return _created(name, digest)
    upload_id = await registry.uploads.start(name, algorithm)
    return web.Response(status=202, headers=upload_headers(name, upload_id, 0))


async def upload_status(request: web.Request, name: str, upload_id: str) -> web.Response:
    size = await registry_of(request).uploads.size(name, upload_id)
    return web.Response(status=204, headers=upload_headers(name, upload_id, size))


async def upload_chunk(request: web.Request, name: str, upload_id: str) -> web.Response:
    registry = registry_of(request)
    registry.check_writable()
    start, length = chunk_bounds(request)
    size = await registry.uploads.append(name, upload_id, body_pieces(request), start, length)
    return web.Response(status=202, headers=upload_headers(name, upload_id, size))


async def finish_upload(request: web.Request, name: str, upload_id: str) -> web.Response:
    registry = registry_of(request)
    registry.check_writable()
    digest = _digest_param(request)
    start, length = chunk_bounds(request)
    body = body_pieces(request) if has_body(request) else None
    size = await registry.uploads.finish(name, upload_id, digest, body, start, length)
    await events.blob_pushed(request, name, digest, size)
    return _created(name, digest)


async def cancel_upload(request: web.Request, name: str, upload_id: str) -> web.Response:
    registry = registry_of(request)
    registry.check_writable()
    await registry.uploads.cancel(name, upload_id)
    return web.Response(status=204)
