"""The mirror: mirrored names are served from the cache, filled from their upstream on a miss.

Manifests by digest are cached for good; a tag is confirmed upstream (HEAD)
once its ttl has passed, and served from the cache when the upstream fails or
answers 429. A missing blob is fetched once however many clients ask: the first
one streams it as it arrives, the others wait for it to be committed, and the
fill goes on for the next client when the first one hangs up. Content is
verified against its digest before it is committed, like any upload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from ..domain import Registry
from ..errors import RegistryError
from ..manifests import Manifest
from ..observability.metrics import MIRROR_REQUESTS
from ..numbers import parse_natural
from ..references import Digest, is_digest
from .upstream import MANIFEST_ACCEPT, Upstream, UpstreamError

log = logging.getLogger("registry.mirror")
#: chunks a streaming client may lag behind the upstream before the fill waits for it
SUBSCRIBER_CHUNKS = 64
READ_CHUNK = 1 << 20


class Mirror:
    def __init__(self, registry: Registry, upstreams: list[Upstream]) -> None:
        self.registry = registry
        # prefixed upstreams first: a catch-all ("" prefix) only takes what no prefix claims
        self.upstreams = sorted(upstreams, key=lambda u: (u.prefix == "", -len(u.prefix)))
        self._fills: dict[Digest, Fill] = {}

    def route(self, name: str) -> tuple[Upstream, str] | None:
        for upstream in self.upstreams:
            remote = upstream.remote_name(name)
            if remote is not None:
                return upstream, remote
        return None

    def local_name(self, name: str, ns: str | None) -> str:
        """containerd's `?ns=<upstream host>` names the upstream: its repositories live under that prefix."""
        if ns:
            for upstream in self.upstreams:
                if upstream.prefix == ns and not name.startswith(ns + "/"):
                    return f"{ns}/{name}"
        return name

    def count_hit(self, name: str, kind: str) -> None:
        """A mirrored blob served straight from the cache (the handler serves those itself)."""
        routed = self.route(name)
        if routed is not None:
            _counter(routed[0], kind)("hit")

    def refuse_writes(self, name: str) -> None:
        routed = self.route(name)
        if routed is not None:
            raise RegistryError("UNSUPPORTED", f"{name} is mirrored from {routed[0].url}; push to a local name instead")

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()

    # -- manifests -----------------------------------------------------------------------------

    async def manifest(self, name: str, reference: str) -> Manifest:
        upstream, remote = self._route(name)
        store = self.registry.manifests
        count = _counter(upstream, "manifest")
        if is_digest(reference):
            try:
                manifest = await store.get(name, reference)
            except RegistryError:
                pass
            else:
                count("hit")
                return manifest
            try:
                manifest = await self._fetch(upstream, remote, name, reference)
            except UpstreamError as exc:
                count("error")
                raise RegistryError("UNAVAILABLE", f"upstream {upstream.url} failed: {exc}") from None
            count("miss")
            return manifest
        written = await store.tag_written_at(name, reference)
        if written is not None and time.time() - written < upstream.ttl:
            try:
                manifest = await store.get(name, reference)
            except RegistryError:  # a tag whose manifest went (evicted): fetch it again
                written = None
            else:
                count("hit")
                return manifest
        try:
            upstream_digest = await self._head_digest(upstream, remote, reference)
            if written is not None and upstream_digest is not None:
                local = await store.resolve(name, reference)
                if str(local) == upstream_digest:
                    await store.confirm_tag(name, reference, local)
                    count("revalidated")
                    return await store.load(local, name)
            manifest = await self._fetch(upstream, remote, name, reference)
            count("miss")
            return manifest
        except UpstreamError as exc:
            if written is None:
                count("error")
                raise RegistryError("UNAVAILABLE", f"upstream {upstream.url} failed: {exc}") from None
            log.warning("serving %s:%s from the cache: %s", name, reference, exc)
            count("stale")
            return await store.get(name, reference)

    async def _head_digest(self, upstream: Upstream, remote: str, reference: str) -> str | None:
        response = await upstream.request("HEAD", remote, f"manifests/{reference}", {"Accept": MANIFEST_ACCEPT})
        response.release()
        if response.status == 404:
            raise RegistryError("MANIFEST_UNKNOWN", f"manifest {reference} unknown upstream")
        return response.headers.get("Docker-Content-Digest")

    async def _fetch(self, upstream: Upstream, remote: str, name: str, reference: str) -> Manifest:
        response = await upstream.request("GET", remote, f"manifests/{reference}", {"Accept": MANIFEST_ACCEPT})
        async with response:
            if response.status == 404:
                raise RegistryError("MANIFEST_UNKNOWN", f"manifest {reference} unknown upstream")
            if response.status != 200:
                raise UpstreamError(f"{upstream.url} answered {response.status} for manifest {reference}")
            body = await response.read()
            media_type = response.headers.get("Content-Type")
        # by digest the bytes are checked against it; by tag the digest is of the bytes stored
        return await self.registry.manifests.put(name, reference, body, media_type, check_references=False)

    # -- blobs ---------------------------------------------------------------------------------

    async def blob_size(self, name: str, digest: Digest) -> int:
        """HEAD of a blob not cached yet: asked upstream, nothing fetched."""
        upstream, remote = self._route(name)
        try:
            response = await upstream.request("HEAD", remote, f"blobs/{digest}")
        except UpstreamError as exc:
            _counter(upstream, "blob")("error")
            raise RegistryError("UNAVAILABLE", f"upstream {upstream.url} failed: {exc}") from None
        response.release()
        if response.status == 404:
            raise RegistryError("BLOB_UNKNOWN", f"blob {digest} unknown upstream")
        if response.status != 200:
            raise RegistryError("UNAVAILABLE", f"upstream {upstream.url} answered {response.status} for blob {digest}")
        try:
            return parse_natural(response.headers.get("Content-Length", ""))
        except ValueError:
            raise RegistryError("UNAVAILABLE", f"upstream {upstream.url} sent no size for blob {digest}") from None

    def fill(self, name: str, digest: Digest) -> "Fill":
        """The one fetch of this blob in progress, started if there is none."""
        fill = self._fills.get(digest)
        if fill is None or fill.done.is_set():
            upstream, remote = self._route(name)
            fill = Fill(self.registry, upstream, remote, name, digest)
            self._fills[digest] = fill
            fill.task = asyncio.create_task(self._run(fill))
        return fill

    async def _run(self, fill: "Fill") -> None:
        try:
            await fill.run()
        finally:
            if self._fills.get(fill.digest) is fill:
                del self._fills[fill.digest]

    def _route(self, name: str) -> tuple[Upstream, str]:
        routed = self.route(name)
        if routed is None:
            raise RegistryError("NAME_UNKNOWN", f"{name} is not mirrored")
        return routed


def _counter(upstream: Upstream, kind: str):  # type: ignore[no-untyped-def]
    label = upstream.prefix or upstream.url

    def count(result: str) -> None:
        MIRROR_REQUESTS.labels(label, kind, result).inc()

    return count


@dataclass(eq=False)
class Fill:
    """One upstream fetch of a blob into the store, which clients may watch as it arrives."""

    registry: Registry
    upstream: Upstream
    remote: str
    name: str
    digest: Digest
    size: int | None = None
    error: BaseException | None = None
    headers_ready: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    _watchers: set[asyncio.Queue[bytes | BaseException | None]] = field(default_factory=set)
    _streaming: bool = False
    _held: bytes | None = None  # the latest chunk, sent on once the next one (or the verdict) is in

    def watch(self) -> asyncio.Queue[bytes | BaseException | None] | None:
        """A queue of every chunk from the first one on, or None when the fill is already past it
        (the caller then waits for `done` and serves the stored blob)."""
        if self._streaming or self.done.is_set():
            return None
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(SUBSCRIBER_CHUNKS)
        self._watchers.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[bytes | BaseException | None]) -> None:
        self._watchers.discard(queue)
        while not queue.empty():  # a fill waiting for room in it (its client hung up) goes on
            queue.get_nowait()

    async def run(self) -> None:
        count = _counter(self.upstream, "blob")
        try:
            response = await self.upstream.request("GET", self.remote, f"blobs/{self.digest}")
            async with response:
                if response.status == 404:
                    raise RegistryError("BLOB_UNKNOWN", f"blob {self.digest} unknown upstream")
                if response.status != 200:  # e.g. 401 with wrong credentials: not a missing blob
                    raise UpstreamError(f"{self.upstream.url} answered {response.status} for blob {self.digest}")
                self.size = response.content_length
                self.headers_ready.set()
                await self.registry.uploads.put_whole(self.name, self.digest, self._relay(response), self.size)
            count("miss")
            if self._held is not None:
                await self._broadcast(self._held)
            await self._broadcast(None)
        except BaseException as exc:  # the store kept nothing; watchers see the connection drop
            # what the upstream sent is at fault, not the client: a digest mismatch is the upstream's
            upstream_fault = isinstance(exc, UpstreamError) or (
                isinstance(exc, RegistryError) and exc.code in ("DIGEST_INVALID", "SIZE_INVALID"))
            self.error = RegistryError("UNAVAILABLE", f"upstream {self.upstream.url} failed: {exc}") \
                if upstream_fault else exc
            count("error")
            log.warning("fill of %s from %s failed: %s", self.digest, self.upstream.url, exc)
            self.headers_ready.set()
            await self._broadcast(self.error)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.done.set()

    async def _relay(self, response) -> AsyncIterator[list[bytes]]:  # type: ignore[no-untyped-def]
        """Each chunk goes to the watchers when the next one arrives, the last one only once the blob
        verified: a watcher never receives the whole of a body that does not match its digest."""
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            self._streaming = True
            if self._held is not None:
                await self._broadcast(self._held)
            self._held = chunk
            yield [chunk]

    async def _broadcast(self, item: bytes | BaseException | None) -> None:
        for queue in list(self._watchers):
            await queue.put(item)
