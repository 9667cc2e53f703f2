"""`registry verify`: re-hash every stored object, and say which repositories and tags bad data breaks.

Content is addressed by its digest, so a flipped bit on disk or a truncated S3 object is found by
hashing the data again (streamed: a blob is never held whole in memory). Two kinds of damage:

- corrupt: the data's hash is not its digest;
- missing: a repository links a blob or holds a manifest, or a manifest references a blob,
  whose data is not in the store.

A manifest is broken when its own data, or that of anything it references (config, layers,
child manifests, recursively), is corrupt or missing; every tag on it is then broken too.

With quarantine, corrupt data is moved to `quarantine/<alg>/<hex>` (kept for inspection) after
the repositories' links to it are removed: the registry reads a link on every request, so
it stops serving the object at once, even while a replica remembers the blob's size. Pushing
the image again then stores good data and links it anew.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from storage_backends import PathNotFound

from .. import layout
from ..catalog import linking_repositories
from ..domain import Registry
from ..errors import RegistryError
from ..links import delete_quietly, stored_digests
from ..manifests import IMAGE_TYPES, INDEX_TYPES
from ..references import Digest

log = logging.getLogger("registry.verify")

#: objects hashed at a time: enough to hide S3's latency, few enough to bound memory
CONCURRENCY = 4


@dataclass
class Broken:
    """A manifest of a repository that cannot be pulled whole, the tags on it, and why."""

    repository: str
    manifest: Digest
    tags: list[str]
    reason: str


@dataclass
class VerifyReport:
    checked: int = 0  # objects hashed
    checked_bytes: int = 0
    corrupt: dict[Digest, Digest] = field(default_factory=dict)  # digest -> what the data hashes to
    missing: dict[Digest, set[str]] = field(default_factory=dict)  # digest -> repositories that need it
    broken: list[Broken] = field(default_factory=list)
    quarantined: list[Digest] = field(default_factory=list)
    links_removed: int = 0

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing

    def lines(self) -> Iterator[str]:
        """The report as the CLI prints it: one line per finding, then a summary."""
        for digest, actual in sorted(self.corrupt.items(), key=lambda item: str(item[0])):
            yield f"corrupt {digest} (data hashes to {actual})"
        for digest, names in sorted(self.missing.items(), key=lambda item: str(item[0])):
            yield f"missing {digest} (needed by {', '.join(sorted(names))})"
        for broken in sorted(self.broken, key=lambda b: (b.repository, str(b.manifest))):
            if broken.tags:
                for tag in broken.tags:
                    yield f"broken {broken.repository}:{tag} ({broken.manifest}): {broken.reason}"
            else:
                yield f"broken {broken.repository}@{broken.manifest}: {broken.reason}"
        for digest in sorted(self.quarantined, key=str):
            yield f"quarantined {digest} -> {layout.quarantine_data(digest)}"
        yield self.summary()

    def summary(self) -> str:
        repositories = {b.repository for b in self.broken}
        tags = sum(len(b.tags) for b in self.broken)
        text = (f"checked {self.checked} object(s), {self.checked_bytes} bytes: {len(self.corrupt)} corrupt, "
                f"{len(self.missing)} missing; {len(repositories)} repositories and {tags} tag(s) broken")
        if self.quarantined:
            text += f"; quarantined {len(self.quarantined)} object(s), removed {self.links_removed} link(s)"
        return text


class Verifier:
    def __init__(self, registry: Registry, quarantine: bool = False, concurrency: int = CONCURRENCY) -> None:
        self.registry = registry
        self.backend = registry.backend
        self.quarantine = quarantine
        self.concurrency = concurrency
        self._stored: set[Digest] = set()
        self._corrupt: set[Digest] = set()
        self._looked: set[Digest] = set()  # hashed, or looked for (data or not)
        self._verdicts: dict[Digest, str | None] = {}

    async def run(self) -> VerifyReport:
        report = VerifyReport()
        self._stored, self._corrupt, self._verdicts = set(), set(), {}
        walked = await stored_digests(self.backend)
        self._looked = set(walked)
        await self._hash_all(walked, report)
        holders: dict[Digest, set[str]] = {}  # who links or holds each object, for quarantine
        for name in await linking_repositories(self.backend):
            revisions = await self.registry.manifests.revisions(name)
            for digest in [*await self.registry.blobs.linked(name), *revisions]:
                holders.setdefault(digest, set()).add(name)
                if not await self._stored_now(digest, report):
                    report.missing.setdefault(digest, set()).add(name)
            await self._check_manifests(name, revisions, report)
        if self.quarantine:
            for digest in report.corrupt:
                await self._quarantine(digest, holders.get(digest, set()), report)
        return report

    # -- hashing -------------------------------------------------------------------------------

    async def _hash_all(self, digests: Iterable[Digest], report: VerifyReport) -> None:
        pending = iter(digests)

        async def worker() -> None:
            for digest in pending:  # shared: each digest goes to one worker
                await self._hash_one(digest, report)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def _hash_one(self, digest: Digest, report: VerifyReport) -> None:
        hasher = digest.hasher()
        size = 0
        try:
            async for chunk in self.backend.read(layout.blob_data(digest)):
                hasher.update(chunk)
                size += len(chunk)
        except PathNotFound:
            return  # a directory without data: missing only if something needs it (see run)
        self._stored.add(digest)
        report.checked += 1
        report.checked_bytes += size
        actual = Digest(digest.algorithm, hasher.hexdigest())
        if actual != digest:
            log.error("blob %s is corrupt: its data hashes to %s", digest, actual)
            report.corrupt[digest] = actual
            self._corrupt.add(digest)

    async def _stored_now(self, digest: Digest, report: VerifyReport) -> bool:
        """Whether the data is stored, hashing it if it arrived after the walk of the blob store
        (verify runs while pushes go on: a manifest may name data newer than the walk)."""
        if digest not in self._stored and digest not in self._looked:
            self._looked.add(digest)
            await self._hash_one(digest, report)
        return digest in self._stored

    # -- what bad data breaks ------------------------------------------------------------------

    async def _check_manifests(self, name: str, revisions: list[Digest], report: VerifyReport) -> None:
        tagged: dict[Digest, list[str]] = {}
        for tag, target, _ in await self.registry.manifests.tag_targets(name):
            if target is not None:
                tagged.setdefault(target, []).append(tag)
        for digest in revisions:
            reason = await self._problem(digest, name, report, set())
            if reason is not None:
                report.broken.append(Broken(name, digest, sorted(tagged.get(digest, [])), reason))

    async def _problem(self, digest: Digest, name: str, report: VerifyReport, path: set[Digest]) -> str | None:
        """Why the manifest cannot be pulled whole; None when it can."""
        if digest in self._verdicts:
            return self._verdicts[digest]
        await self._stored_now(digest, report)
        reason = self._data_problem(digest, "manifest")
        if reason is None and digest not in path:
            reason = await self._content_problem(digest, name, report, path | {digest})
        self._verdicts[digest] = reason
        return reason

    def _data_problem(self, digest: Digest, what: str) -> str | None:
        if digest in self._stored:
            return f"{what} {digest} is corrupt" if digest in self._corrupt else None
        return f"{what} {digest} is missing"

    async def _content_problem(self, digest: Digest, name: str, report: VerifyReport,
                               path: set[Digest]) -> str | None:
        try:
            manifest = await self.registry.manifests.load(digest)
        except RegistryError:
            return f"manifest {digest} is missing"
        document = manifest.document
        if manifest.media_type in IMAGE_TYPES:
            for descriptor in [document.get("config"), *(document.get("layers") or [])]:
                blob = _digest_in(descriptor)
                if blob is None or descriptor.get("urls"):  # type: ignore[union-attr]
                    continue  # not stored here: clients fetch a non-distributable layer from its URLs
                await self._stored_now(blob, report)
                reason = self._data_problem(blob, "blob")
                if reason is not None:
                    if blob not in self._stored:
                        report.missing.setdefault(blob, set()).add(name)
                    return reason
        elif manifest.media_type in INDEX_TYPES:
            for descriptor in document.get("manifests") or []:
                child = _digest_in(descriptor)
                if child is None:
                    continue
                reason = await self._problem(child, name, report, path)
                if reason is not None:
                    if child not in self._stored:
                        report.missing.setdefault(child, set()).add(name)
                    return reason
        return None

    # -- quarantine ----------------------------------------------------------------------------

    async def _quarantine(self, digest: Digest, names: set[str], report: VerifyReport) -> None:
        """Unlink the object everywhere, then move its data aside (a replica reads the link on every
        request, so it stops serving the object even where it remembers the data's size)."""
        for name in sorted(names):
            if await self.registry.blobs.drop_link(name, digest):
                report.links_removed += 1
            if await delete_quietly(self.backend, layout.revision_link(name, digest).rsplit("/", 1)[0]):
                report.links_removed += 1
        try:
            await self.backend.move(layout.blob_data(digest), layout.quarantine_data(digest))
        except PathNotFound:
            return  # pushed again and replaced, or another run was first
        log.warning("quarantined corrupt %s at %s", digest, layout.quarantine_data(digest))
        report.quarantined.append(digest)


def _digest_in(descriptor: object) -> Digest | None:
    if not isinstance(descriptor, dict):
        return None
    try:
        return Digest.parse(str(descriptor["digest"]))
    except (RegistryError, KeyError):
        return None
