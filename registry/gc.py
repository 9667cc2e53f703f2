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
the grace period goes, with the repositories' blob links to it.

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
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from storage_backends import PathNotFound

from . import layout
from .blobs import SET_ASIDE_GRACE
from .catalog import linking_repositories
from .domain import Registry
from .errors import RegistryError
from .links import digests_under, stored_digests
from .manifests import IMAGE_TYPES, INDEX_TYPES
from .observability.metrics import GC_FREED_BYTES, GC_FREED_OBJECTS, GC_LAST_SUCCESS, GC_RUNS, record_run
from .references import Digest

log = logging.getLogger("registry.gc")

DEFAULT_GRACE = 3600.0
MAX_START_DELAY = 3600.0


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


class GarbageCollector:
    def __init__(self, registry: Registry, grace: float = DEFAULT_GRACE, delete_untagged: bool = False,
                 dry_run: bool = False, settle: float = SET_ASIDE_GRACE) -> None:
        self.registry = registry
        self.backend = registry.backend
        self.grace = grace
        self.delete_untagged = delete_untagged
        self.dry_run = dry_run
        self.settle = settle
        self._refs: dict[Digest, frozenset[Digest]] = {}

    async def run(self) -> GCReport:
        report = GCReport(dry_run=self.dry_run)
        self._refs = {}
        cutoff = time.time() - self.grace
        left_aside = [] if self.dry_run else await self.registry.blobs.set_aside_digests()
        referenced, seen, links = await self._mark(cutoff, report)
        candidates = await self._candidates(referenced, links, cutoff, report)
        if self.dry_run:
            report.freed = candidates
            return report
        aside = list(left_aside)
        for digest in candidates:
            if digest not in aside and await self.registry.blobs.set_aside(digest):
                aside.append(digest)
        if aside:
            await self._decide(aside, referenced, seen, cutoff, report)
        return report

    # -- mark ------------------------------------------------------------------------------------

    async def _mark(self, cutoff: float, report: GCReport
                    ) -> tuple[set[Digest], set[tuple[str, Digest]], dict[Digest, list[str]]]:
        """What kept manifests reference; the (repository, manifest) pairs looked at; who links each blob."""
        manifests = self.registry.manifests
        referenced: set[Digest] = set()
        seen: set[tuple[str, Digest]] = set()
        links: dict[Digest, list[str]] = {}
        for name in await linking_repositories(self.backend):
            for digest in await self.registry.blobs.linked(name):
                links.setdefault(digest, []).append(name)
            revisions = set(await manifests.revisions(name))
            seen.update((name, d) for d in revisions)
            kept = await self._kept(name, revisions, cutoff) if self.delete_untagged else revisions
            for digest in sorted(revisions - kept, key=str):
                if await manifests.tags_of(name, digest):
                    kept.add(digest)  # tagged since the mark looked
                    continue
                report.untagged.append((name, digest))
                if not self.dry_run:
                    await manifests.forget(name, digest, ())
            for digest in kept:
                referenced |= await self._references(digest)
        return referenced, seen, links

    async def _kept(self, name: str, revisions: set[Digest], cutoff: float) -> set[Digest]:
        """Manifests a tag reaches, through index children and referrers; young ones (a push in progress)."""
        manifests = self.registry.manifests
        roots = [target for _, target, _ in await manifests.tag_targets(name) if target in revisions]
        for digest in revisions:
            written = await manifests.revision_written_at(name, digest)
            if written is None or written >= cutoff:
                roots.append(digest)
        kept: set[Digest] = set()
        while roots:
            digest = roots.pop()
            if digest in kept:
                continue
            kept.add(digest)
            roots.extend(d for d in await self._references(digest) if d in revisions and d not in kept)
            referrers = await digests_under(self.backend, layout.referrers_dir(name, digest))
            roots.extend(d for d in referrers if d in revisions and d not in kept)
        return kept

    async def _references(self, digest: Digest) -> frozenset[Digest]:
        """The manifest itself, its config and layers, or its child manifests."""
        found = self._refs.get(digest)
        if found is not None:
            return found
        names = {digest}
        try:
            manifest = await self.registry.manifests.load(digest)
        except RegistryError:  # data gone: nothing more to keep
            manifest = None
        if manifest is not None:
            document = manifest.document
            if manifest.media_type in IMAGE_TYPES:
                descriptors = [document.get("config"), *(document.get("layers") or [])]
            elif manifest.media_type in INDEX_TYPES:
                descriptors = list(document.get("manifests") or [])
            else:
                descriptors = []
            for descriptor in descriptors:
                try:
                    names.add(Digest.parse(str(descriptor["digest"])))
                except (RegistryError, KeyError, TypeError):
                    continue  # not one of ours: another registry's data
        self._refs[digest] = frozenset(names)
        return self._refs[digest]

    # -- sweep -----------------------------------------------------------------------------------

    async def _candidates(self, referenced: set[Digest], links: dict[Digest, list[str]], cutoff: float,
                          report: GCReport) -> dict[Digest, int]:
        """Unreferenced data older than grace whose every link is older than grace, with its size."""
        candidates: dict[Digest, int] = {}
        for digest in await stored_digests(self.backend):
            if digest in referenced:
                continue
            try:
                info = await self.backend.stat(layout.blob_data(digest))
            except PathNotFound:
                continue
            if info.mtime >= cutoff or await self._linked_lately(digest, links.get(digest, ()), cutoff):
                report.kept_young += 1
                continue
            candidates[digest] = info.size
        return candidates

    async def _linked_lately(self, digest: Digest, names: Any, cutoff: float) -> bool:
        for name in names:
            linked_at = await self.registry.blobs.linked_at(name, digest)
            if linked_at is None or linked_at >= cutoff:  # no file: being written, or just deleted
                return True
        return False

    async def _decide(self, aside: list[Digest], referenced: set[Digest], seen: set[tuple[str, Digest]],
                      cutoff: float, report: GCReport) -> None:
        """After a pause, look again: data that a new manifest references or a new link or revision
        names goes back; the rest is deleted with its (old) links."""
        blobs = self.registry.blobs
        try:
            await asyncio.sleep(self.settle)
            wanted = set(aside)
            now_referenced: set[Digest] = set()
            linked: dict[Digest, list[str]] = {}
            for name in await linking_repositories(self.backend):
                for digest in await blobs.linked(name):
                    if digest in wanted:
                        linked.setdefault(digest, []).append(name)
                for digest in await self.registry.manifests.revisions(name):
                    if digest in wanted or (name, digest) not in seen:
                        now_referenced |= await self._references(digest)
        except asyncio.CancelledError:  # never leave data aside that may be linked
            for digest in aside:
                await asyncio.shield(blobs.put_back(digest))
            raise
        for digest in aside:
            names = linked.get(digest, [])
            if digest in referenced or digest in now_referenced or await self._linked_lately(digest, names, cutoff):
                log.info("%s was referenced again while it was being collected; kept", digest)
                await blobs.put_back(digest)
                report.kept_young += 1
                continue
            for name in names:
                if await blobs.drop_link(name, digest):
                    report.links_removed += 1
            size = await blobs.delete_set_aside(digest)
            if size:
                report.freed[digest] = size


async def collect_forever(collector: GarbageCollector, interval: float,
                          before: Callable[[], Awaitable[None]] | None = None) -> None:
    """The background task: a run, then `interval` of sleep, until cancelled. The first run waits a
    random part of the interval (at most an hour), so that replicas started together spread out.
    `before` runs ahead of each collection (the retention policy, whose untagging it then reaps)."""
    await asyncio.sleep(random.uniform(0, min(interval, MAX_START_DELAY)))
    while True:
        try:
            if before is not None:
                await before()
            report = await collector.run()
            if report.freed or report.untagged:
                log.warning("garbage collection: %s", report.summary())
            GC_FREED_OBJECTS.inc(len(report.freed))
            GC_FREED_BYTES.inc(report.freed_bytes)
            record_run(GC_RUNS, GC_LAST_SUCCESS, ok=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            record_run(GC_RUNS, GC_LAST_SUCCESS, ok=False)
            log.exception("garbage collection failed; trying again in %.0fs", interval)
        await asyncio.sleep(interval)
