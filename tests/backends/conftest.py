"""The `backend` fixture: every test in this package runs once per storage backend.

To hold a new backend to the contract, add one entry to FACTORIES: an async
context manager that, given the test's request (to reach fixtures such as
tmp_path or the session's moto server), yields a fresh, empty backend.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

from storage_backends import FilesystemBackend, MemoryBackend, StorageBackend
from storage_backends.s3 import S3Backend, S3Settings

from ..s3 import new_bucket, s3_config
from ..servers import MotoServer


@asynccontextmanager
async def filesystem_backend(request: pytest.FixtureRequest) -> AsyncIterator[StorageBackend]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    yield FilesystemBackend(str(tmp_path / "store"))


@asynccontextmanager
async def memory_backend(request: pytest.FixtureRequest) -> AsyncIterator[StorageBackend]:
    yield MemoryBackend()


@asynccontextmanager
async def s3_backend(request: pytest.FixtureRequest) -> AsyncIterator[StorageBackend]:
    """A fresh bucket on the session's moto server (tests/conftest.py), under a root directory as deployments use."""
    moto: MotoServer = request.getfixturevalue("moto")
    settings = S3Settings(**s3_config(moto, new_bucket(moto), rootdirectory="registry", chunksize=5 << 20))
    yield S3Backend(settings)


FACTORIES: dict[str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[StorageBackend]]] = {
    "filesystem": filesystem_backend,
    "memory": memory_backend,
    "s3": s3_backend,
}


@pytest.fixture(params=list(FACTORIES))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[StorageBackend]:
    """A fresh, empty backend of each kind, closed when the test ends."""
    async with FACTORIES[request.param](request) as store:
        try:
            yield store
        finally:
            await store.close()
