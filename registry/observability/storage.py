"""registry_storage_action_seconds{driver,action}: every storage call the registry makes, timed.

A backend wrapped in MeteredBackend behaves exactly as the backend; the action names and driver
names are Distribution's (GetContent, PutContent, Reader, Writer, Stat, List, Move, Delete,
RedirectURL, Walk; filesystem, s3aws, inmemory), so its dashboards read ours.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from storage_backends import FileInfo, StorageBackend, Writer

from .metrics import STORAGE_ACTION

T = TypeVar("T")
DRIVER_NAMES = {"filesystem": "filesystem", "s3": "s3aws", "memory": "inmemory"}
ACTIONS = ("GetContent", "PutContent", "Reader", "Writer", "Commit", "Stat", "List", "Move", "Delete",
           "RedirectURL", "Walk")


class MeteredBackend(StorageBackend):
    def __init__(self, inner: StorageBackend) -> None:
        self.inner = inner
        self.name = inner.name
        driver = DRIVER_NAMES.get(inner.name, inner.name)
        self._timers = {action: STORAGE_ACTION.child((driver, action)) for action in ACTIONS}
        self._get_content, self._stat = self._timers["GetContent"], self._timers["Stat"]

    async def _timed(self, action: str, call: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await call
        finally:
            self._timers[action].observe(time.perf_counter() - start)

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Timed to the first bytes (opening the object), as Distribution times Reader."""
        start: float | None = time.perf_counter()
        try:
            async for chunk in self.inner.read(path, offset, length):
                if start is not None:
                    self._timers["Reader"].observe(time.perf_counter() - start)
                    start = None
                yield chunk
        finally:
            if start is not None:
                self._timers["Reader"].observe(time.perf_counter() - start)

    # the calls every manifest and blob request makes are timed inline: _timed's extra coroutine, and a
    # call of Histogram.observe, cost about as much as the timing itself

    async def read_bytes(self, path: str) -> bytes:
        start = time.perf_counter()
        try:
            return await self.inner.read_bytes(path)
        finally:
            elapsed, histogram = time.perf_counter() - start, self._get_content
            histogram.counts[bisect_left(histogram.bounds, elapsed)] += 1
            histogram.sum += elapsed

    async def stat(self, path: str) -> FileInfo:
        start = time.perf_counter()
        try:
            return await self.inner.stat(path)
        finally:
            elapsed, histogram = time.perf_counter() - start, self._stat
            histogram.counts[bisect_left(histogram.bounds, elapsed)] += 1
            histogram.sum += elapsed

    async def exists(self, path: str) -> bool:
        start = time.perf_counter()
        try:
            return await self.inner.exists(path)
        finally:
            elapsed, histogram = time.perf_counter() - start, self._stat
            histogram.counts[bisect_left(histogram.bounds, elapsed)] += 1
            histogram.sum += elapsed

    async def write_bytes(self, path: str, data: bytes) -> None:
        await self._timed("PutContent", self.inner.write_bytes(path, data))

    async def writer(self, path: str, append: bool = False) -> Writer:
        writer = await self._timed("Writer", self.inner.writer(path, append))
        commit = writer.commit

        async def timed_commit() -> None:
            await self._timed("Commit", commit())

        writer.commit = timed_commit  # type: ignore[method-assign]
        return writer

    async def list(self, path: str) -> list[str]:
        return await self._timed("List", self.inner.list(path))

    async def list_after(self, path: str, start_after: str | None, limit: int) -> list[str]:
        return await self._timed("List", self.inner.list_after(path, start_after, limit))

    async def find_dirs_containing(self, path: str, marker: str, start_after: str | None = None,
                                   limit: int | None = None, skip: Callable[[str], bool] = lambda name: False
                                   ) -> list[str]:
        return await self._timed("Walk", self.inner.find_dirs_containing(path, marker, start_after, limit, skip))

    async def move(self, src: str, dst: str) -> None:
        await self._timed("Move", self.inner.move(src, dst))

    async def delete(self, path: str) -> None:
        await self._timed("Delete", self.inner.delete(path))

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        return await self._timed("RedirectURL", self.inner.redirect_url(path, method))

    async def purge_incomplete(self, older_than: float, dry_run: bool = False) -> int:
        return await self.inner.purge_incomplete(older_than, dry_run)

    def local_file(self, path: str) -> str | None:
        return self.inner.local_file(path)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        """Anything else a particular backend offers (its settings, say) is the backend's."""
        return getattr(self.inner, name)
