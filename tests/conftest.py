"""Fixtures: registry processes on random loopback ports, each with its own data directory or S3 bucket.

The shared `registry` runs once per storage backend (test ids end in [filesystem]
or [s3]); the S3 one redirects blob GETs to presigned URLs, as in production.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .browser import Browser
from .client import RegistryClient
from .engines import Dockerd, Podman, build_registry_image, import_base_image
from .s3 import new_bucket, s3_config
from .servers import MotoServer, ReferenceRegistry, RegistryServer

BACKENDS = ["filesystem", "s3"]
#: where in its bucket an S3 registry keeps its tree (deployments rarely use the bucket's top)
S3_ROOT = "/registry"


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One S3 endpoint per test session (per xdist worker); every user takes a fresh bucket."""
    base = tmp_path_factory.mktemp("moto")
    with MotoServer(base, base / "moto.log") as server:
        yield server


def s3_registry_config(moto: MotoServer, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """config, storing in a fresh bucket of the moto server."""
    merged = copy.deepcopy(config or {})
    storage = merged.setdefault("storage", {})
    storage["s3"] = {**s3_config(moto, new_bucket(moto), rootdirectory=S3_ROOT), **storage.get("s3", {})}
    return merged


def _start_shared(tmp_path_factory: pytest.TempPathFactory, name: str,
                  config: dict[str, Any] | None) -> RegistryServer:
    base = tmp_path_factory.mktemp(name)
    return RegistryServer(base / "data", base / "server.log", config).start()


@pytest.fixture(scope="session")
def filesystem_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = _start_shared(tmp_path_factory, "registry-filesystem", None)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_registry(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[RegistryServer]:
    """On a bucket of its own, redirecting blob GETs (the default)."""
    server = _start_shared(tmp_path_factory, "registry-s3", s3_registry_config(moto))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_streaming_registry(tmp_path_factory: pytest.TempPathFactory,
                          s3_registry: RegistryServer) -> Iterator[RegistryServer]:
    """A second replica on s3_registry's bucket with storage.redirect.disable: it serves blob bytes itself."""
    config = copy.deepcopy(s3_registry.config or {})
    config["storage"]["redirect"] = {"disable": True}
    server = _start_shared(tmp_path_factory, "registry-s3-streaming", config)
    yield server
    server.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def registry(request: pytest.FixtureRequest) -> RegistryServer:
    """One registry per backend for the session; tests use repository names of their own."""
    return request.getfixturevalue(f"{request.param}_registry")


@pytest.fixture
def client(registry: RegistryServer) -> RegistryClient:
    return RegistryClient(registry.url)


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """For tests on private registries (make_registry(backend=...)) that should run on every backend."""
    return request.param


@pytest.fixture
def make_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., RegistryServer]]:
    """Start registries with their own config; each is stopped when the test ends.

    backend="s3" stores in a fresh bucket; to share a store, pass another server's root and config.
    With `http.tls` in config the server is probed (and its url is) https; probe_cert is the
    (certificate, key) the probe presents when `http.tls.clientcas` requires one. descriptor_limit
    starts it with that RLIMIT_NOFILE, as on a host with few descriptors.
    """
    started: list[RegistryServer] = []

    def make(root: Path | None = None, config: dict | None = None, args: list[str] | None = None,
             backend: str = "filesystem", probe_cert: tuple[str, str] | None = None,
             descriptor_limit: int | tuple[int, int] | None = None) -> RegistryServer:
        index = len(started)
        if backend == "s3":
            config = s3_registry_config(request.getfixturevalue("moto"), config)
        server = RegistryServer(root or tmp_path / f"data{index}", tmp_path / f"server{index}.log", config, args)
        server.probe_cert = probe_cert
        server.descriptor_limit = descriptor_limit
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


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One chromium per test session (per xdist worker), for the web UI's tests."""
    started = Browser()
    yield started
    started.close()


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """A Docker daemon for the session (tests/engines.py); engine tests share an xdist group, so one runs."""
    daemon = Dockerd(tmp_path_factory.mktemp("dockerd") / "dockerd.log").start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def registry_image(dockerd: Dockerd) -> str:
    """deploy/Dockerfile built on the locally made base image."""
    return build_registry_image(dockerd, import_base_image(dockerd), "oci-registry:test")


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    engine = Podman(tmp_path / "podman")
    yield engine
    engine.close()
