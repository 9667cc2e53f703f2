"""What the store holds, read in bulk: every blob's data, and every repository's links one
repository at a time.

Garbage collection and `registry du` look at everything. They list with the backend's walk,
in key order, which on S3 costs a call per 1,000 keys at any depth instead of a call per
directory, and list several key ranges of a tree at once (LISTINGS at a time). Digests are
kept as compact keys: the raw digest bytes (32 for sha256, 64 for sha512), about a fifth of
the memory of a Digest object.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from storage_backends import FileInfo, PathNotFound, StorageBackend

from .. import layout
from ..references import ALGORITHMS, Digest

#: key ranges of one tree listed at the same time (S3 calls in flight)
LISTINGS = 8
#: at most this many ranges per tree: each may cost a listing call more than one flat listing
RANGES = 16
#: files a range's listing may hold ahead of the consumer
_AHEAD = 2048
#: reads (manifests, tags) in flight at a time
READS = 16
T = TypeVar("T")

Key = bytes
_ALGORITHM_OF_LENGTH = {length // 2: algorithm for algorithm, length in ALGORITHMS.items()}


def key_of(digest: Digest) -> Key:
    return bytes.fromhex(digest.hex)


def parse_key(algorithm: str, hex_: str) -> Key | None:
    """The key of `<algorithm>:<hex>`; None when that is not a digest we store."""
    if ALGORITHMS.get(algorithm) != len(hex_):
        return None
    try:
        key = bytes.fromhex(hex_)
    except ValueError:
        return None
    return key if key.hex() == hex_ else None  # lower case, nothing fromhex skips


def key_of_text(digest: str) -> Key | None:
    """The key of a digest as written (`sha256:<hex>`); None when that is not one we store."""
    algorithm, _, hex_ = digest.partition(":")
    return parse_key(algorithm, hex_)


def digest_of(key: Key) -> Digest:
    return Digest(_ALGORITHM_OF_LENGTH[len(key)], key.hex())


async def _ranges(backend: StorageBackend, path: str) -> list[tuple[str | None, str | None]]:
    """path's tree cut at its top-level names into at most RANGES key ranges of about as many names."""
    try:
        names = await backend.list(path)
    except PathNotFound:
        return []
    names.sort(key=lambda name: name + "/")  # key order: a directory `a` comes after `a-b`
    step = max(1, -(-len(names) // RANGES))
    cuts = [f"{name}/\U0010ffff" for name in names[step - 1:-1:step]]
    return list(zip([None, *cuts], [*cuts, None]))


async def walk_concurrently(backend: StorageBackend, path: str,
                            leaf: Callable[[str], bool] | None = None) -> AsyncIterator[FileInfo]:
    """backend.walk(path, leaf=leaf), its key ranges listed LISTINGS at a time, in key order."""
    ranges = await _ranges(backend, path)
    queues: list[asyncio.Queue[list[FileInfo] | BaseException | None]] = []
    tasks: list[asyncio.Task[None]] = []

    async def produce(after: str | None, until: str | None, queue: asyncio.Queue) -> None:
        try:
            batch: list[FileInfo] = []
            async for info in backend.walk(path, after, until, leaf):
                batch.append(info)
                if len(batch) >= 256:
                    await queue.put(batch)
                    batch = []
            await queue.put(batch)
            await queue.put(None)
        except Exception as exc:  # handed to the consumer
            await queue.put(exc)

    def start(index: int) -> None:
        if index < len(ranges):
            queue: asyncio.Queue = asyncio.Queue(maxsize=_AHEAD // 256)
            queues.append(queue)
            tasks.append(asyncio.create_task(produce(*ranges[index], queue)))

    try:
        for index in range(min(LISTINGS, len(ranges))):
            start(index)
        for index in range(len(ranges)):
            queue = queues[index]
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                for info in item:
                    yield info
            start(index + LISTINGS)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _blob_leaf(relative: str) -> bool:
    return relative.count("/") == 1  # `<hh>/<hex>`: the directory holding a blob's data


async def stored_blobs(backend: StorageBackend) -> AsyncIterator[tuple[Key, FileInfo]]:
    """Every digest in the blob store (`blobs/<alg>/<hh>/<hex>/data`), with its data's size and mtime
    where the listing has them (S3); on a filesystem the blob's directory (is_dir), whose data
    data_info() looks at, for those a caller needs."""
    try:
        algorithms = await backend.list(layout.BLOBS)
    except PathNotFound:
        return
    for algorithm in algorithms:
        async for info in walk_concurrently(backend, f"{layout.BLOBS}/{algorithm}", _blob_leaf):
            parts = info.path.split("/")
            if len(parts) == (2 if info.is_dir else 3) and parts[1].startswith(parts[0]) and (
                    info.is_dir or parts[2] == "data"):
                key = parse_key(algorithm, parts[1])
                if key is not None:
                    yield key, info


async def data_info(backend: StorageBackend, key: Key, listed: FileInfo) -> FileInfo | None:
    """A stored blob's data (size, mtime), from what stored_blobs listed; None when there is none."""
    if not listed.is_dir:
        return listed
    try:
        return await backend.stat(layout.blob_data(digest_of(key)))
    except PathNotFound:
        return None


@dataclass
class RepositoryLinks:
    """What one repository links, with when each link was written."""

    name: str
    #: the manifests it holds and the blobs it links, with when the link was written: None where
    #: the listing does not say (a filesystem's link directories; BlobStore.linked_at does)
    revisions: dict[Key, float | None] = field(default_factory=dict)
    layers: dict[Key, float | None] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)  # its tags
    referrers: dict[Key, list[Key]] = field(default_factory=dict)  # subject -> manifests naming it


def _repository_leaf(relative: str) -> bool:
    """Directories whose path says all there is to know: a link's `<alg>/<hex>` (on a filesystem the
    directory stands for the link, as in Distribution), a tag, a referrer, the uploads."""
    parts = relative.rsplit("/", 5)
    count = len(parts)
    return ((count >= 3 and parts[-3] == layout.LAYERS_MARKER)
            or (count >= 4 and parts[-3] == "revisions" and parts[-4] == layout.REPOSITORY_MARKER)
            or (count >= 3 and parts[-2] == "tags" and parts[-3] == layout.REPOSITORY_MARKER)
            or (count >= 5 and parts[-5] == "_referrers")
            or parts[-1] == layout.UPLOADS_MARKER)


def _repository_leaf_untagged(relative: str) -> bool:
    """As _repository_leaf, and the tags directory: its tags are not needed."""
    return relative.endswith("/_manifests/tags") or _repository_leaf(relative)


def _add(links: RepositoryLinks, parts: list[str], mtime: float | None) -> None:
    """One entry of a repository: `_layers/<alg>/<hex>`, `_manifests/revisions/<alg>/<hex>`,
    `_manifests/tags/<tag>[/current]` or `_referrers/<alg>/<hex>/<alg>/<hex>` (with `/link` dropped)."""
    count = len(parts)
    first = parts[0]
    if first == layout.LAYERS_MARKER:
        if count == 3 and (key := parse_key(parts[1], parts[2])) is not None:
            links.layers[key] = mtime
    elif first == layout.REPOSITORY_MARKER and count >= 3:
        if parts[1] == "revisions":
            if count == 4 and (key := parse_key(parts[2], parts[3])) is not None:
                links.revisions[key] = mtime
        elif parts[1] == "tags" and (count == 3 or (count == 4 and parts[3] == "current")):
            links.tags.append(parts[2])
    elif first == "_referrers" and count == 5:
        subject, referrer = parse_key(parts[1], parts[2]), parse_key(parts[3], parts[4])
        if subject is not None and referrer is not None:
            links.referrers.setdefault(subject, []).append(referrer)


async def repositories(backend: StorageBackend, tags: bool = True) -> AsyncIterator[RepositoryLinks]:
    """Every repository that links anything (a manifest, a tag or a blob), one at a time, in key order;
    with its tags unless `tags` is false (a filesystem then need not read them).

    Each repository's own entries (`<name>/_...`) are contiguous in key order, and repository
    names have no part starting with `_`, so only one repository is held at a time, however
    large the store.
    """
    current: RepositoryLinks | None = None
    leaf = _repository_leaf if tags else _repository_leaf_untagged
    async for info in walk_concurrently(backend, layout.REPOSITORIES, leaf):
        path = info.path
        cut = path.find("/_")
        if cut <= 0:
            continue
        parts = path[cut + 1:].split("/")
        if not info.is_dir:
            if parts[-1] != "link":
                continue
            del parts[-1]
        name = path[:cut]
        if current is None or current.name != name:
            if current is not None:
                yield current
            current = RepositoryLinks(name)
        _add(current, parts, None if info.is_dir else info.mtime)
    if current is not None:
        yield current


async def _each(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


async def for_each(items: AsyncIterator[T] | Iterable[T], work: Callable[[T], Awaitable[None]], limit: int) -> None:
    """work(item) for every item, at most `limit` at a time; the first failure cancels the rest."""
    if not isinstance(items, AsyncIterator):
        items = _each(items)
    running: set[asyncio.Task[None]] = set()

    async def settle(when: str) -> None:
        nonlocal running
        done, running = await asyncio.wait(running, return_when=when)
        for task in done:
            task.result()

    try:
        async for item in items:
            if len(running) >= limit:
                await settle(asyncio.FIRST_COMPLETED)
            running.add(asyncio.create_task(work(item)))
        if running:
            await settle(asyncio.ALL_COMPLETED)
    finally:
        for task in running:
            task.cancel()


async def gather_bounded(calls: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """The awaitables' results in order, at most `limit` running at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(call) for call in calls)))
