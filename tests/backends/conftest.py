"""The `backend` fixture: every test in this package runs once per storage backend.

To hold a new backend to the contract, add one entry to FACTORIES: an async
context manager that yields a fresh, empty backend and cleans up after it
(an S3 backend would create a unique bucket or key prefix and empty it on exit).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

from storage_backends import FilesystemBackend, MemoryBackend, StorageBackend


@asynccontextmanager
async def filesystem_backend(tmp_path: Path) -> AsyncIterator[StorageBackend]:
    yield FilesystemBackend(str(tmp_path / "store"))


@asynccontextmanager
async def memory_backend(tmp_path: Path) -> AsyncIterator[StorageBackend]:
    yield MemoryBackend()


FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[StorageBackend]]] = {
    "filesystem": filesystem_backend,
    "memory": memory_backend,
}


@pytest.fixture(params=list(FACTORIES))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageBackend]:
    """A fresh, empty backend of each kind, closed when the test ends."""
    async with FACTORIES[request.param](tmp_path) as store:
        try:
            yield store
        finally:
            await store.close()
