"""Fixtures: registry processes on random loopback ports, each with its own data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from .servers import ReferenceRegistry, RegistryServer
from .client import RegistryClient


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One registry for the session; tests use repository names of their own."""
    base = tmp_path_factory.mktemp("registry")
    with RegistryServer(base / "data", base / "server.log") as server:
        yield server


@pytest.fixture
def client(registry: RegistryServer) -> RegistryClient:
    return RegistryClient(registry.url)


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[Callable[..., RegistryServer]]:
    """Start registries with their own config; each is stopped when the test ends."""
    started: list[RegistryServer] = []

    def make(root: Path | None = None, config: dict | None = None, args: list[str] | None = None) -> RegistryServer:
        index = len(started)
        server = RegistryServer(root or tmp_path / f"data{index}", tmp_path / f"server{index}.log", config, args)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def make_reference(tmp_path: Path) -> Iterator[Callable[[Path], ReferenceRegistry]]:
    """Start Distribution (Debian's docker-registry) on a data directory."""
    started: list[ReferenceRegistry] = []

    def make(root: Path) -> ReferenceRegistry:
        server = ReferenceRegistry(root, tmp_path / f"reference{len(started)}.log")
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()
