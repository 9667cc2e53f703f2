"""Cache eviction for mirrored content: by age and by total size, in the background.

    proxy:
      cache:
        maxage: 720h     # evict what was fetched (a tag: fetched or confirmed upstream) longer ago
        maxsize: 50GB    # beyond this, evict the oldest first; 500MB, 50GiB, or a number of bytes
        interval: 1h     # how often to look

The cache is what mirrored repositories link: each tag with the manifest it points at,
manifests pulled by digest, and blobs. The time an entry was cached is the mtime of its
link (a tag's `current` link, rewritten when the mirror confirms the tag upstream; a
manifest's revision link; a blob's layer link), so it is kept in the store and any replica
reads the same. Eviction removes those references, so a later pull fetches the content
again. Data is deleted as well only when no repository at all (local or mirrored) links it
any more; otherwise it stays for the others, and garbage collection decides later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from ..blobs import SET_ASIDE_GRACE
from ..catalog import linking_repositories
from ..config import schema
from ..observability.metrics import (
    MIRROR_CACHE_BYTES,
    MIRROR_DELETED_BYTES,
    MIRROR_EVICTED,
    MIRROR_EVICTED_BYTES,
    MIRROR_EVICTION_RUNS,
)
from ..periodic import run_every
from ..references import Digest
from .service import Mirror

log = logging.getLogger("registry.mirror.eviction")


@dataclass
class Entry:
    """One reference eviction may remove from a mirrored repository: a blob link, or a manifest
    with the tags on it (or tags pointing at no manifest)."""

    name: str
    cached_at: float
    content: tuple[Digest, ...]  # what it keeps in the cache
    layer: Digest | None = None
    manifest: Digest | None = None
    tags: tuple[str, ...] = ()

    @property
    def order(self) -> tuple[float, str, int]:
        """Oldest first; at one time a manifest goes before its blobs."""
        return self.cached_at, self.name, 1 if self.layer is not None else 0


@dataclass
class EvictionReport:
    evicted: Counter[str] = field(default_factory=Counter)  # entries, by reason
    evicted_bytes: Counter[str] = field(default_factory=Counter)  # bytes that left the cache, by reason
    deleted_bytes: int = 0  # blob data deleted from the store
    cache_bytes: int = 0  # what the cache holds afterwards


class CacheEvictor:
    def __init__(self, mirror: Mirror, settings: schema.ProxyCache, grace: float = SET_ASIDE_GRACE) -> None:
        self.mirror = mirror
        self.registry = mirror.registry
        self.settings = settings
        self.grace = grace
        self._sizes: dict[Digest, int] = {}  # blob data is immutable: its size is read once

    async def run(self) -> EvictionReport:
        """One pass: measure the cache, evict what is too old, then the oldest while it is too big."""
        report = EvictionReport()
        left_aside = await self.registry.blobs.set_aside_digests()
        now = time.time()
        entries = []
        for name in await self._repositories():
            if self.mirror.route(name) is not None:
                entries.extend(await self._entries(name))
        references = Counter(digest for entry in entries for digest in entry.content)
        sizes = {digest: await self._size(digest) for digest in references}
        self._sizes = {d: s for d, s in self._sizes.items() if d in sizes}
        total = sum(sizes.values())
        cutoff = None if self.settings.maxage is None else now - self.settings.maxage
        maxsize = self.settings.maxsize
        freed: list[Digest] = []
        for entry in sorted(entries, key=lambda e: e.order):
            if cutoff is not None and entry.cached_at < cutoff:
                reason = "age"
            elif maxsize is not None and total > maxsize:
                reason = "size"
            else:
                break  # the rest is younger, and the cache is small enough
            await self._remove(entry)
            report.evicted[reason] += 1
            for digest in entry.content:
                references[digest] -= 1
                if references[digest] == 0:
                    total -= sizes[digest]
                    report.evicted_bytes[reason] += sizes[digest]
                    freed.append(digest)
        report.cache_bytes = total
        report.deleted_bytes = await self._delete_unlinked(freed, left_aside)
        return report

    async def _repositories(self) -> list[str]:
        """Every repository, including those whose first push has linked blobs but no manifest yet."""
        return await linking_repositories(self.registry.backend)

    async def _entries(self, name: str) -> list[Entry]:
        blobs, manifests = self.registry.blobs, self.registry.manifests
        entries = []
        for digest in await blobs.linked(name):
            linked_at = await blobs.linked_at(name, digest)
            if linked_at is not None:
                entries.append(Entry(name, linked_at, (digest,), layer=digest))
        tags: dict[Digest, list[tuple[str, float]]] = {}
        revisions = set(await manifests.revisions(name))
        for tag, target, written in await manifests.tag_targets(name):
            if target is not None and target in revisions:
                tags.setdefault(target, []).append((tag, written))
            else:  # points at no manifest: it only goes away with age
                entries.append(Entry(name, written, (), tags=(tag,)))
        for digest in revisions:
            written_at = await manifests.revision_written_at(name, digest)
            if written_at is None:
                continue
            on_it = tags.get(digest, [])
            cached_at = max([written_at, *(t for _, t in on_it)])
            entries.append(Entry(name, cached_at, (digest,), manifest=digest, tags=tuple(t for t, _ in on_it)))
        return entries

    async def _size(self, digest: Digest) -> int:
        size = self._sizes.get(digest)
        if size is None:
            size = await self.registry.blobs.size(digest)
            if size is None:
                return 0  # linked, but its data is gone already
            self._sizes[digest] = size
        return size

    async def _remove(self, entry: Entry) -> None:
        if entry.layer is not None:
            await self.registry.blobs.drop_link(entry.name, entry.layer)
        else:
            await self.registry.manifests.forget(entry.name, entry.manifest, entry.tags)

    async def _linked_anywhere(self) -> set[Digest]:
        """Every digest some repository links, as a blob or as a manifest."""
        blobs, manifests = self.registry.blobs, self.registry.manifests
        linked: set[Digest] = set()
        for name in await self._repositories():
            linked.update(await blobs.linked(name))
            linked.update(await manifests.revisions(name))
        return linked

    async def _delete_unlinked(self, freed: list[Digest], left_aside: list[Digest]) -> int:
        """Delete the data of freed content no repository links, in two steps (see BlobStore.set_aside).

        Data an interrupted run left aside is decided on the same way.
        """
        if not freed and not left_aside:
            return 0
        blobs = self.registry.blobs
        linked = await self._linked_anywhere()
        aside = []
        for digest in left_aside:
            if digest in linked:
                await blobs.put_back(digest)
            else:
                aside.append(digest)
        for digest in dict.fromkeys(freed):
            if digest not in linked and digest not in aside and await blobs.set_aside(digest):
                aside.append(digest)
        if not aside:
            return 0
        try:
            await asyncio.sleep(self.grace)
            linked = await self._linked_anywhere()
        except asyncio.CancelledError:  # never leave data aside that may be linked
            for digest in aside:
                await asyncio.shield(blobs.put_back(digest))
            raise
        deleted = 0
        for digest in aside:
            if digest in linked:
                log.info("%s was linked again while it was being evicted; kept", digest)
                await blobs.put_back(digest)
            else:
                deleted += await blobs.delete_set_aside(digest)
        return deleted


def _record(report: EvictionReport) -> None:
    MIRROR_EVICTION_RUNS.inc()
    MIRROR_CACHE_BYTES.set(report.cache_bytes)
    MIRROR_DELETED_BYTES.inc(report.deleted_bytes)
    for reason, count in report.evicted.items():
        MIRROR_EVICTED.labels(reason).inc(count)
    for reason, size in report.evicted_bytes.items():
        MIRROR_EVICTED_BYTES.labels(reason).inc(size)
    if report.evicted:
        log.info("mirror cache: evicted %d entr%s (%d by age, %d by size), %d bytes left the cache, "
                 "%d bytes of unlinked data deleted; the cache holds %d bytes",
                 sum(report.evicted.values()), "y" if sum(report.evicted.values()) == 1 else "ies",
                 report.evicted["age"], report.evicted["size"], sum(report.evicted_bytes.values()),
                 report.deleted_bytes, report.cache_bytes)


async def evict_forever(evictor: CacheEvictor) -> None:
    """The background task (see run_every)."""

    async def evict() -> None:
        _record(await evictor.run())

    await run_every(evictor.settings.interval, evict, "mirror cache eviction", log)
