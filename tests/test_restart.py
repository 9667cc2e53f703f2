"""Uploads survive a crash: a registry killed with SIGKILL resumes them after a restart on the same root."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from registry.incoming import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS

from .client import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_MANIFEST, RegistryClient, descriptor, \
    digest_of, unique_repo
from .engines import wait_until
from .servers import RegistryServer
from .store_view import incoming_data

CHUNK = 256 * 1024
MiB = 1 << 20


def patch_chunk(client: RegistryClient, location: str, data: bytes, start: int) -> requests.Response:
    return client.request("PATCH", location, data=data, headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{start}-{start + len(data) - 1}",
    })


def upload_data_file(server: RegistryServer, repo: str, location: str) -> Path:
    """Where the registry keeps an upload's bytes (Distribution's layout)."""
    upload_id = location.rstrip("/").rsplit("/", 1)[1].split("?")[0]
    return server.root / "docker/registry/v2/repositories" / repo / "_uploads" / upload_id / "data"


def stored_blob_files(server: RegistryServer) -> list[Path]:
    return sorted((server.root / "docker/registry/v2/blobs").rglob("*"))


def kill_mid_body(server: RegistryServer, data_file: Path, committed: int, sent_first: int,
                  data: bytes) -> Iterator[bytes]:
    """A request body that kills the server once part of it has reached the disk, then keeps sending."""
    for offset in range(0, sent_first, MiB):
        yield data[offset:offset + MiB]
    wait_until(lambda: data_file.exists() and data_file.stat().st_size > committed, "the body to reach the disk",
               interval=0.01)
    server.kill()
    for offset in range(sent_first, len(data), MiB):
        yield data[offset:offset + MiB]


def test_upload_resumes_after_sigkill_between_chunks(make_registry: Callable[..., RegistryServer]) -> None:
    server = make_registry()
    client = RegistryClient(server.url)
    repo = unique_repo("restart")
    data = random.randbytes(7 * CHUNK + 1234)
    location = client.start_upload(repo)
    upload_id = location.rsplit("/", 1)[1]
    stored = 0
    for _ in range(3):
        r = patch_chunk(client, location, data[stored:stored + CHUNK], stored)
        assert r.status_code == 202, r.text
        stored += CHUNK
        assert r.headers["Range"] == f"0-{stored - 1}"
    port = server.port

    server.kill()
    with pytest.raises(requests.ConnectionError):
        client.request("GET", location, timeout=5)
    server.start()
    assert server.port == port

    client = RegistryClient(server.url)  # no connections to the dead process
    r = client.request("GET", location)
    assert r.status_code == 204
    assert r.headers["Range"] == f"0-{stored - 1}"
    assert r.headers["Docker-Upload-UUID"] == upload_id
    assert r.headers["Location"].endswith(f"/v2/{repo}/blobs/uploads/{upload_id}")
    # A chunk from the wrong offset is refused with where to resume.
    wrong = patch_chunk(client, location, data[:CHUNK], 0)
    assert wrong.status_code == 416
    assert wrong.headers["Range"] == f"0-{stored - 1}"

    while len(data) - stored > CHUNK:
        r = patch_chunk(client, location, data[stored:stored + CHUNK], stored)
        assert r.status_code == 202, r.text
        stored += CHUNK
    digest = digest_of(data)
    r = client.request("PUT", location, params={"digest": digest}, data=data[stored:], headers={
        "Content-Type": "application/octet-stream", "Content-Range": f"{stored}-{len(data) - 1}"})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest

    blob = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert blob.status_code == 200
    assert blob.content == data
    assert client.request("GET", location).status_code == 404


def test_upload_resumes_after_sigkill_inside_a_chunk(make_registry: Callable[..., RegistryServer]) -> None:
    server = make_registry()
    client = RegistryClient(server.url)
    repo = unique_repo("restart")
    data = random.randbytes(12 * MiB + 99)
    location = client.start_upload(repo)
    committed = MiB
    assert patch_chunk(client, location, data[:committed], 0).status_code == 202

    # The second chunk streams (no Content-Length); the server dies once part of it is on disk.
    body = kill_mid_body(server, upload_data_file(server, repo, location), committed, 3 * MiB, data[committed:])
    with pytest.raises(requests.ConnectionError):
        client.request("PATCH", location, data=body, headers={"Content-Type": "application/octet-stream"})
    on_disk = upload_data_file(server, repo, location).stat().st_size
    assert committed < on_disk < len(data)
    server.start()

    client = RegistryClient(server.url)
    r = client.request("GET", location)
    assert r.status_code == 204
    assert r.headers["Range"] == f"0-{on_disk - 1}"
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404

    # Resuming from the reported offset gives exactly the original bytes: the stored prefix is intact.
    resumed = on_disk
    r = patch_chunk(client, location, data[resumed:], resumed)
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    digest = digest_of(data)
    r = client.request("PUT", location, params={"digest": digest})
    assert r.status_code == 201, r.text
    blob = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert blob.content == data


def test_sigkill_leaves_no_partial_blob(make_registry: Callable[..., RegistryServer]) -> None:
    """Neither an interrupted monolithic upload nor an interrupted final PUT becomes a blob; what the
    monolithic one had stored is deleted by the restarted registry, soon (its session is no one's)."""
    server = make_registry()
    client = RegistryClient(server.url)
    repo = unique_repo("restart")
    data = random.randbytes(10 * MiB)
    digest = digest_of(data)

    def any_upload_grew() -> bool:
        return any(server.store.size(path) > 0 for path in incoming_data(server.store))

    def killing_body() -> Iterator[bytes]:
        for offset in range(0, 3 * MiB, MiB):
            yield data[offset:offset + MiB]
        wait_until(any_upload_grew, "the upload to reach the store", interval=0.01)
        server.kill()
        for offset in range(3 * MiB, len(data), MiB):
            yield data[offset:offset + MiB]

    with pytest.raises(requests.ConnectionError):
        client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=killing_body())
    assert stored_blob_files(server) == []
    server.start()
    client = RegistryClient(server.url)
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 404
    wait_until(lambda: incoming_data(server.store) == [], "the killed process's upload to be swept",
               timeout=STALE_AFTER_SECONDS + 3 * HEARTBEAT_SECONDS)

    location = client.start_upload(repo)
    data_file = upload_data_file(server, repo, location)
    with pytest.raises(requests.ConnectionError):
        client.request("PUT", location, params={"digest": digest},
                       data=kill_mid_body(server, data_file, 0, 3 * MiB, data))
    assert 0 < data_file.stat().st_size < len(data)
    assert stored_blob_files(server) == []
    server.start()
    client = RegistryClient(server.url)
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert client.request("GET", f"/v2/{repo}/blobs/{digest}").status_code == 404

    # The registry is healthy: the same blob pushed again is stored whole.
    assert client.push_blob(repo, data) == digest
    assert client.request("GET", f"/v2/{repo}/blobs/{digest}").content == data
    blob_files = [p for p in stored_blob_files(server) if p.is_file()]
    assert [p.relative_to(server.root / "docker/registry/v2/blobs").as_posix() for p in blob_files] == [
        f"sha256/{digest[7:9]}/{digest[7:]}/data"
    ]
    assert os.path.getsize(blob_files[0]) == len(data)


def test_pushed_media_type_outlives_a_restart(make_registry: Callable[..., RegistryServer], backend_name: str) -> None:
    """A manifest whose body has no mediaType is served with the Content-Type it was pushed with, after a
    restart too; the same bytes pushed elsewhere with another type are served there with that one."""
    server = make_registry(backend=backend_name)
    client = RegistryClient(server.url)
    docker_repo, oci_repo = unique_repo("mediatype"), unique_repo("mediatype")
    config, layer = b'{"architecture": "amd64", "os": "linux"}', os.urandom(1000)
    for repo in (docker_repo, oci_repo):
        client.push_blob(repo, config)
        client.push_blob(repo, layer)
    body = json.dumps({"schemaVersion": 2, "config": descriptor(DOCKER_CONFIG, config),
                       "layers": [descriptor(DOCKER_LAYER, layer)]}).encode()
    digest = digest_of(body)
    assert client.push_manifest(docker_repo, "v1", body, DOCKER_MANIFEST).status_code == 201
    assert client.push_manifest(oci_repo, "v1", body, OCI_MANIFEST).status_code == 201

    def served(repo: str, reference: str, method: str = "GET") -> str:
        r = client.request(method, f"/v2/{repo}/manifests/{reference}")
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest, r.text
        assert method == "HEAD" or r.content == body
        return r.headers["Content-Type"]

    for restarted in (False, True):
        if restarted:
            server.restart()
            client = RegistryClient(server.url)
        for reference in ("v1", digest):
            for method in ("GET", "HEAD"):
                assert served(docker_repo, reference, method) == DOCKER_MANIFEST
                assert served(oci_repo, reference, method) == OCI_MANIFEST
    # pushed again with the type the body implies, it is served with that one
    assert client.push_manifest(docker_repo, "v2", body, OCI_MANIFEST).status_code == 201
    server.restart()
    client = RegistryClient(server.url)
    assert served(docker_repo, "v1") == OCI_MANIFEST
