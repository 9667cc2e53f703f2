"""Local filesystem backend, laid out as Distribution's filesystem driver.

Small metadata operations (links of a few dozen bytes, directory listings,
stat) run inline on the event loop: they hit the page cache and cost far less
than a hop to a worker thread. Bulk data moves through a thread pool, and so
does every write that waits for the disk (fsync).

Durability (fsync=True, the default): content is flushed to disk before the
rename that makes it visible, and the directory holding it after, so that a
power cut leaves either the old state or the whole new file, never a visible
file with missing content. That is once per blob (when a finished upload
becomes the blob) and once per link or manifest, never per upload chunk:
upload data is scratch space, checked against its digest before it is used.

A full disk (ENOSPC) or an exhausted quota (EDQUOT) is StorageFull, naming the
path and the free space; a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import shutil
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Iterator, Sequence, TypeVar

from .base import (FileInfo, PathNotFound, Piece, StorageBackend, StorageFull, Writer, check_path, in_range,
                   subtree_in_range)

READ_CHUNK = 1 << 20
#: files a walk lists between two turns of the event loop, so that a collection does not stall requests
WALK_BATCH = 512
#: worker threads a bulk delete (delete_files, prune) spreads over
BULK_THREADS = 6


T = TypeVar("T")
#: errors that mean "no room": the write cannot succeed until space is freed
NO_ROOM = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}
#: threads for writes that wait on the disk: an fsync mostly waits, and a few slow ones must not hold up
#: the reads and hashing that share the event loop's default pool
SYNC_THREADS = 32
#: with fsync, an upload's data is handed to the disk every this many bytes (see _Writeback)
WRITEBACK_BYTES = 8 << 20


class FilesystemBackend(StorageBackend):
    name = "filesystem"

    def __init__(self, root: str, fsync: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self._syncing = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="fsync") if fsync else None
        os.makedirs(self.root, exist_ok=True)

    async def close(self) -> None:
        if self._syncing is not None:
            self._syncing.shutdown(wait=False)

    @contextlib.contextmanager
    def _room_for(self, path: str) -> Iterator[None]:
        """ENOSPC and EDQUOT become StorageFull, with the free space at the time."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in NO_ROOM:
                raise
            try:
                free: int | None = shutil.disk_usage(self.root).free
            except OSError:
                free = None
            raise StorageFull(path, NO_ROOM[exc.errno], free) from None

    async def _disk_write(self, path: str, work: Callable[[], T], durable: bool = True) -> T:
        """Run a write: in a worker thread when it waits for the disk (fsync), else inline."""
        with self._room_for(path):
            if durable and self._syncing is not None:
                return await asyncio.get_running_loop().run_in_executor(self._syncing, work)
            return work()

    def _makedirs(self, directory: str) -> list[str]:
        """Make directory and its missing parents; the directories that gained an entry, to sync.

        Callers make them before they sync a file's content and sync them after: on ext4 (and XFS)
        the file's fsync commits the new entries along with it, so syncing them costs no further
        journal commit, where syncing them first would cost one.
        """
        created = []
        missing = directory
        while len(missing) > len(self.root) and not os.path.isdir(missing):
            created.append(missing)
            missing = os.path.dirname(missing)
        os.makedirs(directory, exist_ok=True)
        return [os.path.dirname(made) for made in reversed(created)]

    def _full(self, path: str) -> str:
        return os.path.join(self.root, check_path(path))

    def local_file(self, path: str) -> str | None:
        return self._full(path)

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        full = self._full(path)
        try:
            f = open(full, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None
        loop = asyncio.get_running_loop()
        try:
            f.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await loop.run_in_executor(None, f.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def read_bytes(self, path: str) -> bytes:
        try:
            with open(self._full(path), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None

    async def write_bytes(self, path: str, data: bytes, durable: bool = True) -> None:
        full = self._full(path)
        sync = durable and self.fsync
        await self._disk_write(path, lambda: self._replace(full, data, sync), durable)

    def _replace(self, full: str, data: bytes, sync: bool) -> None:
        tmp = _temp_name(full)
        grown: list[str] = []
        try:
            try:
                _write_file(tmp, data, sync)
            except FileNotFoundError:  # directories are made only when missing: makedirs costs a stat per level
                grown = self._makedirs(os.path.dirname(full))
                _write_file(tmp, data, sync)
            os.replace(tmp, full)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        if sync:
            for directory in [*grown, os.path.dirname(full)]:
                _fsync_path(directory)

    async def writer(self, path: str, append: bool = False, size: int | None = None) -> Writer:
        full = self._full(path)
        with self._room_for(path):
            try:
                return _FileWriter(self, path, full, append)
            except FileNotFoundError:
                grown = self._makedirs(os.path.dirname(full))
                if self.fsync and not append:  # rare (uploads append): synced at once, not with the content
                    for directory in grown:
                        _fsync_path(directory)
                return _FileWriter(self, path, full, append)

    async def stat(self, path: str) -> FileInfo:
        try:
            st = os.stat(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        is_dir = stat.S_ISDIR(st.st_mode)
        return FileInfo(path, 0 if is_dir else st.st_size, st.st_mtime, is_dir)

    async def list(self, path: str) -> list[str]:
        full = self.root if path == "" else self._full(path)
        try:
            return sorted(e.name for e in os.scandir(full) if not e.name.startswith(".tmp-"))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None

    async def holds_files(self, path: str) -> bool:
        for _, _, files in os.walk(self._full(path)):  # top-down: stops at the first directory with a file
            if any(not name.startswith(".tmp-") for name in files):
                return True
        return False

    async def walk(self, path: str, after: str | None = None, until: str | None = None,
                   leaf: Callable[[str], bool] | None = None) -> AsyncIterator[FileInfo]:
        top = self.root if path == "" else self._full(path)
        for count, info in enumerate(_walk(top, after, until, leaf), 1):
            yield info
            if count % WALK_BATCH == 0:
                await asyncio.sleep(0)

    async def move_files(self, moves: list[tuple[str, str]]) -> list[bool]:
        full = [(self._full(src), self._full(dst)) for src, dst in moves]
        moved: dict[tuple[str, str], bool] = {}

        def move(pair: tuple[str, str]) -> None:
            moved[pair] = _replace(*pair)

        await self._in_threads(move, full)
        return [moved[pair] for pair in full]

    async def delete_files(self, paths: list[str]) -> None:
        await self._in_threads(_unlink, [self._full(path) for path in paths])

    async def prune(self, paths: list[str]) -> None:
        await self._in_threads(_rmdir, [self._full(path) for path in paths])

    @staticmethod
    async def _in_threads(operation: Callable[[Any], None], paths: list[Any]) -> None:
        """operation on every path, spread over BULK_THREADS worker threads: a rename or delete waits
        on the disk (the directory's and the inode's blocks), and several wait together."""
        if len(paths) <= 1:
            for path in paths:
                operation(path)
            return
        loop = asyncio.get_running_loop()
        shares = [paths[i::BULK_THREADS] for i in range(min(BULK_THREADS, len(paths)))]
        await asyncio.gather(*(loop.run_in_executor(None, _each, operation, share) for share in shares))

    async def move(self, src: str, dst: str) -> None:
        """With fsync, src's content reaches the disk before the rename makes it visible at dst."""
        full_src, full_dst = self._full(src), self._full(dst)
        await self._disk_write(dst, lambda: self._rename(src, full_src, full_dst, self.fsync))

    def _rename(self, src: str, full_src: str, full_dst: str, sync: bool) -> None:
        target = os.path.dirname(full_dst)
        try:
            if sync:
                grown = [] if os.path.isdir(target) else self._makedirs(target)
                _fsync_path(full_src)
                os.replace(full_src, full_dst)
                for directory in [*grown, target]:
                    _fsync_path(directory)
                return
            try:
                os.replace(full_src, full_dst)
            except FileNotFoundError:
                if not os.path.exists(full_src):
                    raise
                self._makedirs(target)
                os.replace(full_src, full_dst)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(src) from None

    async def delete(self, path: str) -> None:
        full = self._full(path)
        if os.path.isdir(full):
            # Rename first so that readers never see a half-deleted tree.
            doomed = _temp_name(full)
            os.replace(full, doomed)
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, doomed, True)
            return
        try:
            os.unlink(full)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None


def _replace(src: str, dst: str) -> bool:
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        if not os.path.exists(src):
            return False
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.replace(src, dst)
        except FileNotFoundError:  # moved meanwhile by another process
            return False
    return True


def _unlink(full: str) -> None:
    try:
        os.unlink(full)
    except (FileNotFoundError, NotADirectoryError):
        pass


def _rmdir(full: str) -> None:
    try:
        os.rmdir(full)
    except OSError:  # not empty (a file, or a write in progress), or gone already
        pass


def _each(operation: Callable[[Any], None], paths: list[Any]) -> None:
    for path in paths:
        operation(path)


_SCAN, _FILE, _LEAF = 0, 1, 2


def _walk(top: str, after: str | None, until: str | None,
          leaf: Callable[[str], bool] | None) -> Iterator[FileInfo]:
    """Depth first in key order (a directory `d` sorts as `d/`), with an explicit stack: a stat per
    file, one scandir per directory but the leaves, which cost nothing."""
    stack: list[tuple[int, str, Any]] = [(_SCAN, "", top)]
    while stack:
        kind, key, item = stack.pop()
        if kind == _LEAF:
            yield FileInfo(key, 0, 0.0, True)
            continue
        if kind == _FILE:
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield FileInfo(key, st.st_size, st.st_mtime, False)
            continue
        children = []
        try:
            with os.scandir(item) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".tmp-"):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        child = key + name
                        if leaf is not None and leaf(child):
                            if in_range(child, after, until):
                                children.append((child + "/", _LEAF, child, entry))
                        elif subtree_in_range(child + "/", after, until):
                            children.append((child + "/", _SCAN, child + "/", entry.path))
                    elif in_range(key + name, after, until):
                        children.append((key + name, _FILE, key + name, entry))
        except (FileNotFoundError, NotADirectoryError):
            continue
        children.sort(key=lambda child: child[0], reverse=True)
        stack.extend(child[1:] for child in children)


def _temp_name(full: str) -> str:
    return os.path.join(os.path.dirname(full), f".tmp-{uuid.uuid4().hex}")


def _write_file(path: str, data: bytes, sync: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def _write_all(fd: int, data: Piece) -> None:
    """Write every byte of data (a write may take fewer, as any write may)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Writeback:
    """Starts the disk write of a file's new data every WRITEBACK_BYTES, without waiting for it
    (sync_file_range(SYNC_FILE_RANGE_WRITE), Linux): the fsync that makes the file durable then finds
    little left to write, where it would otherwise wait for all of it (about 0.15 s per 512 MB here).
    It makes nothing durable itself, and where the call is missing it does nothing."""

    def __init__(self, fd: int, start: int) -> None:
        self._fd = fd
        self._flushed = self._end = start

    def written(self, count: int) -> None:
        self._end += count
        if self._end - self._flushed >= WRITEBACK_BYTES:
            self.start()

    def start(self) -> None:
        """Start writing what is not on its way yet (the writer's end: the rest of a chunk)."""
        if self._end > self._flushed and _sync_file_range is not None:
            if _sync_file_range(self._fd, self._flushed, self._end - self._flushed, _SYNC_FILE_RANGE_WRITE):
                return  # an error here costs only the head start; the fsync reports real trouble
            self._flushed = self._end


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_sync_file_range = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _fsync_path(path: str) -> None:
    """Flush a file's content, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _FileWriter(Writer):
    """Writes straight to the file when appending (an upload's scratch data: never synced), else to
    a temp file that commit() syncs (with fsync) and renames into place."""

    def __init__(self, backend: FilesystemBackend, path: str, full: str, append: bool) -> None:
        self._backend = backend
        self._path = path
        self._full = full
        self._append = append
        self._target = full if append else _temp_name(full)
        self._file = open(self._target, "ab" if append else "wb", buffering=0)  # pieces are large: no copy
        self._start = self._file.tell()
        self.size = self._start
        self._closed = False
        # scratch data that a later move makes durable: let the disk take it while the rest arrives
        self._writeback = _Writeback(self._file.fileno(), self._start) if append and backend.fsync else None

    async def write(self, data: bytes) -> None:
        await self.write_pieces((data,))

    async def write_pieces(self, pieces: Sequence[Piece]) -> None:
        """Hash (on_write) and write all pieces in one worker-thread hop."""
        with self._backend._room_for(self._path):
            written = await asyncio.get_running_loop().run_in_executor(None, self._write, pieces)
        self.size += written

    def _write(self, pieces: Sequence[Piece]) -> int:
        fd, on_write = self._file.fileno(), self.on_write
        written = 0
        for piece in pieces:  # each piece hashed, then written while it is still in the CPU's cache
            if on_write is not None:
                on_write(piece)
            _write_all(fd, piece)
            written += len(piece)
        if self._writeback is not None:
            self._writeback.written(written)
        return written

    async def commit(self) -> None:
        if self._append:
            if self._writeback is not None:  # in a thread: starting a disk write may wait on the disk
                await asyncio.get_running_loop().run_in_executor(None, self._writeback.start)
            with self._backend._room_for(self._path):
                self._close()
            return
        await self._backend._disk_write(self._path, self._publish)

    def _publish(self) -> None:
        sync = self._backend.fsync
        try:
            if sync and not self._closed:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._close()
            os.replace(self._target, self._full)
        except BaseException:
            _unlink_quietly(self._target)
            raise
        if sync:
            _fsync_path(os.path.dirname(self._full))

    async def cancel(self) -> None:
        try:
            self._close()
        except OSError:
            pass  # what could not be flushed is being discarded anyway
        if self._append:
            os.truncate(self._target, self._start)
        else:
            _unlink_quietly(self._target)
        self.size = self._start

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()
