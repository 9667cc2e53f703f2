"""Blobs: stored once by digest, reachable from a repository only through its link."""

from __future__ import annotations

import time
from collections import OrderedDict

from storage_backends import FileInfo, PathNotFound, StorageBackend

from . import layout
from .errors import RegistryError
from .links import delete_quietly, digests_under, read_link, write_link
from .references import Digest


#: blob data is immutable and kept while any repository links it, so its size can be remembered
MAX_CACHED_SIZES = 65_536
#: how long set-aside data waits before the links are checked again (eviction, garbage collection):
#: longer than a push takes between finding the data stored and writing its link
SET_ASIDE_GRACE = 2.0
#: a link this process wrote or read is taken as there for this long without reading it again, so that a
#: push's manifest and a pull right after cost no read per blob (Distribution's blob descriptor cache
#: keeps them for good); a link another replica deletes may still count here that long
LINK_TRUST_SECONDS = 60.0
MAX_CACHED_LINKS = 65_536


class BlobStore:
    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend
        self._data: OrderedDict[Digest, tuple[int, float]] = OrderedDict()  # size, mtime
        self._links: OrderedDict[tuple[str, Digest], float] = OrderedDict()  # time.monotonic() last seen

    async def stat(self, name: str, digest: Digest, recent_link: bool = False) -> FileInfo:
        """The blob's data, if the repository links it (a repository never serves a blob it does not link).

        The link is read every time (another replica may have deleted it), unless recent_link and this
        process wrote or read it less than LINK_TRUST_SECONDS ago: for a GET, which reads the data next
        and so notices at once data that went, and for the blobs a pushed manifest names. The data's
        size comes from memory after the first look, which spares S3 a request per pull.
        """
        if not (recent_link and self._link_trusted(name, digest)):
            if await read_link(self.backend, layout.layer_link(name, digest)) != digest:
                raise RegistryError("BLOB_UNKNOWN", f"blob {digest} unknown to repository {name}",
                                    {"digest": str(digest)})
            self._link_seen(name, digest)
        path = layout.blob_data(digest)
        known = self._data.get(digest)
        if known is not None:
            self._data.move_to_end(digest)
            return FileInfo(path, known[0], known[1], False)
        try:
            info = await self.backend.stat(path)
        except PathNotFound:
            raise RegistryError("BLOB_UNKNOWN", f"blob {digest} is linked but its data is missing") from None
        self._remember_size(digest, info.size, info.mtime)
        return info

    def _remember_size(self, digest: Digest, size: int, mtime: float) -> None:
        self._data[digest] = (size, mtime)
        self._data.move_to_end(digest)
        if len(self._data) > MAX_CACHED_SIZES:
            self._data.popitem(last=False)

    def _link_trusted(self, name: str, digest: Digest) -> bool:
        seen = self._links.get((name, digest))
        return seen is not None and time.monotonic() - seen < LINK_TRUST_SECONDS

    def _link_seen(self, name: str, digest: Digest) -> None:
        self._links[(name, digest)] = time.monotonic()
        self._links.move_to_end((name, digest))
        if len(self._links) > MAX_CACHED_LINKS:
            self._links.popitem(last=False)

    def _link_gone(self, name: str, digest: Digest) -> None:
        self._links.pop((name, digest), None)

    async def is_linked(self, name: str, digest: Digest, recent_link: bool = False) -> bool:
        try:
            await self.stat(name, digest, recent_link)
        except RegistryError:
            return False
        return True

    async def read_small(self, digest: Digest, limit: int) -> bytes | None:
        """The whole of a small stored blob (an image config); None when it is not stored or
        is larger than limit bytes, so that a huge blob is never read into memory."""
        size = await self.size(digest)
        if size is None or size > limit:
            return None
        try:
            return await self.backend.read_bytes(layout.blob_data(digest))
        except PathNotFound:
            return None

    async def stored(self, digest: Digest) -> bool:
        return await self.backend.exists(layout.blob_data(digest))

    async def link(self, name: str, digest: Digest) -> None:
        await write_link(self.backend, layout.layer_link(name, digest), digest)
        self._link_seen(name, digest)

    async def link_stored(self, name: str, digest: Digest, size: int) -> None:
        """Link data just written and verified, remembering its size: the manifest push and the pulls
        that follow need not look it up."""
        self._remember_size(digest, size, time.time())
        await self.link(name, digest)

    async def mount(self, name: str, digest: Digest, source: str | None) -> bool:
        """Link an already stored blob into name; from `source` when given, else from anywhere."""
        if source is not None:
            if not await self.is_linked(source, digest):
                return False
        elif not await self.stored(digest):
            return False
        await self.link(name, digest)
        return True

    async def adopt(self, name: str, digest: Digest, verified_path: str, size: int) -> None:
        """Make verified content (size bytes) the blob for digest, then link it: the atomic end of an upload
        written to scratch space first.

        Moved even when the blob is stored already: clients ask (HEAD) before they push, so that is rare,
        and a look first would cost every other push a call (on S3 three, when it is not there). A
        concurrent adopter of the same digest moves identical bytes, so either wins.
        """
        await self.backend.move(verified_path, layout.blob_data(digest))
        await self.link_stored(name, digest, size)

    async def unlink(self, name: str, digest: Digest) -> None:
        await self.stat(name, digest)
        self._link_gone(name, digest)
        await delete_quietly(self.backend, layout.layer_link(name, digest).rsplit("/", 1)[0])

    # -- for the mirror's cache eviction ---------------------------------------------------------

    async def linked(self, name: str) -> list[Digest]:
        """Every digest the repository has a link for, whether or not its data is stored."""
        return await digests_under(self.backend, layout.layers_dir(name))

    async def linked_at(self, name: str, digest: Digest) -> float | None:
        """When the link was written (for a mirror: when the blob was fetched); None without one."""
        try:
            return (await self.backend.stat(layout.layer_link(name, digest))).mtime
        except PathNotFound:
            return None

    async def size(self, digest: Digest) -> int | None:
        """The stored data's size; None when it is not stored."""
        known = self._data.get(digest)
        if known is not None:
            return known[0]
        try:
            return (await self.backend.stat(layout.blob_data(digest))).size
        except PathNotFound:
            return None

    def missing(self, digest: Digest) -> RegistryError:
        """The data went although a link remains (found by a read): forget its size, say BLOB_UNKNOWN."""
        self._data.pop(digest, None)
        return RegistryError("BLOB_UNKNOWN", f"blob {digest} is linked but its data is missing")

    async def drop_link(self, name: str, digest: Digest) -> bool:
        """Remove the repository's link whether or not the data is there; the data stays."""
        self._link_gone(name, digest)
        return await delete_quietly(self.backend, layout.layer_link(name, digest).rsplit("/", 1)[0])

    async def set_aside(self, digest: Digest) -> bool:
        """Move the data out of the blob store, recoverably; False when it was not stored.

        Deleting blob data is safe only once nothing links it, and a push may link data it found
        stored (deduplication) at any moment: the data is moved aside first, the links are
        checked again, and only then is it deleted or put back.
        """
        self._data.pop(digest, None)
        try:
            await self.backend.move(layout.blob_data(digest), layout.set_aside_data(digest))
        except PathNotFound:
            return False
        return True

    async def set_aside_batch(self, digests: list[Digest]) -> list[Digest]:
        """set_aside for many at once (see move_files); those that were stored and are now aside."""
        for digest in digests:
            self._data.pop(digest, None)
        moved = await self.backend.move_files([(layout.blob_data(d), layout.set_aside_data(d)) for d in digests])
        return [digest for digest, done in zip(digests, moved) if done]

    async def put_back(self, digest: Digest) -> None:
        """Undo set_aside; when the blob was stored again meanwhile, that copy stays."""
        if await self.stored(digest):
            await delete_quietly(self.backend, layout.set_aside_data(digest))
            return
        try:
            await self.backend.move(layout.set_aside_data(digest), layout.blob_data(digest))
        except PathNotFound:
            pass  # another replica's eviction decided first

    async def delete_set_aside(self, digest: Digest) -> int:
        """Delete set-aside data for good; its size (0 when another replica was first)."""
        path = layout.set_aside_data(digest)
        try:
            size = (await self.backend.stat(path)).size
        except PathNotFound:
            return 0
        if not await delete_quietly(self.backend, path):
            return 0
        await self.backend.prune([layout.blob_dir(digest)])
        return size

    async def delete_set_aside_batch(self, digests: list[Digest]) -> None:
        """Delete set-aside data for good, many at once, with the blob directories left empty."""
        await self.backend.delete_files([layout.set_aside_data(digest) for digest in digests])
        await self.backend.prune([layout.blob_dir(digest) for digest in digests])
        await self.backend.prune([f"{layout.SET_ASIDE}/{algorithm}" for algorithm in {d.algorithm for d in digests}])
        await self.backend.prune([layout.SET_ASIDE])

    async def set_aside_size(self, digest: Digest) -> int:
        try:
            return (await self.backend.stat(layout.set_aside_data(digest))).size
        except PathNotFound:
            return 0

    async def drop_links(self, links: list[tuple[str, Digest]]) -> int:
        """Remove these repositories' links to blobs, many at once (the data stays); how many."""
        for name, digest in links:
            self._link_gone(name, digest)
        paths = [layout.layer_link(name, digest) for name, digest in links]
        await self.backend.delete_files(paths)
        await self.backend.prune([path.rsplit("/", 1)[0] for path in paths])
        return len(paths)

    async def set_aside_digests(self) -> list[Digest]:
        """Data set aside and neither deleted nor put back (its eviction was interrupted)."""
        return await digests_under(self.backend, layout.SET_ASIDE)
