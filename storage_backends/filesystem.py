"""Local filesystem backend, laid out as Distribution's filesystem driver.

Small metadata operations (links of a few dozen bytes, directory listings,
stat) run inline on the event loop: they hit the page cache and cost far less
than a hop to a worker thread. Bulk data moves through a thread pool.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import uuid
from typing import Any, AsyncIterator, Callable, Iterator

from .base import FileInfo, PathNotFound, StorageBackend, Writer, check_path, in_range, subtree_in_range

READ_CHUNK = 1 << 20
#: files a walk lists between two turns of the event loop, so that a collection does not stall requests
WALK_BATCH = 512
#: worker threads a bulk delete (delete_files, prune) spreads over
BULK_THREADS = 6


class FilesystemBackend(StorageBackend):
    name = "filesystem"

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)

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

    async def write_bytes(self, path: str, data: bytes) -> None:
        full = self._full(path)
        tmp = _temp_name(full)
        try:
            _write_file(tmp, data)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            _write_file(tmp, data)
        os.replace(tmp, full)

    async def writer(self, path: str, append: bool = False) -> Writer:
        full = self._full(path)
        try:
            return _FileWriter(full, append)
        except FileNotFoundError:  # directories are made only when missing: makedirs costs a stat per level
            os.makedirs(os.path.dirname(full), exist_ok=True)
            return _FileWriter(full, append)

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
        full_src, full_dst = self._full(src), self._full(dst)
        try:
            os.replace(full_src, full_dst)
        except FileNotFoundError:
            if not os.path.exists(full_src):
                raise PathNotFound(src) from None
            os.makedirs(os.path.dirname(full_dst), exist_ok=True)
            os.replace(full_src, full_dst)

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


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class _FileWriter(Writer):
    """Writes straight to the file when appending, else to a temp file renamed on commit."""

    def __init__(self, full: str, append: bool) -> None:
        self._full = full
        self._append = append
        self._target = full if append else _temp_name(full)
        self._file = open(self._target, "ab" if append else "wb")
        self._start = self._file.tell()
        self.size = self._start
        self._closed = False

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write, data)
        self.size += len(data)

    def _write(self, data: bytes) -> None:
        if self.on_write is not None:
            self.on_write(data)
        self._file.write(data)

    async def commit(self) -> None:
        self._close()
        if not self._append:
            os.replace(self._target, self._full)

    async def cancel(self) -> None:
        self._close()
        if self._append:
            os.truncate(self._target, self._start)
        else:
            try:
                os.unlink(self._target)
            except FileNotFoundError:
                pass
        self.size = self._start

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()
