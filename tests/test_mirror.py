"""The pull-through mirror, end to end: a mirror process in front of real upstream registries on loopback.

The upstream is a second instance of this registry (its access log shows each
request it answered, which is how fetches are counted) or Distribution. Images
go to the upstream first; clients then read them through the mirror, whose
data directory must end up holding exactly what was verified.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from registry.mirror.service import READ_CHUNK, SUBSCRIBER_CHUNKS

from .auth_helpers import client_for, write_htpasswd
from .client import RegistryClient, assert_error, blob_file, digest_of, unique_repo
from .engines import wait_until
from .oci_layout import (
    ACCEPT_ALL,
    Layout,
    assert_same_image,
    copy,
    file_digest,
    multi_arch_index,
    small_image,
)
from .scrape import scrape
from .servers import MakeRegistry, RegistryServer, ServerProcess

MiB = 1 << 20
PREFIX = "up"



# --- helpers ---------------------------------------------------------------------------------------

def prefixed(upstream: ServerProcess, ttl: str = "1h", prefix: str = PREFIX, **extra: Any) -> dict[str, Any]:
    """One entry of proxy.upstreams."""
    return {"prefix": prefix, "remoteurl": upstream.url, "ttl": ttl, **extra}


def mirror_of(make_registry: MakeRegistry, *upstreams: dict[str, Any]) -> RegistryServer:
    return make_registry(config={"proxy": {"upstreams": list(upstreams)}})


def docker_ref(server: ServerProcess, repo: str, tag: str) -> str:
    return f"docker://{server.host}/{repo}:{tag}"


def get_manifest(client: RegistryClient, repo: str, reference: str, **params: str) -> requests.Response:
    return client.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL},
                          params=params or None)


def upstream_requests(upstream: RegistryServer, method: str, path: str) -> list[str]:
    """Access-log lines of the upstream for `method path` (the log has one line per answered request)."""
    pattern = re.compile(rf'"{method} {re.escape(path)}(\?[^ ]*)? HTTP/1\.1" (\d+)')
    return [line for line in upstream.log_path.read_text().splitlines() if pattern.search(line)]


def mirror_metrics(server: RegistryServer) -> dict[tuple[str, str, str], float]:
    """registry_mirror_requests_total by (upstream, kind, result), read from /metrics."""
    return {(labels["upstream"], labels["kind"], labels["result"]): value
            for labels, value in scrape(server.url).labelled("registry_mirror_requests_total")}


def stored_blobs(server: RegistryServer) -> set[str]:
    """Digests of the blob data files in a filesystem registry's data directory, each checked against its name."""
    found = set()
    for data in (server.root / "docker/registry/v2/blobs").glob("*/*/*/data"):
        digest = f"{data.parent.parent.parent.name}:{data.parent.name}"
        assert file_digest(data, data.parent.parent.parent.name) == digest, f"{data} does not hold {digest}"
        found.add(digest)
    return found


def leftover_uploads(server: RegistryServer) -> list[Path]:
    """Upload data in the store: sessions, and the single-request uploads fills are."""
    sessions = server.root.glob("docker/registry/v2/repositories/**/_uploads/*/*")
    return [p for p in [*sessions, *server.root.glob("docker/registry/v2/incoming/*/*/data")] if p.is_file()]


def sleep_past(seconds: float) -> None:
    """A tag cached `seconds` ago has outlived a ttl of `seconds` once this returns."""
    time.sleep(seconds + 0.2)


def is_manifest(layout: Layout, digest: str) -> bool:
    try:
        document = json.loads(layout.read_blob(digest))
    except ValueError:
        return False
    return isinstance(document, dict) and ("layers" in document or "manifests" in document)


# --- pulling through the mirror ----------------------------------------------------------------------

def test_skopeo_pulls_through_the_mirror_then_from_the_cache_without_the_upstream(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    upstream = make_registry()
    mirror = mirror_of(make_registry, prefixed(upstream))
    repo = unique_repo("team")
    single = small_image(tmp_path / "single", "v1")
    index = multi_arch_index(tmp_path / "index", "multi")
    copy(single.ref("v1"), docker_ref(upstream, repo, "v1"))
    copy(index.ref("multi"), docker_ref(upstream, repo, "multi"), "--all")
    assert stored_blobs(mirror) == set()

    copy(docker_ref(mirror, f"{PREFIX}/{repo}", "v1"), f"oci:{tmp_path / 'out'}:v1")
    copy(docker_ref(mirror, f"{PREFIX}/{repo}", "multi"), f"oci:{tmp_path / 'out'}:multi", "--all")
    assert_same_image(single, "v1", Layout(tmp_path / "out"), "v1")
    assert_same_image(index, "multi", Layout(tmp_path / "out"), "multi")

    # the manifests and blobs the mirror serves are the upstream's, byte for byte
    upstream_client, mirror_client = RegistryClient(upstream.url), RegistryClient(mirror.url)
    for source, tag in ((single, "v1"), (index, "multi")):
        digest, body = source.manifest(tag)
        theirs, ours = get_manifest(upstream_client, repo, tag), get_manifest(mirror_client, f"{PREFIX}/{repo}", tag)
        assert ours.status_code == 200
        assert (ours.content, ours.headers["Docker-Content-Digest"], ours.headers["Content-Type"]) == (
            theirs.content, theirs.headers["Docker-Content-Digest"], theirs.headers["Content-Type"])
        assert ours.content == body
    # ...and its data directory now holds every blob of both images
    wanted = set(single.reachable(single.manifest("v1")[0])) | set(index.reachable(index.manifest("multi")[0]))
    assert wanted <= stored_blobs(mirror)

    upstream.stop()
    copy(docker_ref(mirror, f"{PREFIX}/{repo}", "v1"), f"oci:{tmp_path / 'again'}:v1")
    copy(docker_ref(mirror, f"{PREFIX}/{repo}", "multi"), f"oci:{tmp_path / 'again'}:multi", "--all")
    assert_same_image(single, "v1", Layout(tmp_path / "again"), "v1")
    assert_same_image(index, "multi", Layout(tmp_path / "again"), "multi")
    for source, tag in ((single, "v1"), (index, "multi")):
        digest, body = source.manifest(tag)
        for reference in (tag, digest):
            r = get_manifest(mirror_client, f"{PREFIX}/{repo}", reference)
            assert r.status_code == 200, r.text
            assert r.content == body
            assert r.headers["Docker-Content-Digest"] == digest
        for blob in source.reachable(digest):
            if is_manifest(source, blob):
                r = get_manifest(mirror_client, f"{PREFIX}/{repo}", blob)
            else:
                r = mirror_client.request("GET", f"/v2/{PREFIX}/{repo}/blobs/{blob}")
            assert r.status_code == 200, (blob, r.text)
            assert r.content == source.read_blob(blob)
    metrics = mirror_metrics(mirror)
    assert metrics[(PREFIX, "manifest", "hit")] > 0
    assert metrics[(PREFIX, "blob", "hit")] > 0
    assert metrics.get((PREFIX, "manifest", "error"), 0) == 0


def test_pull_through_from_distribution_and_dockerhub_library_names(
    make_registry: MakeRegistry, make_reference: Callable[[Path], ServerProcess], tmp_path: Path
) -> None:
    """Distribution as the upstream; with `dockerhub`, a one-component name means library/<name>."""
    reference = make_reference(tmp_path / "reference")
    mirror = mirror_of(make_registry, prefixed(reference, prefix="hub.local", dockerhub=True))
    source = small_image(tmp_path / "src", "v1")
    name = f"img{uuid.uuid4().hex[:8]}"
    copy(source.ref("v1"), docker_ref(reference, f"library/{name}", "v1"))

    copy(docker_ref(mirror, f"hub.local/{name}", "v1"), f"oci:{tmp_path / 'out'}:v1")
    assert_same_image(source, "v1", Layout(tmp_path / "out"), "v1")
    mirror_client = RegistryClient(mirror.url)
    digest, body = source.manifest("v1")
    for local in (f"hub.local/{name}", f"hub.local/library/{name}"):
        r = get_manifest(mirror_client, local, "v1")
        assert r.status_code == 200, r.text
        assert (r.content, r.headers["Docker-Content-Digest"]) == (body, digest)
    assert set(source.reachable(digest)) <= stored_blobs(mirror)


def test_containerd_ns_parameter_selects_the_upstream(make_registry: MakeRegistry) -> None:
    first, second = make_registry(), make_registry()
    mirror = mirror_of(make_registry, prefixed(first, prefix="up.local"), prefixed(second, prefix="other.local"))
    repo = unique_repo("team")
    digest_first, body_first = RegistryClient(first.url).push_image(repo, "v1")
    digest_second, body_second = RegistryClient(second.url).push_image(repo, "v1")
    client = RegistryClient(mirror.url)

    r = get_manifest(client, repo, "v1", ns="up.local")
    assert r.status_code == 200, r.text
    assert (r.content, r.headers["Docker-Content-Digest"]) == (body_first, digest_first)
    r = get_manifest(client, repo, "v1", ns="other.local")
    assert (r.content, r.headers["Docker-Content-Digest"]) == (body_second, digest_second)
    layer = json.loads(body_first)["layers"][0]["digest"]
    r = client.request("GET", f"/v2/{repo}/blobs/{layer}", params={"ns": "up.local"})
    assert r.status_code == 200 and digest_of(r.content) == layer
    # the same content under its prefixed name, from the cache
    assert get_manifest(client, f"up.local/{repo}", "v1").content == body_first
    # without ns (or with an unknown one) the name is a local one, which does not exist
    assert_error(get_manifest(client, repo, "v1"), 404, "NAME_UNKNOWN")
    assert_error(get_manifest(client, repo, "v1", ns="unknown.example"), 404, "NAME_UNKNOWN")


# --- tags: ttl, revalidation, stale copies ---------------------------------------------------------------

def test_moved_tag_is_seen_after_the_ttl_and_not_before(make_registry: MakeRegistry) -> None:
    upstream = make_registry()
    fast = mirror_of(make_registry, prefixed(upstream, ttl="1s"))
    slow = mirror_of(make_registry, prefixed(upstream, ttl="1h"))
    repo = unique_repo("team")
    upstream_client = RegistryClient(upstream.url)
    old_digest, old_body = upstream_client.push_image(repo, "v1")
    fast_client, slow_client = RegistryClient(fast.url), RegistryClient(slow.url)
    started = time.monotonic()  # the fast mirror's copy of the tag is no older than this
    for client in (fast_client, slow_client):
        assert get_manifest(client, f"{PREFIX}/{repo}", "v1").content == old_body
    new_digest, new_body = upstream_client.push_image(repo, "v1")
    assert new_digest != old_digest

    r = get_manifest(slow_client, f"{PREFIX}/{repo}", "v1")
    assert r.headers["Docker-Content-Digest"] == old_digest and r.content == old_body
    if time.monotonic() - started < 0.8:  # still within the fast mirror's ttl
        assert get_manifest(fast_client, f"{PREFIX}/{repo}", "v1").content == old_body

    sleep_past(1)
    r = get_manifest(fast_client, f"{PREFIX}/{repo}", "v1")
    assert r.headers["Docker-Content-Digest"] == new_digest and r.content == new_body
    assert get_manifest(slow_client, f"{PREFIX}/{repo}", "v1").content == old_body
    # the old manifest stays reachable by digest; the new one is cached by digest too
    assert get_manifest(fast_client, f"{PREFIX}/{repo}", old_digest).content == old_body
    assert get_manifest(fast_client, f"{PREFIX}/{repo}", new_digest).content == new_body

    # an unchanged tag past its ttl is confirmed with a HEAD, not fetched again
    path = f"/v2/{repo}/manifests/v1"
    gets_before = len(upstream_requests(upstream, "GET", path))
    sleep_past(1)
    assert get_manifest(fast_client, f"{PREFIX}/{repo}", "v1").content == new_body
    assert len(upstream_requests(upstream, "GET", path)) == gets_before
    assert mirror_metrics(fast)[(PREFIX, "manifest", "revalidated")] == 1
    assert (PREFIX, "manifest", "revalidated") not in mirror_metrics(slow)


def test_cached_tag_is_served_stale_when_the_upstream_is_unreachable(make_registry: MakeRegistry) -> None:
    upstream = make_registry()
    mirror = mirror_of(make_registry, prefixed(upstream, ttl="1s"))
    repo = unique_repo("team")
    digest, body = RegistryClient(upstream.url).push_image(repo, "v1")
    client = RegistryClient(mirror.url)
    assert get_manifest(client, f"{PREFIX}/{repo}", "v1").content == body

    upstream.stop()
    sleep_past(1)
    r = get_manifest(client, f"{PREFIX}/{repo}", "v1")
    assert r.status_code == 200, r.text
    assert (r.content, r.headers["Docker-Content-Digest"]) == (body, digest)
    # what was never cached cannot be served: an error, not a 500 and not a 404
    assert_error(get_manifest(client, f"{PREFIX}/{repo}", "never-pulled"), 503, "UNAVAILABLE")
    missing = digest_of(b"never pulled " + repo.encode())
    assert_error(get_manifest(client, f"{PREFIX}/{repo}", missing), 503, "UNAVAILABLE")
    assert_error(client.request("GET", f"/v2/{PREFIX}/{repo}/blobs/{missing}"), 503, "UNAVAILABLE")
    assert_error(client.request("HEAD", f"/v2/{PREFIX}/{repo}/blobs/{missing}"), 503, "UNAVAILABLE")
    metrics = mirror_metrics(mirror)
    assert metrics[(PREFIX, "manifest", "stale")] == 1
    assert metrics[(PREFIX, "manifest", "error")] == 2
    assert metrics[(PREFIX, "blob", "error")] == 2


def test_cached_tag_is_served_stale_when_the_upstream_answers_429(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    """The upstream's failed-login limiter answers 429 to every authenticated request from 127.0.0.1,
    the mirror's included, once that address has failed to log in 10 times."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {"mirror": "mirror-secret"})
    upstream = make_registry(config={"auth": {"htpasswd": {"realm": "upstream", "path": str(htpasswd)}}})
    mirror = mirror_of(make_registry, prefixed(upstream, ttl="1s", username="mirror", password="mirror-secret"))
    repo = unique_repo("team")
    digest, body = client_for(upstream.url, auth=("mirror", "mirror-secret")).push_image(repo, "v1")
    client = RegistryClient(mirror.url)
    assert get_manifest(client, f"{PREFIX}/{repo}", "v1").content == body

    intruder = client_for(upstream.url, auth=("mirror", "wrong"))
    answers = [intruder.request("GET", "/v2/").status_code for _ in range(11)]
    assert answers == [401] * 10 + [429]
    assert client_for(upstream.url, auth=("mirror", "mirror-secret")).request("GET", "/v2/").status_code == 429
    sleep_past(1)
    r = get_manifest(client, f"{PREFIX}/{repo}", "v1")
    assert r.status_code == 200, r.text
    assert (r.content, r.headers["Docker-Content-Digest"]) == (body, digest)
    # the upstream logs a request after it has answered it: give that line a moment to land
    deadline = time.monotonic() + 10
    while True:
        refused = upstream_requests(upstream, "HEAD", f"/v2/{repo}/manifests/v1")
        if (refused and refused[-1].split('" ')[1].startswith("429")) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert refused and refused[-1].split('" ')[1].startswith("429"), refused
    assert mirror_metrics(mirror)[(PREFIX, "manifest", "stale")] == 1


# --- blobs: one fill for many clients, nothing kept that does not verify -----------------------------

def test_parallel_gets_of_a_large_blob_make_one_upstream_request(make_registry: MakeRegistry) -> None:
    upstream = make_registry()
    mirror = mirror_of(make_registry, prefixed(upstream))
    repo = unique_repo("team")
    data = os.urandom(40 * MiB)
    digest = RegistryClient(upstream.url).push_blob(repo, data)
    path = f"/v2/{PREFIX}/{repo}/blobs/{digest}"
    start = threading.Barrier(8)

    def fetch(_: int) -> tuple[int, str, int]:
        session = requests.Session()
        start.wait()
        r = session.get(f"{mirror.url}{path}", timeout=120)
        return r.status_code, digest_of(r.content), len(r.content)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch, range(8)))
    assert results == [(200, digest, len(data))] * 8
    wait_until(lambda: upstream_requests(upstream, "GET", f"/v2/{repo}/blobs/{digest}"), "the upstream's access line")
    assert len(upstream_requests(upstream, "GET", f"/v2/{repo}/blobs/{digest}")) == 1
    assert stored_blobs(mirror) == {digest}
    assert leftover_uploads(mirror) == []
    hits = mirror_metrics(mirror).get((PREFIX, "blob", "hit"), 0)  # clients that came late read the stored blob
    # served from the cache from now on
    r = requests.get(f"{mirror.url}{path}", headers={"Range": "bytes=-4096"}, timeout=60)
    assert r.status_code == 206 and r.content == data[-4096:]
    assert len(upstream_requests(upstream, "GET", f"/v2/{repo}/blobs/{digest}")) == 1
    metrics = mirror_metrics(mirror)
    assert metrics[(PREFIX, "blob", "miss")] == 1
    assert metrics[(PREFIX, "blob", "hit")] == hits + 1


def test_client_hanging_up_mid_blob_does_not_waste_the_fill(make_registry: MakeRegistry) -> None:
    upstream = make_registry()
    mirror = mirror_of(make_registry, prefixed(upstream))
    repo = unique_repo("team")
    # more than the mirror holds back for one slow client (besides what the sockets buffer)
    data = os.urandom(SUBSCRIBER_CHUNKS * READ_CHUNK + 32 * MiB)
    digest = RegistryClient(upstream.url).push_blob(repo, data)
    path = f"/v2/{PREFIX}/{repo}/blobs/{digest}"

    r = requests.get(f"{mirror.url}{path}", stream=True, timeout=60)
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(data)
    first = r.raw.read(64 * 1024)
    assert first == data[:len(first)] and first
    time.sleep(1)  # the fill moves on until this reader's backlog is full, then waits for it
    # streamed as it arrives: this client has its first bytes, the fill is not done
    assert digest not in stored_blobs(mirror)
    r.close()

    wait_until(lambda: digest in stored_blobs(mirror), "the fill to be committed")
    r = requests.get(f"{mirror.url}{path}", timeout=60)
    assert r.status_code == 200 and r.content == data
    assert len(upstream_requests(upstream, "GET", f"/v2/{repo}/blobs/{digest}")) == 1
    assert leftover_uploads(mirror) == []


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_blob_that_does_not_match_its_digest_is_not_stored(make_registry: MakeRegistry, damage: str) -> None:
    upstream = make_registry()
    mirror = mirror_of(make_registry, prefixed(upstream))
    repo = unique_repo("team")
    data = os.urandom(3 * MiB)
    digest = RegistryClient(upstream.url).push_blob(repo, data)
    stored = blob_file(upstream.root, digest)
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]) if damage == "corrupt" else data[:MiB])
    upstream.stop()  # damaged at rest: a fresh process serves the damaged file as it is (the pushing one
    upstream.start()  # remembers the size it was pushed with)
    path = f"/v2/{PREFIX}/{repo}/blobs/{digest}"

    for _ in range(2):  # a failed fill is not remembered as done: the next client tries again, and fails again
        try:
            r = requests.get(f"{mirror.url}{path}", timeout=60)
        except requests.exceptions.RequestException:
            pass  # the streamed body was cut short
        else:
            # never the damaged blob, whole, as if it were right
            assert_error(r, 503, "UNAVAILABLE")  # the upstream's fault, not the client's
    assert stored_blobs(mirror) == set()
    assert leftover_uploads(mirror) == []
    wait_until(lambda: len(upstream_requests(upstream, "GET", f"/v2/{repo}/blobs/{digest}")) >= 2,
               "the upstream's access lines")
    assert len(upstream_requests(upstream, "GET", f"/v2/{repo}/blobs/{digest}")) == 2
    assert mirror_metrics(mirror)[(PREFIX, "blob", "error")] == 2
    mirror.logged(f"fill of {digest} from {upstream.url} failed: DIGEST_INVALID")


# --- writes, names, auth, Distribution's mode ---------------------------------------------------------------

def test_local_pushes_and_mirrored_pulls_share_an_endpoint(make_registry: MakeRegistry) -> None:
    upstream = make_registry()
    mirror = mirror_of(make_registry, prefixed(upstream))
    repo = unique_repo("team")
    digest, body = RegistryClient(upstream.url).push_image(repo, "v1")
    client = RegistryClient(mirror.url)

    local = unique_repo("local")
    _, local_body = client.push_image(local, "v1")
    assert get_manifest(client, local, "v1").content == local_body
    assert get_manifest(client, f"{PREFIX}/{repo}", "v1").content == body

    before = sorted(p.relative_to(mirror.root) for p in mirror.root.rglob("*"))
    data = b"never stored"
    for r in (
        client.request("POST", f"/v2/{PREFIX}/{repo}/blobs/uploads/"),
        client.request("POST", f"/v2/{PREFIX}/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, data=data),
        client.push_manifest(f"{PREFIX}/{repo}", "v2", local_body),
        client.request("DELETE", f"/v2/{PREFIX}/{repo}/manifests/{digest}"),
        client.request("POST", f"/v2/{PREFIX}/{repo}/blobs/uploads/", params={"digest": digest_of(data)},
                       data=data, headers={"Content-Type": "application/octet-stream"}),
    ):
        assert_error(r, 405, "UNSUPPORTED")
    assert sorted(p.relative_to(mirror.root) for p in mirror.root.rglob("*")) == before
    assert get_manifest(client, f"{PREFIX}/{repo}", "v1").content == body
    assert get_manifest(RegistryClient(upstream.url), repo, "v2").status_code == 404


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_upstream_with_credentials(make_registry: MakeRegistry, tmp_path: Path, mode: str) -> None:
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {"mirror": "mirror-secret"})
    auth: dict[str, Any] = {"htpasswd": {"realm": "upstream", "path": str(htpasswd)}}
    if mode == "token":
        auth["token"] = {"service": "upstream", "issuer": "upstream-tokens", "builtin": True}
    upstream = make_registry(config={"auth": auth})
    good = mirror_of(make_registry, prefixed(upstream, username="mirror", password="mirror-secret"))
    wrong = mirror_of(make_registry, prefixed(upstream, username="mirror", password="wrong"))
    anonymous = mirror_of(make_registry, prefixed(upstream))
    repo = unique_repo("team")
    digest, body = client_for(upstream.url, auth=("mirror", "mirror-secret")).push_image(repo, "v1")
    layer = json.loads(body)["layers"][0]["digest"]

    # the upstream really asks for credentials, the way this mode does
    challenge = requests.get(f"{upstream.url}/v2/{repo}/manifests/v1", timeout=10)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"].startswith("Basic" if mode == "htpasswd" else "Bearer")

    client = RegistryClient(good.url)
    for reference in ("v1", digest):
        r = get_manifest(client, f"{PREFIX}/{repo}", reference)
        assert r.status_code == 200, r.text
        assert r.content == body
    r = client.request("GET", f"/v2/{PREFIX}/{repo}/blobs/{layer}")
    assert r.status_code == 200 and digest_of(r.content) == layer
    assert layer in stored_blobs(good)

    # refused upstream: the mirror says it cannot reach the content (not that it does not exist)
    for refused in (wrong, anonymous):
        client = RegistryClient(refused.url)
        assert_error(get_manifest(client, f"{PREFIX}/{repo}", "v1"), 503, "UNAVAILABLE")
        assert_error(client.request("GET", f"/v2/{PREFIX}/{repo}/blobs/{layer}"), 503, "UNAVAILABLE")
        assert_error(client.request("HEAD", f"/v2/{PREFIX}/{repo}/blobs/{layer}"), 503, "UNAVAILABLE")
        assert stored_blobs(refused) == set()
        assert "unhandled error" not in refused.log_path.read_text()


def test_distribution_remoteurl_mirrors_every_name_and_refuses_pushes(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    upstream = make_registry()
    mirror = make_registry(config={"proxy": {"remoteurl": upstream.url, "ttl": "1h"}})
    repo = unique_repo("team")
    source = small_image(tmp_path / "src", "v1")
    copy(source.ref("v1"), docker_ref(upstream, repo, "v1"))

    copy(docker_ref(mirror, repo, "v1"), f"oci:{tmp_path / 'out'}:v1")
    assert_same_image(source, "v1", Layout(tmp_path / "out"), "v1")
    digest, body = source.manifest("v1")
    r = get_manifest(RegistryClient(mirror.url), repo, digest)
    assert r.status_code == 200 and r.content == body
    assert set(source.reachable(digest)) <= stored_blobs(mirror)

    client = RegistryClient(mirror.url)
    for name in (repo, unique_repo("local")):
        assert_error(client.request("POST", f"/v2/{name}/blobs/uploads/"), 405, "UNSUPPORTED")
        assert_error(client.push_manifest(name, "v2", body), 405, "UNSUPPORTED")
    metrics = mirror_metrics(mirror)
    assert metrics[(upstream.url, "manifest", "miss")] >= 1
    assert metrics[(upstream.url, "blob", "miss")] == 2


def test_metrics_count_hits_misses_and_errors(make_registry: MakeRegistry) -> None:
    upstream = make_registry()
    mirror = mirror_of(make_registry, prefixed(upstream))
    repo = unique_repo("team")
    digest, body = RegistryClient(upstream.url).push_image(repo, "v1")
    layer = json.loads(body)["layers"][0]["digest"]
    client = RegistryClient(mirror.url)
    assert mirror_metrics(mirror) == {}

    for _ in range(3):
        assert get_manifest(client, f"{PREFIX}/{repo}", "v1").status_code == 200
    assert get_manifest(client, f"{PREFIX}/{repo}", digest).status_code == 200
    for _ in range(2):
        assert client.request("GET", f"/v2/{PREFIX}/{repo}/blobs/{layer}").status_code == 200
    assert_error(get_manifest(client, f"{PREFIX}/{repo}", "no-such-tag"), 404, "MANIFEST_UNKNOWN")
    upstream.stop()
    assert_error(get_manifest(client, f"{PREFIX}/{repo}", "other"), 503, "UNAVAILABLE")

    assert mirror_metrics(mirror) == {
        (PREFIX, "manifest", "miss"): 1,
        (PREFIX, "manifest", "hit"): 3,
        (PREFIX, "manifest", "error"): 1,
        (PREFIX, "blob", "miss"): 1,
        (PREFIX, "blob", "hit"): 1,
    }
