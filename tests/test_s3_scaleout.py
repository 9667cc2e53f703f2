"""Several stateless replicas on one S3 bucket: any request may land on any of them.

Two registry processes share nothing but the bucket (moto, behind the counting
proxy of tests/s3_proxy.py): uploads move between them mid-way, tags pushed
through one are served by the other at once, concurrent pushes of the same
layers leave one copy of each blob, client chunkings that S3's 5 MiB part rule
does not like still compose into the right blob, and a catalog page costs a
bounded number of S3 listings however many repositories the bucket holds.

What S3 calls cost (requests billed and waited for), counted by the proxy: a blob
pushed in one PUT costs at most 8, its bytes written once and shown only once they
hash to the digest; a push cut short leaves no multipart upload; a manifest PUT,
a tag PUT and a pull by tag cost no more than Distribution 2.8's (`make bench`,
s3-calls: 5, 4, and a GetObject per blob plus one).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, NamedTuple

import pytest
import requests

from registry.incoming import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, TICK_SECONDS

from .client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryClient, descriptor, digest_of, unique_repo
from .engines import wait_until
from .s3 import new_bucket, s3_client, s3_config
from .s3_proxy import Call, S3FaultProxy, bucket_keys, pending_multipart_uploads, verify_blob_objects
from .servers import MotoServer, RegistryServer

MiB = 1 << 20
PART = 5 * MiB
ROOT = "registry"


@pytest.fixture(scope="module")
def proxy(moto: MotoServer) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(moto.url) as running:
        yield running


class Cluster(NamedTuple):
    bucket: str
    a: RegistryServer
    b: RegistryServer


@pytest.fixture
def make_cluster(moto: MotoServer, proxy: S3FaultProxy,
                 make_registry: Callable[..., RegistryServer]) -> Callable[..., Cluster]:
    """Replicas on one fresh bucket, reaching S3 through the proxy (so that calls are counted)."""

    def make(replicas: int = 2) -> Cluster:
        bucket = new_bucket(moto)
        config = {"storage": {
            "s3": s3_config(moto, bucket, regionendpoint=proxy.url, rootdirectory=ROOT, chunksize=PART),
            "maintenance": {"uploadpurging": {"enabled": False}},  # its background listings would blur the counts
        }}
        servers = [make_registry(config=config) for _ in range(replicas)]
        proxy.reset_counts()
        return Cluster(bucket, servers[0], servers[-1])

    return make


def blob_key(digest: str) -> str:
    algorithm, hex_ = digest.split(":")
    return f"{ROOT}/docker/registry/v2/blobs/{algorithm}/{hex_[:2]}/{hex_}/data"


def pull_blob(client: RegistryClient, repo: str, digest: str) -> bytes:
    """GET as a pulling client does: the 307 to a presigned S3 URL is followed."""
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", allow_redirects=True)
    assert r.status_code == 200, r.text
    assert [h.status_code for h in r.history] == [307]
    assert r.history[0].headers["Docker-Content-Digest"] == digest
    return r.content


def patch(client: RegistryClient, location: str, data: bytes, start: int) -> requests.Response:
    return client.request("PATCH", location, data=data, headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{start}-{start + len(data) - 1}",
    })


def test_an_upload_moves_between_replicas(moto: MotoServer, make_cluster: Callable[..., Cluster]) -> None:
    """Started on A, chunks on B, finished on A: the upload's state is all in the bucket."""
    cluster = make_cluster()
    a, b = RegistryClient(cluster.a.url), RegistryClient(cluster.b.url)
    repo = unique_repo("scale")
    data = os.urandom(10 * MiB + 12345)
    digest = digest_of(data)
    cut1, cut2 = 3 * MiB, 9 * MiB

    location = a.start_upload(repo)
    r = patch(b, location, data[:cut1], 0)
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{cut1 - 1}"
    status = a.request("GET", location)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{cut1 - 1}"
    stale = patch(a, location, data[:cut1], 0)  # A knows B's chunk is there: a replay is refused
    assert stale.status_code == 416 and stale.headers["Range"] == f"0-{cut1 - 1}"
    r = patch(b, location, data[cut1:cut2], cut1)
    assert r.status_code == 202 and r.headers["Range"] == f"0-{cut2 - 1}", r.text

    r = a.request("PUT", location, params={"digest": digest}, data=data[cut2:], headers={
        "Content-Type": "application/octet-stream", "Content-Range": f"{cut2}-{len(data) - 1}"})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    for replica in (a, b):
        assert pull_blob(replica, repo, digest) == data
        head = replica.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
        assert replica.request("GET", location).status_code == 404  # the upload is over for everyone
    s3 = s3_client(moto)
    assert [k for k in bucket_keys(s3, cluster.bucket, ROOT) if "/_uploads/" in k] == []


def test_pulls_and_tags_through_either_replica(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    a, b = RegistryClient(cluster.a.url), RegistryClient(cluster.b.url)
    repo = unique_repo("scale")
    layers = [os.urandom(300_000), os.urandom(2000)]
    first, body = a.push_image(repo, "v1", layers)

    r = b.request("GET", f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == body
    assert r.headers["Docker-Content-Digest"] == first
    for layer in layers:
        assert pull_blob(b, repo, digest_of(layer)) == layer

    second, body2 = b.push_image(repo, "v1", [os.urandom(1000)])  # the tag moves, through B
    for replica in (a, b):
        r = replica.request("GET", f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == body2, "a tag moved on one replica is seen at once on all"
        assert r.headers["Docker-Content-Digest"] == second
        assert replica.request("HEAD", f"/v2/{repo}/manifests/{first}").status_code == 200
        assert replica.request("GET", f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["v1"]}
        assert repo in replica.request("GET", "/v2/_catalog", params={"n": 10000}).json()["repositories"]

    b.push_manifest(repo, "v2", body)  # a second tag, through B
    assert a.request("GET", f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["v1", "v2"]}
    r = b.request("DELETE", f"/v2/{repo}/manifests/v2")
    assert r.status_code == 202, r.text
    assert a.request("GET", f"/v2/{repo}/manifests/v2").status_code == 404


def test_concurrent_pushes_of_the_same_layers_store_one_copy(moto: MotoServer,
                                                              make_cluster: Callable[..., Cluster]) -> None:
    """12 clients, alternating replicas, push the same three layers at once (a 6 MiB one chunked,
    which makes a multipart composition race another): all succeed, and the bucket ends up with
    exactly one object per blob, no upload left over and no multipart upload pending."""
    cluster = make_cluster()
    replicas = [cluster.a.url, cluster.b.url]
    base = unique_repo("fanout")
    big, medium, small = os.urandom(6 * MiB + 777), os.urandom(400_000), os.urandom(1500)
    barrier = threading.Barrier(12, timeout=60)

    def push(i: int) -> tuple[str, str, bytes]:
        client = RegistryClient(replicas[i % 2])
        repo = f"{base}/shared" if i % 3 == 0 else f"{base}/c{i}"
        barrier.wait()
        location = client.start_upload(repo)  # the big layer in two chunks, finished on the other replica
        r = patch(client, location, big[:4 * MiB], 0)
        assert r.status_code == 202, r.text
        other = RegistryClient(replicas[(i + 1) % 2])
        r = other.request("PUT", location, params={"digest": digest_of(big)}, data=big[4 * MiB:],
                          headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        client.push_blob(repo, medium)
        client.push_blob(repo, small)
        config = json.dumps({"architecture": "amd64", "os": "linux", "client": i}).encode()
        client.push_blob(repo, config)
        body = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, layer) for layer in (big, medium, small)],
        }).encode()
        r = client.push_manifest(repo, f"t{i}", body)
        assert r.status_code == 201, r.text
        return repo, r.headers["Docker-Content-Digest"], body

    with ThreadPoolExecutor(12) as pool:
        pushed = list(pool.map(push, range(12)))

    for i, (repo, digest, body) in enumerate(pushed):
        other = RegistryClient(replicas[(i + 1) % 2])
        r = other.request("GET", f"/v2/{repo}/manifests/t{i}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == body
        assert r.headers["Docker-Content-Digest"] == digest
    assert pull_blob(RegistryClient(replicas[1]), f"{base}/c1", digest_of(big)) == big

    s3 = s3_client(moto)
    stored = verify_blob_objects(s3, cluster.bucket, ROOT)
    configs = {d["config"]["digest"] for d in (json.loads(b) for _, _, b in pushed)}
    expected = {digest_of(big), digest_of(medium), digest_of(small), *configs, *(d for _, d, _ in pushed)}
    assert set(stored) == expected, "one object per blob, and nothing else, in the blob store"
    assert len(configs) == 12
    leftovers = [k for k in bucket_keys(s3, cluster.bucket) if "/_uploads/" in k or "/.seg." in k]
    assert leftovers == []
    assert pending_multipart_uploads(s3, cluster.bucket) == []


def composed_parts(calls: list[Call], key: str) -> list[Call]:
    """The parts of the one multipart upload that made key, in order."""
    creates = [c for c in calls if c.operation == "CreateMultipartUpload" and c.key == key]
    completes = [c for c in calls if c.operation == "CompleteMultipartUpload" and c.key == key]
    assert len(creates) == 1 and len(completes) == 1, [c.operation for c in calls if c.key == key]
    parts = [c for c in calls if c.operation in ("UploadPart", "UploadPartCopy") and c.key == key]
    assert [p.part for p in parts] == list(range(1, len(parts) + 1))
    return parts


@pytest.mark.parametrize("chunks_mib, copied_mib", [
    ([1] * 23, 0),          # every piece is smaller than a part: all re-assembled
    ([7, 7, 7, 2], 5),      # each 7 MiB chunk: a segment of a part or more, and a remainder
    ([23], 15),             # one PATCH: segments of a part or more, copied server-side
    ([3, 11, 2, 7], 0),     # a small first piece: every part borrows from the next piece
], ids=["1MiB", "7MiB", "one-23MiB-patch", "3-11-2-7MiB"])
def test_chunkings_compose_into_valid_multipart_blobs(moto: MotoServer, make_cluster: Callable[..., Cluster],
                                                      proxy: S3FaultProxy, chunks_mib: list[int],
                                                      copied_mib: int) -> None:
    """A 23 MiB blob in chunks that are not multiples of S3's 5 MiB minimum part, alternating replicas:
    the right blob, composed by one multipart upload whose parts are all 5 MiB or more but the last;
    pieces of a part or more that start a part are copied server-side (UploadPartCopy), not re-sent."""
    cluster = make_cluster()
    clients = [RegistryClient(cluster.a.url), RegistryClient(cluster.b.url)]
    repo = unique_repo("chunks")
    data = os.urandom(23 * MiB)
    digest = digest_of(data)
    location = clients[0].start_upload(repo)
    start = 0
    for i, size in enumerate(chunks_mib):
        r = patch(clients[i % 2], location, data[start:start + size * MiB], start)
        start += size * MiB
        assert r.status_code == 202 and r.headers["Range"] == f"0-{start - 1}", r.text
    r = clients[len(chunks_mib) % 2].request("PUT", location, params={"digest": digest})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest

    parts = composed_parts(proxy.calls, blob_key(digest))
    assert sum(p.size for p in parts) == len(data)
    assert all(p.size >= PART for p in parts[:-1]), [p.size for p in parts]
    assert len(parts) <= len(data) // PART + 1
    copied = sum(p.size for p in parts if p.operation == "UploadPartCopy")
    assert copied >= copied_mib * MiB, [(p.operation, p.size) for p in parts]
    if max(chunks_mib) * MiB < PART:
        assert {p.operation for p in parts} == {"UploadPart"}
    for client in clients:
        assert hashlib.sha256(pull_blob(client, repo, digest)).hexdigest() == digest.split(":")[1]
    s3 = s3_client(moto)
    assert [k for k in bucket_keys(s3, cluster.bucket) if "/_uploads/" in k] == []
    assert pending_multipart_uploads(s3, cluster.bucket) == []


# -- catalog paging cost ---------------------------------------------------------------------------

#: 3,000 rather than 10,000 repositories, with one layer link each: moto stores about 400
#: objects a second on two cores. A page's cost must not depend on the count anyway, and
#: these 6,000 keys are already twice what the bound below allows listing in full.
REPOSITORIES = 3000
LAYER_LINKS = 1


def repository_names() -> list[str]:
    """Nested names, and `-` suffixes that sort before their stem's `/` in key order."""
    names = [f"team{i % 8}/svc{i // 8:04d}" for i in range(2400)]
    names += [f"team{i % 8}/svc{i // 8:04d}-canary" for i in range(0, 2400, 4)]
    names += [f"team{i % 8}/svc{i // 8:04d}/db" for i in range(0, 2400, 4)]
    return names[:REPOSITORIES]


def populate(moto: MotoServer, bucket: str, names: list[str]) -> int:
    """A tag link and a few layer links per repository, put directly (not through the proxy)."""
    s3 = s3_client(moto)
    link = b"sha256:" + b"ab" * 32
    keys = []
    for name in names:
        repo = f"{ROOT}/docker/registry/v2/repositories/{name}"
        keys.append(f"{repo}/_manifests/tags/latest/current/link")
        keys += [f"{repo}/_layers/sha256/{j:064x}/link" for j in range(LAYER_LINKS)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=link), keys))
    return len(keys)


def test_a_catalog_page_costs_a_bounded_number_of_listings(moto: MotoServer, proxy: S3FaultProxy,
                                                           make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(replicas=1)
    names = repository_names()
    assert len(names) == REPOSITORIES
    objects = populate(moto, cluster.bucket, names)
    assert objects // 1000 >= 2 * 3, "listing every key would cost twice the bound below"
    expected = sorted(names, key=lambda n: n + "/_manifests/")
    client = RegistryClient(cluster.a.url)

    def page(**params: Any) -> tuple[list[str], str | None, int]:
        proxy.reset_counts()
        r = client.request("GET", "/v2/_catalog", params={"n": 100, **params})
        assert r.status_code == 200, r.text
        counts = proxy.counts()
        assert set(counts) <= {"ListObjectsV2"}, counts  # no per-repository HEAD or GET
        link = r.headers.get("Link")
        last = re.fullmatch(r'</v2/_catalog\?n=100&last=([^>]+)>; rel="next"', link)[1] if link else None
        return r.json()["repositories"], last, counts["ListObjectsV2"]

    middle = expected[REPOSITORIES // 2]
    repositories, last, listings = page(last=middle)
    assert repositories == expected[REPOSITORIES // 2 + 1:REPOSITORIES // 2 + 101]
    assert last == repositories[-1]
    assert 1 <= listings <= 3, listings

    repositories, last, listings = page()
    assert repositories == expected[:100] and last == expected[99]
    assert 1 <= listings <= 3, listings

    repositories, last, listings = page(last=expected[-40])
    assert repositories == expected[-39:] and last is None
    assert 1 <= listings <= 3, listings


# -- what S3 calls cost ------------------------------------------------------------------------------

#: POST then one PUT with the whole blob (the issue's budget; Distribution 2.8 spends 35 on 128 MiB)
MONOLITHIC_PUSH_CALLS = 8
#: Distribution 2.8's, for an image manifest PUT by a new tag, and for the same manifest by another tag
MANIFEST_PUT_CALLS, TAG_PUT_CALLS = 5, 4


def calls(proxy: S3FaultProxy) -> Counter[str]:
    """S3 calls per operation since the last reset_counts, but for the replicas' start-up sweep of incoming/
    (a heartbeat written, read back, the directory listed), which may still be under way as a test begins."""
    return Counter(c.operation for c in proxy.calls if "/incoming/" not in c.key)


def start_put(url: str, target: str, data: bytes, sent: int) -> socket.socket:
    """A PUT of data with Content-Length whose body stops after its first `sent` bytes, for now."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=120)
    s.sendall(f"PUT {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:sent])
    return s


def put_in_two_halves(url: str, target: str, data: bytes, between: Callable[[], None]) -> bytes:
    """A PUT with Content-Length whose body is sent in two halves, between() called in between; the answer's
    status line, or b"" when between() closed nothing and the server hung up."""
    half = len(data) // 2
    with start_put(url, target, data, half) as s:
        between()
        s.sendall(data[half:])
        return s.makefile("rb").readline()


def test_a_blob_pushed_in_one_put_costs_at_most_8_calls_and_shows_only_once_verified(
        moto: MotoServer, proxy: S3FaultProxy, make_cluster: Callable[..., Cluster]) -> None:
    """POST on one replica, the PUT with the whole blob on the other: the blob streams into a multipart
    upload at its own key, which nobody sees (not S3, not a GET) until its digest is checked."""
    cluster = make_cluster()
    a = RegistryClient(cluster.a.url)
    s3 = s3_client(moto)
    repo = unique_repo("calls")
    data = os.urandom(3 * PART + 4321)
    digest = digest_of(data)
    proxy.reset_counts()
    location = a.start_upload(repo)

    def midway() -> None:
        wait_until(lambda: pending_multipart_uploads(s3, cluster.bucket) == [blob_key(digest)], "the blob streaming")
        pushed.update(calls(proxy))  # the push pauses with the client: its part is counted once sent whole
        assert bucket_keys(s3, cluster.bucket, blob_key(digest)) == []
        assert a.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 404
        assert a.request("GET", f"/v2/{repo}/blobs/{digest}").status_code == 404
        proxy.reset_counts()  # those GET and HEAD are the test's, not the push's

    pushed: Counter[str] = Counter()
    status = put_in_two_halves(cluster.b.url, f"{location}?digest={digest}", data, midway)
    assert status.startswith(b"HTTP/1.1 201"), status
    pushed.update(calls(proxy))
    assert sum(pushed.values()) <= MONOLITHIC_PUSH_CALLS, pushed
    assert not {"CopyObject", "UploadPartCopy"} & set(pushed), "the bytes are written to S3 once"
    assert pull_blob(a, repo, digest) == data
    assert verify_blob_objects(s3, cluster.bucket, ROOT)[digest] == data
    assert pending_multipart_uploads(s3, cluster.bucket) == []
    assert [k for k in bucket_keys(s3, cluster.bucket, ROOT) if "/_uploads/" in k] == []


def test_a_put_cut_short_leaves_no_multipart_upload_and_the_upload_as_it_was(
        moto: MotoServer, make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(replicas=1)
    client = RegistryClient(cluster.a.url)
    s3 = s3_client(moto)
    repo = unique_repo("calls")
    data = os.urandom(2 * PART)
    digest = digest_of(data)
    location = client.start_upload(repo)
    with start_put(cluster.a.url, f"{location}?digest={digest}", data, PART):
        wait_until(lambda: pending_multipart_uploads(s3, cluster.bucket), "the blob streaming")
    wait_until(lambda: pending_multipart_uploads(s3, cluster.bucket) == [], "the multipart upload aborted")
    assert bucket_keys(s3, cluster.bucket, blob_key(digest)) == []
    status = client.request("GET", location)
    assert status.status_code == 204 and status.headers["Range"] == "0-0"
    r = client.request("PUT", location, params={"digest": digest}, data=data)
    assert r.status_code == 201, r.text
    assert verify_blob_objects(s3, cluster.bucket, ROOT)[digest] == data


def heartbeat_named_uploads(s3: Any, bucket: str) -> set[str]:
    """The multipart upload ids the replicas' heartbeats name (registry/incoming.py)."""
    named = set()
    for key in bucket_keys(s3, bucket, f"{ROOT}/docker/registry/v2/incoming"):
        if key.endswith("/heartbeat"):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            named |= {token.split(" ")[0] for token in json.loads(body or b"[]")}
    return named


def test_a_killed_replica_s_streamed_push_is_aborted_and_a_live_one_s_is_not(
        moto: MotoServer, make_registry: Callable[..., RegistryServer]) -> None:
    """A replica killed mid-push leaves a multipart upload at the blob's key, invisible but stored. Its
    heartbeat named the upload, so another replica aborts it once that heartbeat is stale; a push streaming
    through a replica alive all along is named by a fresh heartbeat, left alone, and completes."""
    bucket = new_bucket(moto)
    config = {"storage": {"s3": s3_config(moto, bucket, rootdirectory=ROOT, chunksize=PART)},
              "http": {"timeouts": {"body": "5m"}}}  # the live push waits out the sweep
    killed, live, sweeper = (make_registry(config=config) for _ in range(3))
    s3 = s3_client(moto)
    repo = unique_repo("orphan")

    def uploads() -> dict[str, str]:
        return {u["UploadId"]: u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}

    def streaming(server: RegistryServer, data: bytes) -> tuple[socket.socket, str]:
        """The connection of a push streaming through server, once it is streaming and named; its upload id."""
        before = set(uploads())
        location = RegistryClient(server.url).start_upload(repo)
        s = start_put(server.url, f"{location}?digest={digest_of(data)}", data, PART)  # the blob streams into S3
        upload = wait_until(lambda: set(uploads()) - before, "the blob streaming").pop()
        wait_until(lambda: upload in heartbeat_named_uploads(s3, bucket), "the upload named by a heartbeat")
        return s, upload

    doomed, kept = os.urandom(2 * PART), os.urandom(2 * PART)
    doomed_push, orphan = streaming(killed, doomed)
    killed.kill()
    doomed_push.close()
    kept_push, alive = streaming(live, kept)
    wait_until(lambda: orphan not in uploads(), "the killed replica's upload aborted",
               timeout=STALE_AFTER_SECONDS + 6 * HEARTBEAT_SECONDS)
    assert uploads() == {alive: blob_key(digest_of(kept))}
    kept_push.sendall(kept[PART:])
    assert kept_push.makefile("rb").readline().startswith(b"HTTP/1.1 201")
    kept_push.close()
    assert uploads() == {}
    assert bucket_keys(s3, bucket, blob_key(digest_of(doomed))) == []
    assert verify_blob_objects(s3, bucket, ROOT) == {digest_of(kept): kept}
    assert any("aborted 1 unfinished storage write(s) of stopped registry process" in server.log_path.read_text()
               for server in (live, sweeper))


def test_an_idle_replica_makes_no_s3_calls(proxy: S3FaultProxy, make_cluster: Callable[..., Cluster]) -> None:
    """Once its start-up sweep and a streamed push are over, a replica with nothing to do calls S3 for
    nothing: no heartbeat, no listing, for longer than two heartbeat periods."""
    cluster = make_cluster(replicas=1)
    client = RegistryClient(cluster.a.url)
    client.push_blob(unique_repo("idle"), os.urandom(2 * PART))  # streamed into a multipart upload
    counted = -1

    def quiet() -> bool:
        """No call since the last poll: the start-up sweep and the push's heartbeat, if any, are over."""
        nonlocal counted
        counted, before = len(proxy.calls), counted
        return counted == before

    wait_until(quiet, "the calls of the push and the sweep to end", interval=HEARTBEAT_SECONDS / 2)
    proxy.reset_counts()
    watch_until = time.monotonic() + 2 * HEARTBEAT_SECONDS + TICK_SECONDS  # an observation window, not a wait
    while time.monotonic() < watch_until:
        assert proxy.calls == [], [(c.operation, c.key) for c in proxy.calls]
        time.sleep(0.2)


def test_manifest_tag_and_pull_cost_no_more_calls_than_distribution(
        proxy: S3FaultProxy, make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(replicas=1)
    client = RegistryClient(cluster.a.url)
    repo = unique_repo("calls")
    layers = [os.urandom(2 * PART), os.urandom(3000)]
    config = b'{"architecture": "amd64", "os": "linux"}'
    for blob in (config, *layers):
        client.push_blob(repo, blob)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, config),
                       "layers": [descriptor(OCI_LAYER, layer) for layer in layers]}).encode()

    def cost(action: Callable[[], None]) -> int:
        proxy.reset_counts()
        action()
        return sum(calls(proxy).values())

    assert cost(lambda: client.push_manifest(repo, "v1", body).raise_for_status()) <= MANIFEST_PUT_CALLS
    assert cost(lambda: client.push_manifest(repo, "v2", body).raise_for_status()) <= TAG_PUT_CALLS

    def pull() -> None:
        r = client.request("GET", f"/v2/{repo}/manifests/v2", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == body
        for blob in (config, *layers):  # each a 307 to S3 (through the proxy), then the GET there
            assert pull_blob(client, repo, digest_of(blob)) == blob

    # the tag's link and its revision's, then one GetObject per blob: the links of blobs this replica
    # just stored are trusted for a minute, as Distribution's blob descriptor cache trusts them for good
    assert cost(pull) <= 2 + 3
