"""`registry du`: storage used per repository.

A blob is stored once however many repositories link it, so a repository's size alone says
little about what deleting it would free. Each repository's content (the blobs it links and
the manifests it holds) is split into unique bytes, which only it links (what deleting it and
collecting garbage would free), and shared bytes, which another repository links too. The
total counts every stored object once, linked or not (unlinked data awaits garbage collection).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .catalog import linking_repositories
from .domain import Registry
from .links import stored_digests
from .references import Digest


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
    unlinked_bytes: int = 0  # of those, data no repository links or holds

    def lines(self) -> Iterator[str]:
        yield "repository unique_bytes shared_bytes total_bytes"
        for usage in self.repositories:
            yield f"{usage.name} {usage.unique} {usage.shared} {usage.total}"
        yield (f"total {self.stored_bytes} bytes in {self.stored_objects} object(s), "
               f"{self.unlinked_bytes} bytes linked by no repository")


async def disk_usage(registry: Registry) -> UsageReport:
    sizes: dict[Digest, int] = {}
    for digest in await stored_digests(registry.backend):
        size = await registry.blobs.size(digest)
        if size is not None:
            sizes[digest] = size
    contents: dict[str, set[Digest]] = {}
    holders: dict[Digest, int] = {}
    for name in await linking_repositories(registry.backend):
        content = {*await registry.blobs.linked(name), *await registry.manifests.revisions(name)}
        content &= sizes.keys()  # links to missing data take no space (`registry verify` reports them)
        contents[name] = content
        for digest in content:
            holders[digest] = holders.get(digest, 0) + 1
    report = UsageReport(stored_objects=len(sizes), stored_bytes=sum(sizes.values()))
    report.unlinked_bytes = sum(size for digest, size in sizes.items() if digest not in holders)
    for name, content in contents.items():
        usage = RepositoryUsage(name)
        for digest in content:
            if holders[digest] > 1:
                usage.shared += sizes[digest]
            else:
                usage.unique += sizes[digest]
        report.repositories.append(usage)
    return report
