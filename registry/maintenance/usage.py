"""`registry du`: storage used per repository, and what garbage collection would free.

A blob is stored once however many repositories hold it, so a repository's size alone says
little about what deleting it would free. Each repository's content (the manifests it holds
and everything they reference) is split into unique bytes, which only it holds (what deleting
it and collecting garbage would free), and shared bytes, which another repository holds too.
The total counts every stored object once. The reclaimable figure is a dry run of garbage
collection itself (the same mark and sweep, registry/maintenance/gc.py), so it is exactly what
`registry gc` with the same grace period would free.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..domain import Registry
from .gc import DEFAULT_GRACE, GarbageCollector, Observer
from .inventory import Key


@dataclass
class RepositoryUsage:
    name: str
    unique: int = 0
    shared: int = 0

    @property
    def total(self) -> int:
        return self.unique + self.shared


@dataclass
class UsageReport:
    repositories: list[RepositoryUsage] = field(default_factory=list)
    stored_objects: int = 0
    stored_bytes: int = 0  # every object in the blob store, once
    unlinked_bytes: int = 0  # of those, data no kept manifest references (collected once older than grace)
    reclaimable_objects: int = 0  # what garbage collection would free now, with this grace period
    reclaimable_bytes: int = 0
    grace: float = DEFAULT_GRACE

    def lines(self) -> Iterator[str]:
        yield "repository unique_bytes shared_bytes total_bytes"
        for usage in self.repositories:
            yield f"{usage.name} {usage.unique} {usage.shared} {usage.total}"
        yield (f"total {self.stored_bytes} bytes in {self.stored_objects} object(s), "
               f"{self.unlinked_bytes} bytes referenced by no manifest; garbage collection would free "
               f"{self.reclaimable_bytes} bytes in {self.reclaimable_objects} object(s) (grace {self.grace:g}s)")


class _Tally(Observer):
    """Each repository's content, how many repositories hold each digest, and the sizes of those."""

    def __init__(self) -> None:
        self.contents: list[tuple[str, tuple[Key, ...]]] = []
        self.holders: dict[Key, int] = {}
        self.sizes: dict[Key, int] = {}
        self.referenced_bytes = 0
        self.stored_objects = 0
        self.stored_bytes = 0

    def repository(self, name: str, content: set[Key]) -> None:
        self.contents.append((name, tuple(content)))
        for key in content:
            self.holders[key] = self.holders.get(key, 0) + 1

    def blob(self, key: Key, size: int) -> None:
        self.stored_objects += 1
        self.stored_bytes += size
        if key in self.holders:
            self.sizes[key] = size
            self.referenced_bytes += size


async def disk_usage(registry: Registry, grace: float = DEFAULT_GRACE, delete_untagged: bool = False) -> UsageReport:
    """Usage per repository, and a dry run of garbage collection with this grace and deleteuntagged."""
    tally = _Tally()
    collection = await GarbageCollector(registry, grace, delete_untagged, dry_run=True).run(tally)
    report = UsageReport(stored_objects=tally.stored_objects, stored_bytes=tally.stored_bytes,
                         unlinked_bytes=tally.stored_bytes - tally.referenced_bytes,
                         reclaimable_objects=len(collection.freed), reclaimable_bytes=collection.freed_bytes,
                         grace=grace)
    for name, content in sorted(tally.contents):
        usage = RepositoryUsage(name)
        for key in content:
            size = tally.sizes.get(key, 0)  # a reference to missing data takes no space (`registry verify`)
            if tally.holders[key] > 1:
                usage.shared += size
            else:
                usage.unique += size
        report.repositories.append(usage)
    return report
