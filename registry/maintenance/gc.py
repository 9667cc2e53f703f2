"""Garbage collection: delete blob data nothing references any more, offline or while serving.

    storage:
      gc:
        enabled: false       # run in the background while serving
        interval: 1h
        grace: 1h            # content younger than this is never collected
        deleteuntagged: false

Mark: every manifest a repository holds (with deleteuntagged only those a tag reaches, the
children of kept indexes and the referrers of kept manifests), and for each the config, the
layers and the child manifests it names. Sweep: stored data that is not marked and older than
the grace period goes, with the repositories' blob links to it and the blob's directory. A blob
only `_layers` links name (what a manifest DELETE leaves) is not marked: a repository serves
it, but no image needs it, and Distribution's collector frees it too.

The store is read in bulk (inventory.py): the mark reads one repository at a time as
a listing streams by, the sweep streams the blob store, and the marked digests are kept as
raw bytes, so memory grows by about 100 bytes per referenced blob and nothing per
unreferenced one, beyond the candidates themselves.

A push writes data before the link or manifest that references it, so "young" protects
pushes in progress: data, a blob link or a manifest revision younger than the grace period
keeps the blob. Deletion takes two steps, as the mirror's eviction does: the data is moved
aside, the store is looked at again (new manifests, new links), and only then is it deleted
or put back; a push that finds the data stored and writes its link within SET_ASIDE_GRACE is
safe. What this cannot see is a client that holds on to a digest for longer than the grace
period before referencing it (a blob pushed an hour before its manifest).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from storage_backends import PathNotFound

from .. import layout
from ..blobs import SET_ASIDE_GRACE
from ..domain import Registry
from ..errors import RegistryError
from ..links import read_link
from ..observability.metrics import GC_FREED_BYTES, GC_FREED_OBJECTS, GC_LAST_SUCCESS, GC_RUNS
from ..periodic import run_every
from ..references import Digest
from .inventory import (READS, Key, RepositoryLinks, data_info, digest_of, for_each, gather_bounded, key_of,
                        key_of_text, repositories, stored_blobs)

log = logging.getLogger("registry.gc")

DEFAULT_GRACE = 3600.0
#: manifests whose references are remembered (an LRU): a manifest in several repositories is read once
REMEMBERED_MANIFESTS = 4096
#: blobs set aside in one go
SET_ASIDE_BATCH = 1000


@dataclass
class GCReport:
    dry_run: bool = False
    freed: dict[Digest, int] = field(default_factory=dict)  # blob data deleted (or that would be), by digest
    untagged: list[tuple[str, Digest]] = field(default_factory=list)  # manifests removed from repositories
    links_removed: int = 0  # repositories' blob links to freed data
    kept_young: int = 0  # unreferenced data kept because it (or a link to it) is younger than grace

    @property
    def freed_bytes(self) -> int:
        return sum(self.freed.values())

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        text = f"{verb} {len(self.freed)} object(s), {self.freed_bytes} bytes"
        if self.untagged:
            text += f"; {'would remove' if self.dry_run else 'removed'} {len(self.untagged)} untagged manifest(s)"
        if self.kept_young:
            text += f"; kept {self.kept_young} unreferenced object(s) younger than the grace period"
        return text


class Observer:
    """What `registry du` learns from a collection's walk of the store, without a walk of its own."""

    def repository(self, name: str, content: set[Key]) -> None:
        """A repository's content: the manifests it keeps and everything they reference."""

    def blob(self, key: Key, size: int) -> None:
        """A blob's data in the blob store, each once."""


@dataclass
class _Mark:
    """What the mark found. Digests are compact keys (see inventory.py)."""

    referenced: set[Key] = field(default_factory=set)  # manifests kept and all they reference
    seen: set[bytes] = field(default_factory=set)  # (repository, manifest) pairs looked at, hashed
    #: links of repositories to blobs their own manifests do not reference (all a collected blob
    #: can have), with when they were written where the listing says
    strays: dict[Key, list[tuple[str, float | None]]] = field(default_factory=dict)


def _pair(name: str, key: Key) -> bytes:
    """A repository and a manifest in 16 bytes."""
    return hashlib.blake2b(name.encode() + b"\0" + key, digest_size=16).digest()


class GarbageCollector:
    def __init__(self, registry: Registry, grace: float = DEFAULT_GRACE, delete_untagged: bool = False,
                 dry_run: bool = False, settle: float = SET_ASIDE_GRACE) -> None:
        self.registry = registry
        self.backend = registry.backend
        self.grace = grace
        self.delete_untagged = delete_untagged
        self.dry_run = dry_run
        self.settle = settle
        self._refs: OrderedDict[Key, tuple[Key, ...]] = OrderedDict()

    async def run(self, observer: Observer | None = None) -> GCReport:
        report = GCReport(dry_run=self.dry_run)
        self._refs.clear()
        cutoff = time.time() - self.grace
        left_aside = [] if self.dry_run else await self.registry.blobs.set_aside_digests()
        mark = await self._mark(cutoff, report, observer)
        candidates = await self._candidates(mark, cutoff, report, observer)
        if self.dry_run:
            report.freed = {digest_of(key): size for key, size in candidates.items()}
            return report
        aside: dict[Key, int | None] = {key_of(digest): None for digest in left_aside}  # -> size, if known
        todo = [key for key in candidates if key not in aside]
        batch: list[Digest] = []
        try:
            for start in range(0, len(todo), SET_ASIDE_BATCH):
                batch = [digest_of(key) for key in todo[start:start + SET_ASIDE_BATCH]]
                for digest in await self.registry.blobs.set_aside_batch(batch):
                    aside[key_of(digest)] = candidates[key_of(digest)]
        except BaseException:  # never leave data aside that may be linked (a batch may be half done)
            for digest in {*map(digest_of, aside), *batch}:
                await asyncio.shield(self.registry.blobs.put_back(digest))
            raise
        if aside:
            await self._decide(aside, mark, cutoff, report)
        return report

    # -- mark ------------------------------------------------------------------------------------

    async def _mark(self, cutoff: float, report: GCReport, observer: Observer | None) -> _Mark:
        """What kept manifests reference, every (repository, manifest) pair looked at, and the links
        to anything else; one repository at a time, several at once."""
        mark = _Mark()

        async def look_at(repository: RepositoryLinks) -> None:
            name = repository.name
            revisions = set(repository.revisions)
            mark.seen.update(_pair(name, key) for key in revisions)
            kept = await self._kept(repository, cutoff) if self.delete_untagged else revisions
            untagged = revisions - kept
            if untagged:
                kept |= untagged & await self._tagged_now(name)  # tagged since the mark looked
            for key in sorted(untagged - kept):
                digest = digest_of(key)
                report.untagged.append((name, digest))
                if not self.dry_run:
                    await self.registry.manifests.forget(name, digest, ())
            content: set[Key] = set()
            for key in kept:
                content.update(await self._references(key))
            mark.referenced |= content
            for key, linked_at in repository.layers.items():
                if key not in content:
                    mark.strays.setdefault(key, []).append((name, linked_at))
            if observer is not None:
                observer.repository(name, content)

        await for_each(repositories(self.backend, tags=self.delete_untagged), look_at, READS)
        return mark

    async def _kept(self, repository: RepositoryLinks, cutoff: float) -> set[Key]:
        """Manifests a tag reaches, through index children and referrers; young ones (a push in progress)."""
        revisions = repository.revisions
        targets = await gather_bounded([self._tag_target(repository.name, tag) for tag in repository.tags], READS)
        roots = [key for key in targets if key is not None and key in revisions]
        for key, written in revisions.items():
            if written is None:
                written = await self.registry.manifests.revision_written_at(repository.name, digest_of(key))
            if written is None or written >= cutoff:
                roots.append(key)
        kept: set[Key] = set()
        while roots:
            key = roots.pop()
            if key in kept:
                continue
            kept.add(key)
            roots.extend(k for k in await self._references(key) if k in revisions and k not in kept)
            roots.extend(k for k in repository.referrers.get(key, ()) if k in revisions and k not in kept)
        return kept

    async def _tagged_now(self, name: str) -> set[Key]:
        """What the repository's tags point at, read again (the tags directory too)."""
        try:
            tags = await self.backend.list(layout.tags_dir(name))
        except PathNotFound:
            return set()
        return {key for key in await gather_bounded([self._tag_target(name, tag) for tag in tags], READS) if key}

    async def _tag_target(self, name: str, tag: str) -> Key | None:
        try:
            digest = await read_link(self.backend, layout.tag_current_link(name, tag))
        except RegistryError:  # not a digest: the tag points at nothing
            return None
        return None if digest is None else key_of(digest)

    async def _references(self, key: Key) -> tuple[Key, ...]:
        """The manifest itself, its config and layers, or its child manifests (the last few remembered)."""
        found = self._refs.get(key)
        if found is not None:
            self._refs.move_to_end(key)
            return found
        named = await self.registry.manifests.references(digest_of(key)) or []
        found = (key, *(k for k in map(key_of_text, named) if k is not None))  # others: not a digest of ours
        self._refs[key] = found
        if len(self._refs) > REMEMBERED_MANIFESTS:
            self._refs.popitem(last=False)
        return found

    async def _linked_lately(self, key: Key, links: list[tuple[str, float | None]], cutoff: float) -> bool:
        """Whether any of these links was written within the grace period (or is being written)."""
        for name, linked_at in links:
            if linked_at is None:
                linked_at = await self.registry.blobs.linked_at(name, digest_of(key))
            if linked_at is None or linked_at >= cutoff:  # no file: being written, or just deleted
                return True
        return False

    # -- sweep -----------------------------------------------------------------------------------

    async def _candidates(self, mark: _Mark, cutoff: float, report: GCReport,
                          observer: Observer | None) -> dict[Key, int]:
        """Unreferenced data older than grace that no repository linked within grace, with its size."""
        candidates: dict[Key, int] = {}
        async for key, listed in stored_blobs(self.backend):
            if key in mark.referenced and observer is None:
                continue
            info = await data_info(self.backend, key, listed)
            if info is None:
                continue  # a directory without data: nothing to free
            if observer is not None:
                observer.blob(key, info.size)
            if key in mark.referenced:
                continue
            if info.mtime >= cutoff or await self._linked_lately(key, mark.strays.get(key, []), cutoff):
                report.kept_young += 1
                continue
            candidates[key] = info.size
        return candidates

    async def _decide(self, aside: dict[Key, int | None], mark: _Mark, cutoff: float, report: GCReport) -> None:
        """After a pause, look again: data that a new manifest references or a new link or revision
        names goes back; the rest is deleted with its (old) links."""
        blobs = self.registry.blobs
        linked: dict[Key, list[tuple[str, float | None]]] = {}
        now_referenced: set[Key] = set()
        try:
            await asyncio.sleep(self.settle)

            async def look_again(repository: RepositoryLinks) -> None:
                for key, linked_at in repository.layers.items():
                    if key in aside:
                        linked.setdefault(key, []).append((repository.name, linked_at))
                for key in repository.revisions:
                    if key in aside or _pair(repository.name, key) not in mark.seen:
                        now_referenced.update(await self._references(key))

            await for_each(repositories(self.backend, tags=False), look_again, READS)
            doomed: list[Digest] = []
            links: list[tuple[str, Digest]] = []
            for key, size in aside.items():
                digest = digest_of(key)
                names = linked.get(key, [])
                if key in mark.referenced or key in now_referenced or await self._linked_lately(key, names, cutoff):
                    log.info("%s was referenced again while it was being collected; kept", digest)
                    await blobs.put_back(digest)
                    report.kept_young += 1
                    continue
                doomed.append(digest)
                links += [(name, digest) for name, _ in names]
                report.freed[digest] = await blobs.set_aside_size(digest) if size is None else size
        except BaseException:  # never leave data aside that may be linked
            for key in aside:
                await asyncio.shield(blobs.put_back(digest_of(key)))
            raise
        report.links_removed += await blobs.drop_links(links)
        await blobs.delete_set_aside_batch(doomed)


async def collect_forever(collector: GarbageCollector, interval: float,
                          before: Callable[[], Awaitable[None]] | None = None) -> None:
    """The background task (see run_every). `before` runs ahead of each collection (the retention
    policy, whose untagging it then reaps)."""

    async def collect() -> None:
        if before is not None:
            await before()
        report = await collector.run()
        if report.freed or report.untagged:
            log.warning("garbage collection: %s", report.summary())
        GC_FREED_OBJECTS.inc(len(report.freed))
        GC_FREED_BYTES.inc(report.freed_bytes)

    await run_every(interval, collect, "garbage collection", log, (GC_RUNS, GC_LAST_SUCCESS))
