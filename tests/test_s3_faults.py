"""S3 failing the ways it does in production, through the fault-injecting proxy (tests/s3_proxy.py).

A transient fault (500 InternalError, 503 SlowDown, a connection reset, a stall
past the timeout, a response cut off mid-body) is retried by the registry and
the client never notices. A fault that outlasts the retries reaches the client
as a 503 UNAVAILABLE error envelope, leaves nothing half-written in the bucket
(every object in the blob store hashes to its key), and an upload it interrupts
can be resumed. No GET ever answers 200 with bytes that do not match the digest.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator

import pytest
import requests

from .client import OCI_MANIFEST, RegistryClient, assert_error, digest_of, unique_repo
from .s3 import new_bucket, s3_client, s3_config
from .s3_proxy import FaultKind, S3FaultProxy, pending_multipart_uploads, verify_blob_objects
from .servers import MotoServer, RegistryServer

MiB = 1 << 20
ROOT = "registry"
#: tries per S3 call (storage.s3.max_attempts): this many failures in a row reach the client
ATTEMPTS = 3
#: storage.s3.timeout: a stalled call is abandoned and retried after this many seconds
TIMEOUT = 2.0


class Setup:
    """One registry on a bucket of its own, reaching S3 through the proxy."""

    def __init__(self, moto: MotoServer, proxy: S3FaultProxy, registry: RegistryServer, bucket: str) -> None:
        self.moto, self.proxy, self.registry, self.bucket = moto, proxy, registry, bucket
        self.client = RegistryClient(registry.url)
        self.s3 = s3_client(moto)

    def audit(self) -> dict[str, bytes]:
        """The blob store holds only whole, correct blobs, and no multipart upload is left open."""
        assert pending_multipart_uploads(self.s3, self.bucket) == []
        return verify_blob_objects(self.s3, self.bucket, ROOT)


@pytest.fixture(scope="module")
def setup(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("s3-faults")
    bucket = new_bucket(moto)
    with S3FaultProxy(moto.url, stall_seconds=TIMEOUT + 1.5) as proxy:
        config = {"storage": {
            "s3": s3_config(moto, bucket, regionendpoint=proxy.url, rootdirectory=ROOT, chunksize=5 * MiB,
                            max_attempts=ATTEMPTS, timeout=TIMEOUT),
            "redirect": {"disable": True},  # the registry reads blobs from S3 itself, through the faults
            "maintenance": {"uploadpurging": {"enabled": False}},  # no background calls to meet the faults
        }}
        with RegistryServer(base / "data", base / "server.log", config) as registry:
            yield Setup(moto, proxy, registry, bucket)


@pytest.fixture
def s3(setup: Setup) -> Iterator[Setup]:
    """The module's registry, with no fault pending and the counts from zero."""
    setup.proxy.clear_faults()
    setup.proxy.reset_counts()
    yield setup
    setup.proxy.clear_faults()


def get_blob(client: RegistryClient, repo: str, digest: str) -> requests.Response:
    """A blob GET; a 200 must carry exactly the digest's bytes, whatever S3 did meanwhile."""
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    if r.status_code == 200:
        assert r.headers["Docker-Content-Digest"] == digest
        assert digest_of(r.content) == digest, "a 200 with bytes that do not match the digest"
    return r


def push_and_pull(s3: Setup, before_pull: Callable[[], None] | None = None) -> None:
    """An image with a 6 MiB layer pushed in chunks (composed by multipart copy, its tail re-uploaded),
    then pulled back byte for byte. Its config goes in one PUT, as a single object."""
    repo = unique_repo("faults")
    layers = [os.urandom(6 * MiB + 4321), os.urandom(5000)]
    digest, body = s3.client.push_image(repo, "v1", layers, chunk=6 * MiB)
    if before_pull is not None:
        before_pull()
    r = s3.client.request("GET", f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == body and r.headers["Docker-Content-Digest"] == digest
    for layer in layers:
        r = get_blob(s3.client, repo, digest_of(layer))
        assert r.status_code == 200, r.text
    r = s3.client.request("GET", f"/v2/{repo}/tags/list")
    assert r.status_code == 200 and r.json()["tags"] == ["v1"]


# -- transient faults: retried, invisible to the client ---------------------------------------------

TRANSIENT: list[tuple[str, FaultKind]] = [
    (operation, kind)
    for operation in ("PutObject", "UploadPartCopy", "ListObjectsV2", "GetObject")
    for kind in ("internal-error", "slow-down", "reset", "stall")
] + [
    ("HeadObject", "reset"),
    ("CreateMultipartUpload", "slow-down"),
    ("UploadPart", "internal-error"),
    ("CompleteMultipartUpload", "slow-down"),
    ("GetObject", "truncate"),
]


@pytest.mark.parametrize("operation, kind", TRANSIENT, ids=[f"{o}-{k}" for o, k in TRANSIENT])
def test_transient_faults_are_retried(s3: Setup, operation: str, kind: FaultKind) -> None:
    # a stall costs a timeout each: one is enough; other faults come ATTEMPTS - 1 times in a row
    times = 1 if kind == "stall" else ATTEMPTS - 1
    if operation == "GetObject":  # aimed at the blob reads of the pull
        def inject() -> None:
            s3.proxy.inject(operation, kind, times, key_contains="/blobs/")
        push_and_pull(s3, before_pull=inject)
    else:
        s3.proxy.inject(operation, kind, times)
        push_and_pull(s3)
    assert s3.proxy.faults_left() == 0, "the faults were not all met: the test did not exercise them"
    assert s3.proxy.faults_delivered()[operation] == times
    s3.audit()


# -- persistent faults: a clear 503, nothing half-written, resumable --------------------------------

#: (operation, fault, times) that fail a PUT carrying a whole blob, streamed into a multipart upload at the
#: blob's key: calls without a body are tried ATTEMPTS times; the streamed part is tried once, since its bytes
#: came from the client and are gone once sent (S3 refuses most calls it throttles before the body is sent,
#: `Expect: 100-continue`, and those are tried again; this proxy fails them after reading the body)
BLOB_PUT_FAULTS: list[tuple[str, FaultKind, int]] = [
    ("CreateMultipartUpload", "slow-down", ATTEMPTS),
    ("UploadPart", "reset", 1),
    ("UploadPart", "internal-error", 1),
    ("CompleteMultipartUpload", "slow-down", ATTEMPTS),
]


@pytest.mark.parametrize("operation, kind, times", BLOB_PUT_FAULTS, ids=[f"{o}-{k}" for o, k, _ in BLOB_PUT_FAULTS])
def test_a_persistent_fault_on_a_blob_put_is_a_503_and_stores_nothing(s3: Setup, operation: str, kind: FaultKind,
                                                                      times: int) -> None:
    """The upload is as it was (nothing stored, no multipart upload left open), and the PUT again works."""
    repo = unique_repo("faults")
    data = os.urandom(6 * MiB + 99)
    digest = digest_of(data)
    location = s3.client.start_upload(repo)
    s3.proxy.inject(operation, kind, times)
    r = s3.client.request("PUT", location, params={"digest": digest}, data=data)
    assert_error(r, 503, "UNAVAILABLE")
    assert s3.proxy.faults_left() == 0
    assert s3.proxy.faults_delivered()[operation] == times
    assert get_blob(s3.client, repo, digest).status_code == 404
    assert digest not in s3.audit()
    status = s3.client.request("GET", location)  # the failed request left the upload as it was
    assert status.status_code == 204 and status.headers["Range"] == "0-0"
    r = s3.client.request("PUT", location, params={"digest": digest}, data=data)
    assert r.status_code == 201, r.text
    assert get_blob(s3.client, repo, digest).status_code == 200
    assert s3.audit()[digest] == data


def test_a_full_bucket_is_a_507_and_stores_nothing(s3: Setup) -> None:
    """A store out of room (MinIO's XMinioStorageFull) is 507 with an UNAVAILABLE envelope, as on a full
    disk, not retried; the blob appears whole or not at all, and pushes go on once there is room."""
    repo = unique_repo("faults")
    data = os.urandom(6 * MiB + 7)
    digest = digest_of(data)
    location = s3.client.start_upload(repo)
    s3.proxy.inject("UploadPart", "storage-full", 1)  # the blob's bytes, streamed to S3 as they come
    r = s3.client.request("PUT", location, params={"digest": digest}, data=data)
    assert_error(r, 507, "UNAVAILABLE")
    assert s3.proxy.faults_left() == 0
    assert get_blob(s3.client, repo, digest).status_code == 404
    assert digest not in s3.audit()
    assert "storage full serving PUT" in s3.registry.log_path.read_text()
    r = s3.client.request("PUT", location, params={"digest": digest}, data=data)
    assert r.status_code == 201, r.text
    assert s3.audit()[digest] == data


@pytest.mark.parametrize("operation", ["UploadPartCopy", "UploadPart", "CompleteMultipartUpload"])
def test_an_upload_interrupted_by_a_persistent_fault_resumes(s3: Setup, operation: str) -> None:
    """Chunks, a chunk that fails for good (503, upload unchanged), the chunk again, a finish that
    fails for good while composing the blob (503, no blob, no open multipart upload), then the
    finish again: the right blob. The running hash survives the failed requests."""
    repo = unique_repo("faults")
    data = os.urandom(15 * MiB + 1)
    digest = digest_of(data)
    cut1, cut2 = 6 * MiB, 13 * MiB
    location = s3.client.start_upload(repo)

    def patch(start: int, end: int) -> requests.Response:
        return s3.client.request("PATCH", location, data=data[start:end], headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{start}-{end - 1}"})

    assert patch(0, cut1).status_code == 202
    s3.proxy.inject("PutObject", "slow-down", ATTEMPTS, key_contains="/_uploads/")
    assert_error(patch(cut1, cut2), 503, "UNAVAILABLE")
    assert s3.proxy.faults_left() == 0
    status = s3.client.request("GET", location)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{cut1 - 1}"
    r = patch(cut1, cut2)
    assert r.status_code == 202 and r.headers["Range"] == f"0-{cut2 - 1}", r.text

    s3.proxy.inject(operation, "internal-error", ATTEMPTS)
    r = s3.client.request("PUT", location, params={"digest": digest}, data=data[cut2:], headers={
        "Content-Type": "application/octet-stream", "Content-Range": f"{cut2}-{len(data) - 1}"})
    assert_error(r, 503, "UNAVAILABLE")
    assert s3.proxy.faults_left() == 0
    assert get_blob(s3.client, repo, digest).status_code == 404
    assert digest not in s3.audit()
    status = s3.client.request("GET", location)  # the last chunk was kept: only the blob's commit failed
    assert status.status_code == 204 and status.headers["Range"] == f"0-{len(data) - 1}"

    r = s3.client.request("PUT", location, params={"digest": digest})
    assert r.status_code == 201, r.text
    assert get_blob(s3.client, repo, digest).status_code == 200
    assert s3.audit()[digest] == data
    assert s3.client.request("GET", location).status_code == 404


@pytest.mark.parametrize("kind", ["internal-error", "reset"])
def test_a_blob_get_failing_for_good_is_a_503(s3: Setup, kind: FaultKind) -> None:
    repo = unique_repo("faults")
    data = os.urandom(3 * MiB)
    digest = s3.client.push_blob(repo, data)
    s3.proxy.inject("GetObject", kind, ATTEMPTS, key_contains="/blobs/")
    assert_error(get_blob(s3.client, repo, digest), 503, "UNAVAILABLE")
    assert s3.proxy.faults_left() == 0
    assert get_blob(s3.client, repo, digest).status_code == 200  # S3 is back: so is the blob


def test_a_blob_cut_off_for_good_mid_stream_is_a_short_body_at_once(s3: Setup) -> None:
    """Each S3 response cut off halfway: the registry resumes from the byte reached, and when the
    tries run out with the status line already sent, the connection is dropped there and then, so
    the client sees a short body, never a complete-looking wrong one, nor waits for the rest."""
    repo = unique_repo("faults")
    data = os.urandom(3 * MiB)
    digest = s3.client.push_blob(repo, data)
    s3.proxy.inject("GetObject", "truncate", ATTEMPTS, key_contains="/blobs/")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get_blob(s3.client, repo, digest)
    assert time.monotonic() - started < 10
    assert s3.proxy.faults_left() == 0
    assert get_blob(s3.client, repo, digest).status_code == 200


def test_persistent_faults_on_manifests_and_listings_are_503s(s3: Setup) -> None:
    repo = unique_repo("faults")
    digest, body = s3.client.push_image(repo, "v1", [os.urandom(1000)])
    s3.proxy.inject("ListObjectsV2", "slow-down", ATTEMPTS)
    assert_error(s3.client.request("GET", "/v2/_catalog"), 503, "UNAVAILABLE")
    s3.proxy.inject("ListObjectsV2", "reset", ATTEMPTS)
    assert_error(s3.client.request("GET", f"/v2/{repo}/tags/list", params={"n": 10}), 503, "UNAVAILABLE")

    s3.proxy.inject("PutObject", "internal-error", ATTEMPTS)  # the manifest's own bytes, first
    changed = body.replace(b'"schemaVersion": 2', b'"schemaVersion": 2, "annotations": {"a": "b"}')
    r = s3.client.push_manifest(repo, "v2", changed)
    assert_error(r, 503, "UNAVAILABLE")
    assert s3.proxy.faults_left() == 0
    assert s3.client.request("GET", f"/v2/{repo}/manifests/v2").status_code == 404
    s3.audit()
    r = s3.client.push_manifest(repo, "v2", changed)
    assert r.status_code == 201, r.text
    r = s3.client.request("GET", f"/v2/{repo}/manifests/v2", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == changed
    assert r.headers["Docker-Content-Digest"] == digest_of(changed)
    assert digest_of(changed) in s3.audit()
