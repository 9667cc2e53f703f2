"""registry_storage_action_seconds{driver,action}: every storage call the registry makes, timed.

A backend wrapped in MeteredBackend behaves exactly as the backend; the action names and driver
names are Distribution's (GetContent, PutContent, Reader, Writer, Stat, List, Move, Delete,
RedirectURL, Walk; filesystem, s3aws, inmemory), so its dashboards read ours. Each method times its
call where it stands (no helper coroutine): manifest and blob requests make several such calls, and an
extra coroutine per call costs about as much as the timing.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, AsyncIterator, Callable

from storage_backends import FileInfo, StorageBackend, Writer

from .metrics import STORAGE_ACTION

DRIVER_NAMES = {"filesystem": "filesystem", "s3": "s3aws", "memory": "inmemory"}


class MeteredBackend(StorageBackend):
    def __init__(self, inner: StorageBackend, traced: Callable[[Any, str, str], Any] | None = None) -> None:
        """traced(timer, driver, action): a timer that also records a span (tracing.enabled)."""
        self.inner = inner
        self.name = inner.name
        self.reclaims_unfinished_writes = inner.reclaims_unfinished_writes
        driver = DRIVER_NAMES.get(inner.name, inner.name)

        def timer(labels: tuple[str, str]) -> Any:
            child = STORAGE_ACTION.child(labels)
            return child if traced is None else traced(child, *labels)

        self._get_content, self._put_content = timer((driver, "GetContent")), timer((driver, "PutContent"))
        self._reader, self._writer = timer((driver, "Reader")), timer((driver, "Writer"))
        self._commit, self._stat = timer((driver, "Commit")), timer((driver, "Stat"))
        self._list, self._walk = timer((driver, "List")), timer((driver, "Walk"))
        self._move, self._delete = timer((driver, "Move")), timer((driver, "Delete"))
        self._redirect = timer((driver, "RedirectURL"))

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Timed to the first bytes (opening the object), as Distribution times Reader."""
        start: float | None = perf_counter()
        try:
            async for chunk in self.inner.read(path, offset, length):
                if start is not None:
                    self._reader.since(start)
                    start = None
                yield chunk
        finally:
            if start is not None:
                self._reader.since(start)

    async def read_bytes(self, path: str) -> bytes:
        start = perf_counter()
        try:
            return await self.inner.read_bytes(path)
        finally:
            self._get_content.since(start)

    async def write_bytes(self, path: str, data: bytes, durable: bool = True) -> None:
        start = perf_counter()
        try:
            await self.inner.write_bytes(path, data, durable)
        finally:
            self._put_content.since(start)

    async def writer(self, path: str, append: bool = False, size: int | None = None) -> Writer:
        start = perf_counter()
        try:
            writer = await self.inner.writer(path, append, size)
        finally:
            self._writer.since(start)
        commit = writer.commit

        async def timed_commit() -> None:
            started = perf_counter()
            try:
                await commit()
            finally:
                self._commit.since(started)

        writer.commit = timed_commit  # type: ignore[method-assign]
        return writer

    async def stat(self, path: str) -> FileInfo:
        start = perf_counter()
        try:
            return await self.inner.stat(path)
        finally:
            self._stat.since(start)

    async def exists(self, path: str) -> bool:
        start = perf_counter()
        try:
            return await self.inner.exists(path)
        finally:
            self._stat.since(start)

    async def list(self, path: str) -> list[str]:
        start = perf_counter()
        try:
            return await self.inner.list(path)
        finally:
            self._list.since(start)

    async def list_after(self, path: str, start_after: str | None, limit: int) -> list[str]:
        start = perf_counter()
        try:
            return await self.inner.list_after(path, start_after, limit)
        finally:
            self._list.since(start)

    async def find_dirs_containing(self, path: str, marker: str, start_after: str | None = None,
                                   limit: int | None = None, skip: Callable[[str], bool] = lambda name: False
                                   ) -> list[str]:
        start = perf_counter()
        try:
            return await self.inner.find_dirs_containing(path, marker, start_after, limit, skip)
        finally:
            self._walk.since(start)

    async def walk(self, path: str, after: str | None = None, until: str | None = None,
                   leaf: Callable[[str], bool] | None = None) -> AsyncIterator[FileInfo]:
        """Timed to the first entry, as read() is: a walk's length is the caller's to decide."""
        start: float | None = perf_counter()
        try:
            async for info in self.inner.walk(path, after, until, leaf):
                if start is not None:
                    self._walk.since(start)
                    start = None
                yield info
        finally:
            if start is not None:
                self._walk.since(start)

    async def holds_files(self, path: str) -> bool:
        start = perf_counter()
        try:
            return await self.inner.holds_files(path)
        finally:
            self._list.since(start)

    async def move_files(self, moves: list[tuple[str, str]]) -> list[bool]:
        start = perf_counter()
        try:
            return await self.inner.move_files(moves)
        finally:
            self._move.since(start)

    async def delete_files(self, paths: list[str]) -> None:
        start = perf_counter()
        try:
            await self.inner.delete_files(paths)
        finally:
            self._delete.since(start)

    async def prune(self, paths: list[str]) -> None:
        start = perf_counter()
        try:
            await self.inner.prune(paths)
        finally:
            self._delete.since(start)

    async def move(self, src: str, dst: str) -> None:
        start = perf_counter()
        try:
            await self.inner.move(src, dst)
        finally:
            self._move.since(start)

    async def delete(self, path: str) -> None:
        start = perf_counter()
        try:
            await self.inner.delete(path)
        finally:
            self._delete.since(start)

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        start = perf_counter()
        try:
            return await self.inner.redirect_url(path, method)
        finally:
            self._redirect.since(start)

    async def purge_incomplete(self, older_than: float, dry_run: bool = False) -> int:
        return await self.inner.purge_incomplete(older_than, dry_run)

    def unfinished_writes(self) -> list[str]:
        return self.inner.unfinished_writes()

    async def abort_writes(self, tokens: list[str]) -> None:
        await self.inner.abort_writes(tokens)

    def local_file(self, path: str) -> str | None:
        return self.inner.local_file(path)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        """Anything else a particular backend offers (its settings, say) is the backend's."""
        return getattr(self.inner, name)
