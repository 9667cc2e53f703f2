"""/v2/<name>/blobs/uploads/ over a real socket: every way the spec lets a client push a
blob (monolithic, POST-then-PUT, streamed, chunked, mounted), their errors, and what
they leave in the store (one copy of each blob, links per repository, no stray uploads).
Every test runs on the filesystem and on S3; the store is read with tests/store_view.py."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest
import requests

from .client import RegistryClient, assert_error, digest_of, fetch_blob, unique_repo
from .servers import RegistryServer
from .store_view import BLOBS, StoreView, blob_path, layer_link_path, uploads_path, writes_in_progress

UUID_SHAPE = "01234567-89ab-cdef-0123-456789abcdef"


def stored_copies(store: StoreView, digest: str) -> list[str]:
    """Every file in the blob store that holds this digest's data (dedup means at most one)."""
    hex_ = digest.split(":")[1]
    return [path for path in store.keys(BLOBS) if hex_ in path]


def leftover_uploads(store: StoreView, repo: str) -> list[str]:
    """The upload sessions (directories under _uploads) the repository still has."""
    prefix = uploads_path(repo) + "/"
    return sorted({path[len(prefix):].split("/")[0] for path in store.keys(prefix)})


def upload_range(size: int) -> str:
    """The Range an upload of `size` bytes reports (Distribution's form: 0-0 when empty)."""
    return f"0-{max(size - 1, 0)}"


def assert_upload_headers(response: requests.Response, repo: str, size: int) -> str:
    """The Location, Range and Docker-Upload-UUID every upload response carries; returns the Location."""
    location = response.headers["Location"]
    uuid = response.headers["Docker-Upload-UUID"]
    assert location == f"/v2/{repo}/blobs/uploads/{uuid}"
    assert len(uuid) == len(UUID_SHAPE)
    assert response.headers["Range"] == upload_range(size)
    return location


def assert_created(response: requests.Response, repo: str, digest: str) -> None:
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/v2/{repo}/blobs/{digest}"
    assert response.headers["Docker-Content-Digest"] == digest


def assert_served(client: RegistryClient, repo: str, data: bytes, digest: str | None = None) -> None:
    digest = digest or digest_of(data)
    r = fetch_blob(client, repo, digest)
    assert r.status_code == 200, r.text
    assert r.content == data


# --- starting an upload ---------------------------------------------------------------------------


def test_post_starts_an_upload_session(client: RegistryClient) -> None:
    repo = unique_repo("uploads")
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    assert r.status_code == 202
    location = assert_upload_headers(r, repo, 0)
    r = client.request("GET", location)
    assert r.status_code == 204
    assert r.content == b""
    assert assert_upload_headers(r, repo, 0) == location


def test_each_post_is_a_new_session(client: RegistryClient) -> None:
    repo = unique_repo("uploads")
    assert client.start_upload(repo) != client.start_upload(repo)


def test_monolithic_post(client: RegistryClient, registry: RegistryServer) -> None:
    """A single POST ?digest= carries the whole blob and leaves no upload session behind."""
    repo = unique_repo("uploads")
    data = os.urandom(4096)
    digest = digest_of(data)
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert_created(r, repo, digest)
    assert fetch_blob(client, repo, digest).content == data
    assert leftover_uploads(registry.store, repo) == []


def test_monolithic_post_with_wrong_digest_stores_nothing(client: RegistryClient, registry: RegistryServer) -> None:
    repo = unique_repo("uploads")
    data = os.urandom(1024)
    claimed = digest_of(data + b"x")
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": claimed}, data=data)
    assert_error(r, 400, "DIGEST_INVALID")
    for digest in (claimed, digest_of(data)):
        assert_error(client.request("GET", f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
        assert stored_copies(registry.store, digest) == []
    assert leftover_uploads(registry.store, repo) == []


@pytest.mark.parametrize(
    "param, value",
    [
        ("digest", "md5:" + "a" * 32),  # unknown algorithm
        ("digest", "sha256:" + "g" * 64),  # not hex
        ("digest", "sha256:" + "a" * 63),  # wrong length
        ("digest", "sha256:"),
        ("digest", ""),  # present but empty: a monolithic upload without its digest
        ("digest-algorithm", "md5"),
        ("digest-algorithm", "sha1"),
    ],
)
def test_post_with_invalid_digest_or_algorithm_is_400(
    client: RegistryClient, registry: RegistryServer, param: str, value: str
) -> None:
    repo = unique_repo("uploads")
    data = os.urandom(64)
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/", params={param: value}, data=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_error(client.request("GET", f"/v2/{repo}/blobs/{digest_of(data)}"), 404, "BLOB_UNKNOWN")
    assert leftover_uploads(registry.store, repo) == []


def test_monolithic_post_cut_short_leaves_no_upload(client: RegistryClient, registry: RegistryServer) -> None:
    """A client that disconnects mid-body never learns the session id, so the session must not linger."""
    repo = unique_repo("uploads")
    data = os.urandom(12 << 20)
    sent = 11 << 20  # past the S3 backend's part size (10 MiB): there too, something has been stored
    head = (
        f"POST /v2/{repo}/blobs/uploads/?digest={digest_of(data)} HTTP/1.1\r\n"
        f"Host: {registry.host}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", registry.port), timeout=10) as s:
        s.sendall(head + data[:sent])
        deadline = time.monotonic() + 10
        while not writes_in_progress(registry.store):  # the server has started storing the upload
            assert time.monotonic() < deadline, "the server never started the upload"
            time.sleep(0.02)
    deadline = time.monotonic() + 10
    while writes_in_progress(registry.store) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writes_in_progress(registry.store) == []
    assert leftover_uploads(registry.store, repo) == []
    assert_error(client.request("GET", f"/v2/{repo}/blobs/{digest_of(data)}"), 404, "BLOB_UNKNOWN")


# --- cross-repository mount ----------------------------------------------------------------------


def test_mount_from_another_repository(client: RegistryClient, registry: RegistryServer) -> None:
    source, target = unique_repo("mount"), unique_repo("mount")
    data = os.urandom(2048)
    digest = client.push_blob(source, data)
    r = client.request("POST", f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert_created(r, target, digest)
    assert_served(client, target, data)
    assert registry.store.read(layer_link_path(target, digest)) == digest.encode()
    assert len(stored_copies(registry.store, digest)) == 1
    assert leftover_uploads(registry.store, target) == []


def test_mount_without_from_finds_a_stored_blob(client: RegistryClient) -> None:
    """The spec lets a registry treat `from` as optional and mount any blob it stores."""
    source, target = unique_repo("mount"), unique_repo("mount")
    data = os.urandom(2048)
    digest = client.push_blob(source, data)
    r = client.request("POST", f"/v2/{target}/blobs/uploads/", params={"mount": digest})
    assert_created(r, target, digest)
    assert_served(client, target, data)


@pytest.mark.parametrize("with_from", [True, False])
def test_mount_of_an_unknown_blob_starts_an_upload(client: RegistryClient, with_from: bool) -> None:
    """When the blob cannot be mounted the client gets an ordinary session (202) and uploads it."""
    source, target = unique_repo("mount"), unique_repo("mount")
    client.push_blob(source, os.urandom(10))
    data = os.urandom(2048)
    digest = digest_of(data)
    params = {"mount": digest, **({"from": source} if with_from else {})}
    r = client.request("POST", f"/v2/{target}/blobs/uploads/", params=params)
    assert r.status_code == 202, r.text
    location = assert_upload_headers(r, target, 0)
    assert_error(client.request("GET", f"/v2/{target}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_created(client.request("PUT", location, params={"digest": digest}, data=data), target, digest)
    assert_served(client, target, data)


def test_mount_from_a_repository_without_the_blob_does_not_leak_it(client: RegistryClient) -> None:
    """The blob is stored (for a third repository), but `from` names one that cannot read it: no mount."""
    owner, source, target = unique_repo("mount"), unique_repo("mount"), unique_repo("mount")
    digest = client.push_blob(owner, os.urandom(2048))
    client.push_blob(source, os.urandom(10))
    r = client.request("POST", f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 202, r.text
    assert_upload_headers(r, target, 0)
    assert_error(client.request("GET", f"/v2/{target}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_mount_with_invalid_digest_or_source_is_400(client: RegistryClient) -> None:
    target = unique_repo("mount")
    r = client.request("POST", f"/v2/{target}/blobs/uploads/", params={"mount": "md5:" + "a" * 32, "from": "x"})
    assert_error(r, 400, "DIGEST_INVALID")
    r = client.request("POST", f"/v2/{target}/blobs/uploads/", params={"mount": digest_of(b"x"), "from": "Bad..Name"})
    assert_error(r, 400, "NAME_INVALID")


# --- PATCH: streamed and chunked -----------------------------------------------------------------


def test_streamed_patches_then_put(client: RegistryClient, registry: RegistryServer) -> None:
    """Streamed PATCHes (no Content-Range, chunked transfer encoding) append in order."""
    repo = unique_repo("uploads")
    parts = [os.urandom(3000), os.urandom(5000)]
    location = client.start_upload(repo)
    size = 0
    for part in parts:
        r = client.request("PATCH", location, data=iter([part[:1000], part[1000:]]))  # a generator: chunked
        assert r.status_code == 202, r.text
        size += len(part)
        location = assert_upload_headers(r, repo, size)
    data = b"".join(parts)
    r = client.request("PUT", location, params={"digest": digest_of(data)})
    assert_created(r, repo, digest_of(data))
    assert_served(client, repo, data)
    assert leftover_uploads(registry.store, repo) == []


def test_chunked_patches_with_content_range_then_put_with_last_chunk(client: RegistryClient) -> None:
    repo = unique_repo("uploads")
    data = os.urandom(10_000)
    cuts = [0, 4000, 7000, 10_000]
    location = client.start_upload(repo)
    for start, end in zip(cuts[:-2], cuts[1:-1]):
        r = client.request("PATCH", location, data=data[start:end],
                           headers={"Content-Range": f"{start}-{end - 1}", "Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        location = assert_upload_headers(r, repo, end)
    start = cuts[-2]
    r = client.request("PUT", location, params={"digest": digest_of(data)}, data=data[start:],
                       headers={"Content-Range": f"{start}-{len(data) - 1}"})
    assert_created(r, repo, digest_of(data))
    assert_served(client, repo, data)


def test_put_with_whole_blob_after_post(client: RegistryClient) -> None:
    """POST then PUT: the spec's basic monolithic upload."""
    repo = unique_repo("uploads")
    data = os.urandom(5000)
    location = client.start_upload(repo)
    r = client.request("PUT", location, params={"digest": digest_of(data)}, data=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert_created(r, repo, digest_of(data))
    assert_served(client, repo, data)


def test_chunk_out_of_order_is_416_with_current_range(client: RegistryClient) -> None:
    """The 416 tells the client where to resume; the upload itself is untouched."""
    repo = unique_repo("uploads")
    data = os.urandom(3000)
    location = client.start_upload(repo)
    r = client.request("PATCH", location, data=data[:1000], headers={"Content-Range": "0-999"})
    assert r.status_code == 202
    for start in (0, 500, 1001, 2000):  # a repeat, an overlap, a gap
        end = start + 999
        r = client.request("PATCH", location, data=os.urandom(1000), headers={"Content-Range": f"{start}-{end}"})
        assert_error(r, 416, "RANGE_INVALID")
        assert_upload_headers(r, repo, 1000)
    r = client.request("PUT", location, params={"digest": digest_of(data)}, data=data[2000:],
                       headers={"Content-Range": "2000-2999"})
    assert_error(r, 416, "RANGE_INVALID")
    assert_upload_headers(r, repo, 1000)
    r = client.request("GET", location)
    assert r.status_code == 204
    assert_upload_headers(r, repo, 1000)
    r = client.request("PATCH", location, data=data[1000:2000], headers={"Content-Range": "1000-1999"})
    assert r.status_code == 202
    r = client.request("PUT", location, params={"digest": digest_of(data)}, data=data[2000:],
                       headers={"Content-Range": "2000-2999"})
    assert_created(r, repo, digest_of(data))
    assert_served(client, repo, data)


def test_content_range_and_length_mismatch_is_400_size_invalid(client: RegistryClient) -> None:
    repo = unique_repo("uploads")
    location = client.start_upload(repo)
    r = client.request("PATCH", location, data=os.urandom(100), headers={"Content-Range": "0-49"})
    assert_error(r, 400, "SIZE_INVALID")
    r = client.request("GET", location)
    assert r.status_code == 204
    assert_upload_headers(r, repo, 0)


@pytest.mark.parametrize("value", ["abc", "0-", "-9", "9-0", "0-x", "bytes */10", "0 - 9"])
def test_malformed_content_range_is_416(client: RegistryClient, value: str) -> None:
    repo = unique_repo("uploads")
    location = client.start_upload(repo)
    r = client.request("PATCH", location, data=os.urandom(10), headers={"Content-Range": value})
    assert_error(r, 416, "RANGE_INVALID")
    assert client.request("GET", location).headers["Range"] == upload_range(0)


# --- PUT: finishing and its errors ---------------------------------------------------------------


def test_put_after_patch_without_body(client: RegistryClient, registry: RegistryServer) -> None:
    """The last chunk may come in a PATCH; the PUT then only names the digest. The session is then gone."""
    repo = unique_repo("uploads")
    data = os.urandom(4000)
    location = client.start_upload(repo)
    assert client.request("PATCH", location, data=data).status_code == 202
    r = client.request("PUT", location, params={"digest": digest_of(data)}, headers={"Content-Length": "0"})
    assert_created(r, repo, digest_of(data))
    assert_served(client, repo, data)
    assert_error(client.request("GET", location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.request("PATCH", location, data=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert leftover_uploads(registry.store, repo) == []


def test_digest_mismatch_discards_the_upload(client: RegistryClient, registry: RegistryServer) -> None:
    repo = unique_repo("uploads")
    data = os.urandom(4000)
    claimed = digest_of(data[:-1])
    location = client.start_upload(repo)
    assert client.request("PATCH", location, data=data[:2000]).status_code == 202
    r = client.request("PUT", location, params={"digest": claimed}, data=data[2000:])
    assert_error(r, 400, "DIGEST_INVALID")
    assert_error(client.request("GET", location), 404, "BLOB_UPLOAD_UNKNOWN")
    for digest in (claimed, digest_of(data)):
        assert_error(client.request("GET", f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
        assert stored_copies(registry.store, digest) == []
    assert leftover_uploads(registry.store, repo) == []


@pytest.mark.parametrize("params", [{}, {"digest": ""}])
def test_put_without_digest_is_400_and_keeps_the_upload(client: RegistryClient, params: dict[str, str]) -> None:
    repo = unique_repo("uploads")
    location = client.start_upload(repo)
    assert client.request("PATCH", location, data=b"0123456789").status_code == 202
    assert_error(client.request("PUT", location, params=params), 400, "DIGEST_INVALID")
    r = client.request("GET", location)
    assert r.status_code == 204
    assert_upload_headers(r, repo, 10)
    assert_created(client.request("PUT", location, params={"digest": digest_of(b"0123456789")}), repo,
                   digest_of(b"0123456789"))


@pytest.mark.parametrize(
    "digest",
    ["sha256:" + "Z" * 64, "sha256:" + "0" * 65, "sha512:" + "0" * 64, "md5:" + "0" * 32, "sha256", ":" + "0" * 64],
)
def test_put_with_invalid_digest_is_400(client: RegistryClient, digest: str) -> None:
    repo = unique_repo("uploads")
    location = client.start_upload(repo)
    assert_error(client.request("PUT", location, params={"digest": digest}, data=b"abc"), 400, "DIGEST_INVALID")


def test_sha512_uploads(client: RegistryClient, registry: RegistryServer) -> None:
    """sha512 with the digest-algorithm hint, and without it (the server then re-hashes what it has)."""
    data = os.urandom(6000)
    digest = digest_of(data, "sha512")
    for params in ({"digest-algorithm": "sha512"}, {}):
        repo = unique_repo("uploads")
        r = client.request("POST", f"/v2/{repo}/blobs/uploads/", params=params)
        assert r.status_code == 202
        location = r.headers["Location"]
        assert client.request("PATCH", location, data=data[:4000]).status_code == 202
        r = client.request("PUT", location, params={"digest": digest}, data=data[4000:])
        assert_created(r, repo, digest)
        assert_served(client, repo, data, digest)
    assert registry.store.read(blob_path(digest)) == data
    assert len(stored_copies(registry.store, digest)) == 1


# --- status, cancel, unknown sessions ------------------------------------------------------------


def test_cancel_upload(client: RegistryClient, registry: RegistryServer) -> None:
    repo = unique_repo("uploads")
    location = client.start_upload(repo)
    assert client.request("PATCH", location, data=os.urandom(500)).status_code == 202
    r = client.request("DELETE", location, headers={"Content-Length": "0"})
    assert r.status_code == 204
    assert_error(client.request("GET", location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.request("DELETE", location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.request("PUT", location, params={"digest": digest_of(b"")}), 404, "BLOB_UPLOAD_UNKNOWN")
    assert leftover_uploads(registry.store, repo) == []


def assert_unknown_upload(client: RegistryClient, location: str) -> None:
    """Every method on the upload URL says the session is unknown."""
    for r in (
        client.request("GET", location),
        client.request("PATCH", location, data=b"x"),
        client.request("PUT", location, params={"digest": digest_of(b"x")}, data=b"x"),
        client.request("DELETE", location),
    ):
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("upload_id", ["not-a-uuid", "0" * 36, UUID_SHAPE.upper(), UUID_SHAPE + "0", "..."])
def test_malformed_upload_id_is_404(client: RegistryClient, upload_id: str) -> None:
    location = f"/v2/{unique_repo('uploads')}/blobs/uploads/{upload_id}"
    assert_unknown_upload(client, location)


def test_unknown_upload_id_is_404(client: RegistryClient) -> None:
    repo = unique_repo("uploads")
    client.start_upload(repo)
    location = f"/v2/{repo}/blobs/uploads/{UUID_SHAPE}"
    assert_unknown_upload(client, location)


def test_upload_belongs_to_its_repository(client: RegistryClient) -> None:
    """A session id is only valid under the repository that started it."""
    repo, other = unique_repo("uploads"), unique_repo("uploads")
    location = client.start_upload(repo)
    foreign = location.replace(f"/v2/{repo}/", f"/v2/{other}/")
    assert_error(client.request("GET", foreign), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.request("PATCH", foreign, data=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.request("PUT", foreign, params={"digest": digest_of(b"")}), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.request("DELETE", foreign), 404, "BLOB_UPLOAD_UNKNOWN")
    assert client.request("GET", location).status_code == 204


# --- large streamed upload -----------------------------------------------------------------------

LARGE_CHUNK = 1 << 20
LARGE_CHUNKS = 20


def large_body(seed: int) -> Iterator[bytes]:
    """20 MiB of pseudo-random bytes, produced 1 MiB at a time (never held whole)."""
    rng = random.Random(seed)
    for _ in range(LARGE_CHUNKS):
        yield rng.randbytes(LARGE_CHUNK)


def test_large_streamed_patch(client: RegistryClient, registry: RegistryServer) -> None:
    seed = random.randrange(1 << 30)
    hasher = hashlib.sha256()
    for chunk in large_body(seed):
        hasher.update(chunk)
    digest = f"sha256:{hasher.hexdigest()}"
    size = LARGE_CHUNK * LARGE_CHUNKS
    repo = unique_repo("large")
    location = client.start_upload(repo)
    r = client.request("PATCH", location, data=large_body(seed))
    assert r.status_code == 202, r.text
    location = assert_upload_headers(r, repo, size)
    assert_created(client.request("PUT", location, params={"digest": digest}), repo, digest)
    r = client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    assert r.headers["Content-Length"] == str(size)
    pulled = hashlib.sha256()
    received = 0
    with fetch_blob(client, repo, digest, stream=True) as r:
        assert r.status_code == 200
        for chunk in r.iter_content(LARGE_CHUNK):
            pulled.update(chunk)
            received += len(chunk)
    assert received == size
    assert f"sha256:{pulled.hexdigest()}" == digest
    assert registry.store.size(blob_path(digest)) == size


# --- deduplication ------------------------------------------------------------------------------


def test_blob_pushed_to_many_repositories_is_stored_once(client: RegistryClient, registry: RegistryServer) -> None:
    """Monolithic, chunked and mounted pushes of one blob: one copy, one link per repository."""
    data = os.urandom(50_000)
    digest = digest_of(data)
    repos = [unique_repo("dedup") for _ in range(4)]
    client.push_blob(repos[0], data)
    location = client.start_upload(repos[1])
    client.request("PATCH", location, data=data[:20_000], headers={"Content-Range": "0-19999"})
    assert_created(client.request("PUT", location, params={"digest": digest}, data=data[20_000:]), repos[1], digest)
    assert_created(client.request("POST", f"/v2/{repos[2]}/blobs/uploads/", params={"mount": digest}), repos[2], digest)
    client.push_blob(repos[3], data)
    client.push_blob(repos[3], data)  # again, into the same repository
    assert stored_copies(registry.store, digest) == [blob_path(digest)]
    assert registry.store.read(blob_path(digest)) == data
    for repo in repos:
        assert registry.store.read(layer_link_path(repo, digest)) == digest.encode()
        assert leftover_uploads(registry.store, repo) == []
        assert_served(client, repo, data)


def test_concurrent_pushes_of_one_blob(registry: RegistryServer) -> None:
    """16 clients push the same blob at once, monolithic and chunked, into shared and own repositories."""
    data = os.urandom(1 << 20)
    digest = digest_of(data)
    repos = [unique_repo("concurrent") for _ in range(4)]
    workers = 16
    barrier = threading.Barrier(workers)

    def push(index: int) -> list[int]:
        client = RegistryClient(registry.url)
        repo = repos[index % len(repos)]
        barrier.wait()
        if index % 2 == 0:
            r = client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data)
            return [r.status_code]
        statuses = []
        r = client.request("POST", f"/v2/{repo}/blobs/uploads/")
        statuses.append(r.status_code)
        location = r.headers["Location"]
        third = len(data) // 3
        for start, end in ((0, third), (third, 2 * third)):
            r = client.request("PATCH", location, data=data[start:end], headers={"Content-Range": f"{start}-{end - 1}"})
            statuses.append(r.status_code)
            location = r.headers["Location"]
        r = client.request("PUT", location, params={"digest": digest}, data=data[2 * third:],
                           headers={"Content-Range": f"{2 * third}-{len(data) - 1}"})
        assert r.headers.get("Docker-Content-Digest") == digest, r.text
        return statuses + [r.status_code]

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(push, range(workers)))
    assert results == [[201] if i % 2 == 0 else [202, 202, 202, 201] for i in range(workers)]
    assert stored_copies(registry.store, digest) == [blob_path(digest)]
    assert registry.store.read(blob_path(digest)) == data
    client = RegistryClient(registry.url)
    for repo in repos:
        assert registry.store.read(layer_link_path(repo, digest)) == digest.encode()
        assert leftover_uploads(registry.store, repo) == []
        assert_served(client, repo, data)


@pytest.mark.parametrize("source", ["", "Bad..Name"])
def test_invalid_from_without_mount_is_400(client: RegistryClient, registry: RegistryServer, source: str) -> None:
    """Found by schemathesis: a malformed `from` was ignored when `mount` was absent, and a session started."""
    target = unique_repo("mount")
    r = client.request("POST", f"/v2/{target}/blobs/uploads/", params={"from": source})
    assert_error(r, 400, "NAME_INVALID")
    assert leftover_uploads(registry.store, target) == []
