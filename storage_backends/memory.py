"""In-memory backend: for tests and throwaway registries; nothing survives the process."""

from __future__ import annotations

import time
from typing import AsyncIterator, Callable

from .base import FileInfo, PathNotFound, StorageBackend, Writer, check_path, in_range


class MemoryBackend(StorageBackend):
    name = "memory"
    reclaims_unfinished_writes = True

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, float]] = {}

    def _get(self, path: str) -> bytes:
        try:
            return self._files[check_path(path)][0]
        except KeyError:
            raise PathNotFound(path) from None

    def _put(self, path: str, data: bytes) -> None:
        self._files[path] = (data, time.time())

    def _children(self, path: str) -> set[str]:
        prefix = f"{path}/" if path else ""
        return {key[len(prefix):].split("/", 1)[0] for key in self._files if key.startswith(prefix)}

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        data = self._get(path)
        end = len(data) if length is None else min(len(data), offset + length)
        for start in range(offset, end, 1 << 20):
            yield data[start:min(end, start + (1 << 20))]

    async def read_bytes(self, path: str) -> bytes:
        return self._get(path)

    async def write_bytes(self, path: str, data: bytes, durable: bool = True) -> None:
        self._put(check_path(path), bytes(data))

    async def writer(self, path: str, append: bool = False, size: int | None = None) -> Writer:
        check_path(path)
        start = self._files[path][0] if append and path in self._files else b""
        return _MemoryWriter(self, path, start, append)

    async def stat(self, path: str) -> FileInfo:
        if path in self._files:
            data, mtime = self._files[path]
            return FileInfo(path, len(data), mtime, False)
        if self._children(check_path(path)):
            return FileInfo(path, 0, time.time(), True)
        raise PathNotFound(path)

    async def list(self, path: str) -> list[str]:
        if path != "":
            check_path(path)
        names = self._children(path)
        if not names and path != "":
            raise PathNotFound(path)
        return sorted(names)

    async def walk(self, path: str, after: str | None = None, until: str | None = None,
                   leaf: Callable[[str], bool] | None = None) -> AsyncIterator[FileInfo]:
        prefix = f"{check_path(path)}/" if path else ""
        for key in sorted(k for k in self._files if k.startswith(prefix)):
            relative = key[len(prefix):]
            if in_range(relative, after, until) and key in self._files:
                data, mtime = self._files[key]
                yield FileInfo(relative, len(data), mtime, False)

    async def move(self, src: str, dst: str) -> None:
        data = self._get(src)
        self._put(check_path(dst), data)
        if dst != src:
            del self._files[src]

    async def delete(self, path: str) -> None:
        check_path(path)
        if path in self._files:
            del self._files[path]
            return
        doomed = [key for key in self._files if key.startswith(path + "/")]
        if not doomed:
            raise PathNotFound(path)
        for key in doomed:
            del self._files[key]


class _MemoryWriter(Writer):
    def __init__(self, backend: MemoryBackend, path: str, start: bytes, append: bool) -> None:
        self._backend = backend
        self._path = path
        self._start = start
        self._append = append
        self._parts: list[bytes] = []
        self.size = len(start)

    async def write(self, data: bytes) -> None:
        if self.on_write is not None:
            self.on_write(data)
        self._parts.append(bytes(data))
        self.size += len(data)
        if self._append:
            self._backend._put(self._path, self._start + b"".join(self._parts))

    async def commit(self) -> None:
        self._backend._put(self._path, self._start + b"".join(self._parts))

    async def cancel(self) -> None:
        self._parts.clear()
        self.size = len(self._start)
        if self._append:
            self._backend._put(self._path, self._start)
