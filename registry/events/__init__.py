"""Webhook notifications (Distribution's `notifications`), with a durable queue per endpoint.

The API handlers call one of these when a push, pull, mount or delete has succeeded. Each returns an
awaitable: writes await it (the event is then on disk, so it will be delivered), pulls need not.
Without endpoints configured they cost one lookup.
"""

from __future__ import annotations

from typing import Any, Awaitable, Generator, Sequence

from aiohttp import web

from ..domain import Registry
from ..manifests import IMAGE_TYPES, Manifest
from ..references import Digest, is_digest
from .envelope import BLOB_MEDIA_TYPE, target
from .notifier import NOTIFIER_KEY, Notifier, setup

__all__ = ["blob_deleted", "blob_mounted", "blob_pulled", "blob_pushed", "manifest_deleted", "manifest_pulled",
           "manifest_pushed", "setup"]


class _Done:
    """Awaitable at once: what the emitters return when nothing is configured."""

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())


DONE = _Done()


def _notifier(request: web.BaseRequest) -> Notifier | None:
    return request.app[NOTIFIER_KEY]  # type: ignore[return-value]


def _emit(request: web.BaseRequest, notifier: Notifier, action: str, target_fields: dict[str, Any]) -> Awaitable[None]:
    return notifier.emit(notifier.source.event(request, action, target_fields))


def _manifest_target(notifier: Notifier, request: web.BaseRequest, name: str, manifest: Manifest,
                     tag: str | None) -> dict[str, Any]:
    references = None
    if notifier.include_references:
        document = manifest.document
        children = [document.get("config"), *document.get("layers", [])] if manifest.media_type in IMAGE_TYPES \
            else document.get("manifests", [])
        references = [child for child in children if isinstance(child, dict)]
    return target(name, str(manifest.digest), manifest.media_type, len(manifest.body),
                  notifier.source.url(request, f"/v2/{name}/manifests/{manifest.digest}"), tag,
                  references=references)


def manifest_pushed(request: web.BaseRequest, name: str, manifest: Manifest, tags: Sequence[str]) -> Awaitable[None]:
    """One push event per tag set (one without a tag for a push by digest alone)."""
    notifier = _notifier(request)
    if notifier is None:
        return DONE
    futures = [_emit(request, notifier, "push", _manifest_target(notifier, request, name, manifest, tag))
               for tag in (tags or [None])]
    return futures[-1]  # written in order: the last one done means all are


def manifest_pulled(request: web.BaseRequest, name: str, manifest: Manifest, reference: str) -> Awaitable[None]:
    notifier = _notifier(request)
    if notifier is None:
        return DONE
    tag = None if is_digest(reference) else reference
    return _emit(request, notifier, "pull", _manifest_target(notifier, request, name, manifest, tag))


def manifest_deleted(request: web.BaseRequest, name: str, reference: str, tags: Sequence[str]) -> Awaitable[None]:
    """By digest: the manifest's delete event, then one per tag it took along; by tag: the tag's."""
    notifier = _notifier(request)
    if notifier is None:
        return DONE
    future = DONE
    if is_digest(reference):
        future = _emit(request, notifier, "delete", target(name, digest=str(Digest.parse(reference))))
    for tag in tags:
        future = _emit(request, notifier, "delete", target(name, tag=tag))
    return future


def _blob(request: web.BaseRequest, action: str, name: str, digest: Digest, size: int | None,
          from_repository: str | None = None) -> Awaitable[None]:
    notifier = _notifier(request)
    if notifier is None:
        return DONE
    url = notifier.source.url(request, f"/v2/{name}/blobs/{digest}")
    return _emit(request, notifier, action, target(name, str(digest), BLOB_MEDIA_TYPE, size, url,
                                                   from_repository=from_repository))


def blob_pushed(request: web.BaseRequest, name: str, digest: Digest, size: int) -> Awaitable[None]:
    return _blob(request, "push", name, digest, size)


def blob_pulled(request: web.BaseRequest, name: str, digest: Digest, size: int | None) -> Awaitable[None]:
    return _blob(request, "pull", name, digest, size)


async def blob_mounted(request: web.BaseRequest, registry: Registry, name: str, digest: Digest,
                       source: str | None) -> None:
    if _notifier(request) is not None:
        await _blob(request, "mount", name, digest, await registry.blobs.size(digest), source)


def blob_deleted(request: web.BaseRequest, name: str, digest: Digest) -> Awaitable[None]:
    notifier = _notifier(request)
    if notifier is None:
        return DONE
    return _emit(request, notifier, "delete", target(name, digest=str(digest)))
