"""The byte-store interface every storage backend implements.

Kept deliberately small (read, streaming write, stat, list, move, delete) so
that a new backend is cheap to add and one shared test suite can hold all of
them to the same contract. Paths are '/'-separated keys relative to the
backend's root; they never start with '/' and never contain '..'.
"""

from __future__ import annotations

import abc
import bisect
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Sequence


class StorageError(Exception):
    """A backend failure that is not the caller's fault."""


class StorageFull(StorageError):
    """The store has no room for a write (a full disk, a quota, a bucket's limit).

    Not the client's fault and not transient the way a timeout is: the registry answers 507.
    """

    def __init__(self, path: str, why: str, free: int | None = None) -> None:
        room = "" if free is None else f" ({free:,} bytes free)"
        super().__init__(f"{why} writing {path}{room}")
        self.path = path
        self.free = free


class PathNotFound(StorageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path


class InvalidPath(StorageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"invalid path: {path!r}")
        self.path = path


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    mtime: float
    is_dir: bool


def check_path(path: str) -> str:
    """Reject keys that could escape the root; the domain layer validates too,
    but the store must be safe on its own."""
    if (
        not path
        or path.startswith("/")
        or path.endswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise InvalidPath(path)
    return path


def in_range(key: str, after: str | None, until: str | None) -> bool:
    return (after is None or key > after) and (until is None or key <= until)


def subtree_in_range(prefix: str, after: str | None, until: str | None) -> bool:
    """Whether any key starting with prefix can be > after and <= until."""
    if until is not None and prefix > until:
        return False
    return after is None or prefix > after or after.startswith(prefix)


def _below(bound: str | None, name: str) -> str | None:
    """A range bound of a parent directory, seen from its child `name` (keys `name/...`)."""
    if bound is None:
        return None
    prefix = name + "/"
    if bound.startswith(prefix):
        return bound[len(prefix):]
    return "" if bound < prefix else "\U0010ffff"


#: a buffer handed to a writer: a request body's bytes as its parser made them, or a view of a part of them
Piece = bytes | memoryview


class Writer(abc.ABC):
    """A streaming write to one path.

    Nothing written is visible at the path until commit(), except for append
    writers, whose path is an upload's private scratch file: there each write
    is kept so that an interrupted upload can resume from what arrived.
    """

    #: total bytes at the path once committed (existing bytes included when appending)
    size: int
    #: called with each chunk where the write itself runs (a worker thread, say), so that
    #: a caller hashing the stream pays no extra hop; hashlib releases the GIL there
    on_write: Callable[[bytes], None] | None = None

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    async def write_pieces(self, pieces: Sequence[Piece]) -> None:
        """Write pieces one after the other, as write(b"".join(pieces)) would: a request body's buffers as
        its parser made them. A backend that can take them without joining them (one copy less) overrides it."""
        await self.write(pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else b"".join(pieces))

    @abc.abstractmethod
    async def commit(self) -> None: ...

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Discard what this writer wrote; an append writer keeps the bytes it started with."""


class StorageBackend(abc.ABC):
    name: str = "abstract"
    #: what a writer wrote and never committed is reclaimed even if the process dies meanwhile (S3: an
    #: unfinished multipart upload, which purge_incomplete aborts; memory: gone with the process), so
    #: content can be written straight to its final path and committed once verified. The filesystem's
    #: temporary files would stay: there, unverified content is written where its sweepers look.
    reclaims_unfinished_writes: bool = False

    @abc.abstractmethod
    def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [offset, offset+length) of path; PathNotFound if absent."""

    @abc.abstractmethod
    async def read_bytes(self, path: str) -> bytes:
        """The whole content of a small file (links, manifests)."""

    @abc.abstractmethod
    async def write_bytes(self, path: str, data: bytes, durable: bool = True) -> None:
        """Atomically replace path's content. durable=False: scratch state (an upload's bookkeeping)
        that need not survive a power cut, which a backend may then write more cheaply."""

    @abc.abstractmethod
    async def writer(self, path: str, append: bool = False, size: int | None = None) -> Writer:
        """A streaming write to path. size: how many bytes will be written, when known, so that a
        backend may send them on as they come rather than buffer them (S3: one streamed part per 5 GiB);
        the writer may then refuse more, and commit() fewer."""

    @abc.abstractmethod
    async def stat(self, path: str) -> FileInfo:
        """Size and mtime of a file, or is_dir for a directory; PathNotFound if absent."""

    @abc.abstractmethod
    async def list(self, path: str) -> list[str]:
        """Names of the direct children of a directory, sorted; PathNotFound if absent."""

    @abc.abstractmethod
    async def move(self, src: str, dst: str) -> None:
        """Atomically put src's content at dst, replacing dst."""

    @abc.abstractmethod
    async def delete(self, path: str) -> None:
        """Remove a file or a whole directory tree; PathNotFound if absent."""

    async def list_after(self, path: str, start_after: str | None, limit: int) -> list[str]:
        """The lexically first `limit` children of a directory after start_after; PathNotFound if absent.

        For paging through large directories; a backend that can start a listing in the middle
        (S3's StartAfter) overrides it so that a page does not cost a listing of everything.
        """
        names = await self.list(path)
        start = 0 if start_after is None else bisect.bisect_right(names, start_after)
        return names[start:start + limit]

    async def find_dirs_containing(
        self,
        path: str,
        marker: str,
        start_after: str | None = None,
        limit: int | None = None,
        skip: Callable[[str], bool] = lambda name: False,
    ) -> list[str]:
        """Directories below path holding an entry named `marker`, as paths relative to path.

        They come in the order of their marker's key, `<dir>/<marker>/`, which is the order
        S3 lists keys in: `a-b` comes before `a` ('-' sorts before '/'), and `a/0x` before
        `a` when the marker is `_manifests` ('0' sorts before '_'). Only those after
        start_after, at most limit of them; directories whose name `skip` accepts are not
        searched. This generic walk lists directory by directory; a backend with a cheaper
        way (S3's delimiter listing) overrides it.
        """
        found: list[str] = []
        after = None if start_after is None else f"{start_after}/{marker}/"

        async def walk(relative: str) -> None:
            try:
                children = await self.list(f"{path}/{relative}".rstrip("/") if path else relative.rstrip("/"))
            except PathNotFound:
                return
            entries = [c for c in children if c == marker or not skip(c)]
            for child in sorted(entries, key=lambda c: c + "/"):
                if limit is not None and len(found) >= limit:
                    return
                subtree = f"{relative}{child}/"
                if child == marker:
                    if relative and (after is None or subtree > after):
                        found.append(relative.rstrip("/"))
                elif after is None or subtree > after or after.startswith(subtree):
                    await walk(subtree)

        await walk("")
        return found[:limit] if limit is not None else found

    async def walk(self, path: str, after: str | None = None, until: str | None = None,
                   leaf: Callable[[str], bool] | None = None) -> AsyncIterator[FileInfo]:
        """Every file below directory path, at any depth, with its size and mtime; nothing when path
        does not exist. FileInfo.path is relative to path. Files come in the order of their keys
        (directory `v1` sorts as `v1/`), so everything below one directory comes together; only
        those whose relative path is > after and <= until, so that a caller can list the parts
        of a large tree at the same time.

        A backend with directories reports a directory that `leaf` accepts (given its relative
        path) as one entry, is_dir, without size or mtime (0), instead of walking into it: where a
        directory's name says all a caller needs, that spares reading it. Backends without
        directories (S3, memory) list the files below it as usual, so callers take both.

        This generic walk lists and stats entry by entry; a backend with a cheaper way (S3 lists
        1,000 keys a call wherever they are) overrides it.
        """
        try:
            names = await self.list(path)
        except PathNotFound:
            return
        entries = []
        for name in names:
            try:
                entries.append((name, await self.stat(f"{path}/{name}" if path else name)))
            except PathNotFound:
                continue  # deleted meanwhile
        for name, info in sorted(entries, key=lambda e: e[0] + ("/" if e[1].is_dir else "")):
            if not info.is_dir:
                if in_range(name, after, until):
                    yield FileInfo(name, info.size, info.mtime, False)
            elif leaf is not None and leaf(name):
                if in_range(name, after, until):
                    yield FileInfo(name, 0, 0.0, True)
            elif subtree_in_range(name + "/", after, until):
                inner = None if leaf is None else (lambda relative, name=name: leaf(f"{name}/{relative}"))
                async for found in self.walk(info.path, _below(after, name), _below(until, name), inner):
                    yield FileInfo(f"{name}/{found.path}", found.size, found.mtime, found.is_dir)

    async def move_files(self, moves: list[tuple[str, str]]) -> list[bool]:
        """move(src, dst) for each pair of files written whole, many at once where the backend can
        (S3: a server-side copy each, then the sources deleted 1,000 a call); whether each source
        was there to move. Not atomic as a whole: each file is at one place or the other."""
        moved = []
        for src, dst in moves:
            try:
                await self.move(src, dst)
            except PathNotFound:
                moved.append(False)
            else:
                moved.append(True)
        return moved

    async def delete_files(self, paths: list[str]) -> None:
        """Delete files written whole (not directories, not append writers' files); those already
        gone are skipped. A backend that deletes in batches (S3: 1,000 keys a call) overrides it."""
        for path in paths:
            try:
                await self.delete(path)
            except PathNotFound:
                continue

    async def prune(self, paths: list[str]) -> None:
        """Remove each of these directories that is empty, as a delete of its last file does on stores
        without directories (S3, memory), which keep nothing to prune; one holding anything stays."""

    async def purge_incomplete(self, older_than: float, dry_run: bool = False) -> int:
        """Abort writes the backend itself left unfinished (S3 multipart uploads) older than
        `older_than` seconds; how many there were. Backends without such state have none."""
        return 0

    def unfinished_writes(self) -> list[str]:
        """This process's writes the backend keeps unfinished outside any file (S3 multipart uploads),
        as tokens for abort_writes(). A process that dies leaves them behind, invisible yet stored;
        whoever it told of them can abort them. Backends without such state have none."""
        return []

    async def abort_writes(self, tokens: list[str]) -> None:
        """Abort the unfinished writes unfinished_writes() named, in this process or in one since gone;
        any finished or aborted by now is left as it is."""

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A URL a client may fetch the content from directly, if the backend has one."""
        return None

    def local_file(self, path: str) -> str | None:
        """An OS path to the file, for backends that can serve it with sendfile."""
        return None

    async def holds_files(self, path: str) -> bool:
        """Whether any file lies below the directory path. Backends keeping empty directories
        (the filesystem) answer as those without directories (S3) do: an empty tree holds nothing."""
        try:
            names = await self.list(path)
        except PathNotFound:
            return False
        for name in names:
            child = f"{path}/{name}"
            if not (await self.stat(child)).is_dir or await self.holds_files(child):
                return True
        return False

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except PathNotFound:
            return False
        return True

    async def close(self) -> None:
        """Release connections and threads."""
