"""GET, HEAD and DELETE /v2/<name>/blobs/<digest> over a real socket, plus the
read-only and no-delete policies, as a client of the OCI distribution spec sees them.

Every test runs on the filesystem and on S3. On S3 a blob GET is a 307 to the
bucket, which pulling clients follow (fetch_blob); the tests of how the registry
itself answers odd Range headers read from a replica with redirects disabled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

import requests

from .client import RegistryClient, assert_error, blob_file, digest_of, fetch_blob, registry_answer, unique_repo
from .servers import RegistryServer
from .store_view import blob_path, layer_link_path

BLOB_SIZE = 1000


def get_or_head(client: RegistryClient, method: str, repo: str, digest: str) -> requests.Response:
    """What a client ends up with: GET follows a redirect to the storage, HEAD is the registry's answer."""
    if method == "GET":
        return fetch_blob(client, repo, digest)
    return client.request(method, f"/v2/{repo}/blobs/{digest}")


@pytest.fixture
def serving_client(registry: RegistryServer, client: RegistryClient, request: pytest.FixtureRequest) -> RegistryClient:
    """A client of a registry that serves blob bytes itself: on S3, a replica on the same bucket
    with storage.redirect.disable (with redirects, the storage answers Range headers, not us)."""
    if not registry.redirects:
        return client
    return RegistryClient(request.getfixturevalue("s3_streaming_registry").url)


@pytest.fixture
def pushed(client: RegistryClient) -> tuple[str, bytes, str]:
    """A fresh repository holding one random blob of BLOB_SIZE bytes."""
    repo = unique_repo("blobs")
    data = os.urandom(BLOB_SIZE)
    return repo, data, client.push_blob(repo, data)


def test_get_blob_returns_bytes_and_headers(client: RegistryClient, pushed: tuple[str, bytes, str]) -> None:
    """Clients verify the body against Docker-Content-Digest and cache on the ETag."""
    repo, data, digest = pushed
    r = fetch_blob(client, repo, digest)
    assert r.status_code == 200
    assert r.content == data
    assert digest_of(r.content) == digest
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Accept-Ranges"] == "bytes"
    answer = registry_answer(r)
    assert answer.headers["Docker-Content-Digest"] == digest
    assert answer.headers["ETag"] == f'"{digest}"'
    if answer is r:  # served by the registry, not by the storage it redirected to
        assert r.headers["Content-Type"] == "application/octet-stream"


def test_head_blob_has_size_and_digest_without_body(client: RegistryClient, pushed: tuple[str, bytes, str]) -> None:
    """HEAD is how clients skip re-uploading: it must give the size, not the bytes."""
    repo, data, digest = pushed
    r = client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["ETag"] == f'"{digest}"'


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_unknown_blob_is_404_blob_unknown(client: RegistryClient, pushed: tuple[str, bytes, str], method: str) -> None:
    repo, data, _ = pushed
    never_pushed = digest_of(data + b"!")
    assert_error(client.request(method, f"/v2/{repo}/blobs/{never_pushed}"), 404, "BLOB_UNKNOWN")
    assert_error(client.request(method, f"/v2/{unique_repo('nowhere')}/blobs/{never_pushed}"), 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_blob_of_another_repository_is_not_readable_until_mounted(
    client: RegistryClient, pushed: tuple[str, bytes, str], method: str
) -> None:
    """Knowing a digest must not grant access to another repository's blob."""
    repo, data, digest = pushed
    other = unique_repo("blobs")
    client.push_blob(other, os.urandom(10))  # the other repository exists, just without this blob
    assert_error(client.request(method, f"/v2/{other}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    r = client.request("POST", f"/v2/{other}/blobs/uploads/", params={"mount": digest, "from": repo})
    assert r.status_code == 201
    r = get_or_head(client, method, other, digest)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(data))


@pytest.mark.parametrize(
    "header, start, stop",
    [
        ("bytes=0-9", 0, 10),
        ("bytes=100-199", 100, 200),
        ("bytes=999-999", 999, 1000),
        ("bytes=-5", 995, 1000),  # suffix: the last 5 bytes
        ("bytes=-5000", 0, 1000),  # suffix longer than the blob: all of it
        ("bytes=990-", 990, 1000),  # open: to the end
        ("bytes=0-", 0, 1000),
        ("bytes=900-5000", 900, 1000),  # end past the blob is clipped
    ],
)
def test_single_range_is_206_with_content_range(
    client: RegistryClient, pushed: tuple[str, bytes, str], header: str, start: int, stop: int
) -> None:
    """Resumed pulls ask for a byte range (RFC 9110 section 14); through a redirect the storage honours it."""
    repo, data, digest = pushed
    r = fetch_blob(client, repo, digest, headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.content == data[start:stop]
    assert r.headers["Content-Length"] == str(stop - start)
    assert r.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(data)}"
    assert registry_answer(r).headers["Docker-Content-Digest"] == digest


def test_head_with_range_reports_the_range_length(client: RegistryClient, pushed: tuple[str, bytes, str]) -> None:
    repo, data, digest = pushed
    r = client.request("HEAD", f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == b""
    assert r.headers["Content-Length"] == "10"
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416_with_size(
    serving_client: RegistryClient, pushed: tuple[str, bytes, str], header: str
) -> None:
    repo, data, digest = pushed
    r = serving_client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert_error(r, 416, "RANGE_INVALID")
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=abc"])
def test_unreadable_or_multiple_ranges_serve_the_whole_blob(
    serving_client: RegistryClient, pushed: tuple[str, bytes, str], header: str
) -> None:
    """RFC 9110 lets a server ignore a Range it does not support: the client still gets correct bytes."""
    repo, data, digest = pushed
    r = serving_client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert r.status_code == 200
    assert r.content == data
    assert "Content-Range" not in r.headers


def test_if_none_match_with_the_etag_is_304(client: RegistryClient, pushed: tuple[str, bytes, str]) -> None:
    repo, data, digest = pushed
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"If-None-Match": f'"{digest}"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["ETag"] == f'"{digest}"'
    r = fetch_blob(client, repo, digest, headers={"If-None-Match": f'"{digest_of(b"other")}"'})
    assert r.status_code == 200
    assert r.content == data


def test_delete_blob_unlinks_it_from_that_repository_only(
    client: RegistryClient, registry: RegistryServer, pushed: tuple[str, bytes, str]
) -> None:
    """DELETE removes the repository's link; the shared data stays for other repositories (and GC)."""
    repo, data, digest = pushed
    other = unique_repo("blobs")
    client.push_blob(other, data)
    r = client.request("DELETE", f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 202
    assert r.headers["Docker-Content-Digest"] == digest
    assert_error(client.request("GET", f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(client.request("HEAD", f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(client.request("DELETE", f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert fetch_blob(client, other, digest).content == data
    assert not registry.store.exists(layer_link_path(repo, digest))
    assert registry.store.exists(layer_link_path(other, digest))
    assert registry.store.read(blob_path(digest)) == data


def test_delete_unknown_blob_is_404(client: RegistryClient, pushed: tuple[str, bytes, str]) -> None:
    repo, data, _ = pushed
    assert_error(client.request("DELETE", f"/v2/{repo}/blobs/{digest_of(data * 2)}"), 404, "BLOB_UNKNOWN")


INVALID_DIGESTS = [
    "sha256:" + "z" * 64,  # not hex
    "sha256:" + "A" * 64,  # upper-case hex
    "sha256:" + "a" * 63,  # wrong length
    "sha256:" + "a" * 128,
    "sha512:" + "a" * 64,
    "md5:" + "a" * 32,  # unknown algorithm
    "sha256:",
    "notadigest",
]


@pytest.mark.parametrize("digest", INVALID_DIGESTS)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_invalid_digest_in_blob_url_is_400(client: RegistryClient, method: str, digest: str) -> None:
    assert_error(client.request(method, f"/v2/{unique_repo()}/blobs/{digest}"), 400, "DIGEST_INVALID")


def test_sha512_blob(client: RegistryClient, registry: RegistryServer) -> None:
    """sha512 is the spec's other registered algorithm: stored and served under its own digest."""
    repo = unique_repo("blobs")
    data = os.urandom(3000)
    digest = digest_of(data, "sha512")
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    r = fetch_blob(client, repo, digest)
    assert r.status_code == 200
    assert r.content == data
    assert registry_answer(r).headers["Docker-Content-Digest"] == digest
    r = fetch_blob(client, repo, digest, headers={"Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == data[-100:]
    assert registry.store.read(blob_path(digest)) == data
    # the same bytes were never pushed under their sha256 digest
    assert_error(client.request("GET", f"/v2/{repo}/blobs/{digest_of(data)}"), 404, "BLOB_UNKNOWN")


def test_empty_blob(client: RegistryClient) -> None:
    """A zero-byte blob (an empty layer) is valid and served with Content-Length: 0."""
    repo = unique_repo("blobs")
    digest = client.push_blob(repo, b"")
    r = fetch_blob(client, repo, digest)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Length"] == "0"
    assert registry_answer(r).headers["Docker-Content-Digest"] == digest


def test_no_delete_refuses_blob_deletes(make_registry: Callable[..., RegistryServer], backend_name: str) -> None:
    """With deletes disabled a DELETE is 405 UNSUPPORTED and the blob stays; cancelling an upload is no delete."""
    server = make_registry(args=["--no-delete"], backend=backend_name)
    client = RegistryClient(server.url)
    repo = unique_repo("nodelete")
    data = os.urandom(100)
    digest = client.push_blob(repo, data)
    assert_error(client.request("DELETE", f"/v2/{repo}/blobs/{digest}"), 405, "UNSUPPORTED")
    assert fetch_blob(client, repo, digest).content == data
    location = client.start_upload(repo)
    assert client.request("DELETE", location).status_code == 204
    assert_error(client.request("GET", location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_read_only_refuses_every_write_and_serves_reads(
    tmp_path: Path, make_registry: Callable[..., RegistryServer], backend_name: str
) -> None:
    """Read-only (maintenance) mode: pulls keep working, every blob or upload write is 405 UNSUPPORTED."""
    root = tmp_path / "shared"
    writable = make_registry(root=root, backend=backend_name)
    client = RegistryClient(writable.url)
    repo = unique_repo("readonly")
    data = os.urandom(500)
    digest = client.push_blob(repo, data)
    location = client.start_upload(repo)
    assert client.request("PATCH", location, data=b"partial").status_code == 202
    upload_path = location  # relative, so valid on the next server too
    writable.stop()

    server = make_registry(root=root, config=writable.config, args=["--read-only"])  # the same store
    client = RegistryClient(server.url)
    r = fetch_blob(client, repo, digest)
    assert r.status_code == 200 and r.content == data
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 200
    assert client.request("GET", upload_path).status_code == 204

    new = os.urandom(50)
    refused = [
        client.request("DELETE", f"/v2/{repo}/blobs/{digest}"),
        client.request("POST", f"/v2/{repo}/blobs/uploads/"),
        client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(new)}, data=new),
        client.request("POST", f"/v2/{unique_repo()}/blobs/uploads/", params={"mount": digest, "from": repo}),
        client.request("PATCH", upload_path, data=b"more"),
        client.request("PUT", upload_path, params={"digest": digest_of(b"partial")}),
        client.request("DELETE", upload_path),
    ]
    for r in refused:
        assert_error(r, 405, "UNSUPPORTED")
    assert fetch_blob(client, repo, digest).content == data
    r = client.request("GET", upload_path)
    assert r.status_code == 204
    assert r.headers["Range"] == f"0-{len(b'partial') - 1}"
    assert not server.store.exists(blob_path(digest_of(new)))
    assert server.store.read(blob_path(digest)) == data


def test_data_gone_under_a_link_is_404_not_a_dropped_connection(make_registry: Callable[..., RegistryServer]) -> None:
    """What `registry verify` calls missing: the link remains, the data went after the size was cached."""
    server = make_registry()
    client = RegistryClient(server.url)
    repo = unique_repo("blobs")
    data = b"soon gone" * 1000
    digest = client.push_blob(repo, data)
    assert client.request("GET", f"/v2/{repo}/blobs/{digest}").content == data  # size now remembered
    blob_file(server.root, digest).unlink()
    assert_error(client.request("GET", f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(client.request("HEAD", f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
