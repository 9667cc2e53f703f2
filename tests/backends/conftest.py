"""The `backend` fixture: every test in this package runs once per storage backend.

To hold a new backend to the contract, add one entry to FACTORIES: an async
context manager that yields a fresh, empty backend and cleans up after it
(an S3 backend would create a unique bucket or key prefix and empty it on exit).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest

from storage_backends import FilesystemBackend, MemoryBackend, StorageBackend
from storage_backends.s3 import S3Backend, S3Settings

from ..s3 import new_bucket, s3_config
from ..servers import MotoServer


@asynccontextmanager
async def filesystem_backend(tmp_path: Path) -> AsyncIterator[StorageBackend]:
    yield FilesystemBackend(str(tmp_path / "store"))


@asynccontextmanager
async def memory_backend(tmp_path: Path) -> AsyncIterator[StorageBackend]:
    yield MemoryBackend()


_moto: MotoServer | None = None


@asynccontextmanager
async def s3_backend(tmp_path: Path) -> AsyncIterator[StorageBackend]:
    """A fresh bucket on the session's moto server, under a root directory as deployments use."""
    assert _moto is not None
    settings = S3Settings.from_config(s3_config(_moto, new_bucket(_moto), rootdirectory="/registry",
                                                chunksize=5 << 20))
    yield S3Backend(settings)


FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[StorageBackend]]] = {
    "filesystem": filesystem_backend,
    "memory": memory_backend,
    "s3": s3_backend,
}


@pytest.fixture(scope="session", autouse=True)
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    global _moto
    base = tmp_path_factory.mktemp("moto")
    with MotoServer(base, base / "moto.log") as server:
        _moto = server
        yield server
    _moto = None


@pytest.fixture(params=list(FACTORIES))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageBackend]:
    """A fresh, empty backend of each kind, closed when the test ends."""
    async with FACTORIES[request.param](tmp_path) as store:
        try:
            yield store
        finally:
            await store.close()
