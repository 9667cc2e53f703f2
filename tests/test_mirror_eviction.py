"""The mirror's cache eviction (proxy.cache): by size, oldest first; by age; never data another repository links.

A mirror process sits in front of an upstream that is a second instance of this
registry. Images are pulled through the mirror; the test then waits for the
background eviction (a short interval) and checks the mirror's store, what the
mirror still serves, what it has to fetch again (the upstream's access log shows
every fetch), and /metrics. Age is tested by setting the mtimes of the mirror's
link files back, since those are the times eviction reads.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from registry.config import parse_size

from .client import (
    OCI_MANIFEST,
    Image,
    RegistryClient,
    digest_of,
    unique_repo,
)
from .engines import wait_until
from .servers import MakeRegistry, RegistryServer
from .store_view import V2, blob_path, layer_link_path

PREFIX = "up"
INTERVAL = "200ms"
TWO_HOURS = 7200.0


# --- helpers ---------------------------------------------------------------------------------------


def pull(client: RegistryClient, repo: str, tag: str, image: Image) -> None:
    """Pull as a client does, manifest then blobs, checking every byte against the image."""
    r = client.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, r.text
    assert r.content == image.manifest
    assert r.headers["Docker-Content-Digest"] == image.digest
    for digest, data in image.blobs.items():
        b = client.request("GET", f"/v2/{repo}/blobs/{digest}", allow_redirects=True)
        assert b.status_code == 200, b.text
        assert b.content == data


def mirror_config(upstream: RegistryServer, **cache: Any) -> dict[str, Any]:
    return {"proxy": {"upstreams": [{"prefix": PREFIX, "remoteurl": upstream.url, "ttl": "1h"}],
                      "cache": {"interval": INTERVAL, **cache}}}


def tag_link_path(repo: str, tag: str) -> str:
    return f"{V2}/repositories/{repo}/_manifests/tags/{tag}/current/link"


def revision_link_path(repo: str, digest: str) -> str:
    algorithm, hex_ = digest.split(":")
    return f"{V2}/repositories/{repo}/_manifests/revisions/{algorithm}/{hex_}/link"


def image_links(repo: str, tag: str, image: Image) -> list[str]:
    """Every link file a pull of the image leaves in a repository."""
    return [tag_link_path(repo, tag), revision_link_path(repo, image.digest),
            *(layer_link_path(repo, d) for d in image.blobs)]


def image_data(image: Image) -> list[str]:
    return [blob_path(d) for d in [image.digest, *image.blobs]]


def backdate(server: RegistryServer, paths: list[str], seconds: float) -> None:
    """Make files of a filesystem store look written `seconds` ago."""
    then = time.time() - seconds
    for path in paths:
        os.utime(server.root / path, (then, then))


def metrics(server: RegistryServer) -> dict[str, float]:
    """Every sample of /metrics, keyed `name` or `name{label=value,...}`."""
    r = requests.get(f"{server.url}/metrics", timeout=10)
    assert r.status_code == 200
    found = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def next_run(server: RegistryServer) -> dict[str, float]:
    """The metrics once an eviction run has started and completed after this call."""
    runs = metrics(server)["registry_mirror_eviction_runs_total"]
    wait_until(lambda: metrics(server)["registry_mirror_eviction_runs_total"] >= runs + 2, "two eviction runs")
    return metrics(server)


def fetches(upstream: RegistryServer, path: str, expected: int) -> int:
    """GETs of `path` the upstream answered, from its access log. A line is written after its answer, so the
    count is read again for a while when it is short of `expected`."""
    pattern = re.compile(rf'"GET {re.escape(path)} HTTP/1\.1" 200 ')
    deadline = time.monotonic() + 10
    while True:
        count = sum(1 for line in upstream.log_path.read_text().splitlines() if pattern.search(line))
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def big_parts(repo: str, tag: str, image: Image) -> list[str]:
    """The links and data of an image's tag, manifest and layers (not its config)."""
    layers = [digest_of(layer) for layer in image.layers]
    return [tag_link_path(repo, tag), revision_link_path(repo, image.digest), blob_path(image.digest),
            *(layer_link_path(repo, d) for d in layers), *(blob_path(d) for d in layers)]


def linked_blobs(server: RegistryServer, repo: str, image: Image) -> dict[str, bytes]:
    """The image's blobs the repository still links."""
    return {d: b for d, b in image.blobs.items() if server.store.exists(layer_link_path(repo, d))}


def gone(server: RegistryServer, paths: list[str]) -> bool:
    return not any(server.store.exists(p) for p in paths)


def present(server: RegistryServer, paths: list[str]) -> bool:
    return all(server.store.exists(p) for p in paths)


# --- tests -----------------------------------------------------------------------------------------

def test_over_maxsize_the_oldest_image_is_evicted_and_fetched_again(make_registry: MakeRegistry,
                                                                    backend_name: str) -> None:
    upstream = make_registry()
    first, second = Image([os.urandom(30_000)]), Image([os.urandom(30_000)])
    remote = unique_repo()
    first.push(RegistryClient(upstream.url), remote, "first")
    second.push(RegistryClient(upstream.url), remote, "second")
    # room for one image, not two
    assert second.size < 45_000 < first.size + second.size and first.size < 45_000
    mirror = make_registry(config=mirror_config(upstream, maxsize="45KB"), backend=backend_name)
    client, repo = RegistryClient(mirror.url), f"{PREFIX}/{remote}"

    pull(client, repo, "first", first)
    time.sleep(1.1)  # S3 keeps mtimes in whole seconds
    pull(client, repo, "second", second)

    # the first image's manifest and layer go; its small config may stay when it is no older than
    # the layer (S3's mtimes are whole seconds), since the cache is under maxsize without them
    evicted_first = big_parts(repo, "first", first)
    wait_until(lambda: gone(mirror, evicted_first), "the first image to go")
    assert present(mirror, image_links(repo, "second", second) + image_data(second))
    after = next_run(mirror)
    kept = linked_blobs(mirror, repo, first)
    assert set(kept) <= {digest_of(first.config)}
    freed = first.size - sum(map(len, kept.values()))
    evicted = 1 + len(first.blobs) - len(kept)  # the tag with its manifest, and blobs
    assert after["registry_mirror_cache_bytes"] == second.size + first.size - freed
    assert after["registry_mirror_evicted_bytes_total{reason=size}"] == freed
    assert after["registry_mirror_evicted_total{reason=size}"] == evicted
    assert after["registry_mirror_deleted_bytes_total"] == freed
    assert after["registry_mirror_evicted_total{reason=age}"] == 0
    assert gone(mirror, evicted_first + [blob_path(d) for d in first.blobs if d not in kept])
    mirror.logged(f"evicted {evicted} entries (0 by age, {evicted} by size), {freed} bytes left the cache, "
                  f"{freed} bytes of unlinked data deleted; the cache holds {second.size + first.size - freed} bytes")

    # the second image is still served from the cache; the first is fetched from the upstream again
    pull(client, repo, "second", second)
    assert all(fetches(upstream, f"/v2/{remote}/blobs/{d}", 1) == 1 for d in second.blobs)
    pull(client, repo, "first", first)
    assert fetches(upstream, f"/v2/{remote}/manifests/first", 2) == 2
    for d in first.blobs:
        times = 1 if d in kept else 2
        assert fetches(upstream, f"/v2/{remote}/blobs/{d}", times) == times
    assert all(fetches(upstream, f"/v2/{remote}/blobs/{d}", 1) == 1 for d in second.blobs)

    # now the second image is the oldest one (with the first's config, if that stayed)
    wait_until(lambda: gone(mirror, big_parts(repo, "second", second)), "the second image to go")
    assert present(mirror, big_parts(repo, "first", first))
    cached = len(first.manifest) + sum(map(len, {**linked_blobs(mirror, repo, first),
                                                  **linked_blobs(mirror, repo, second)}.values()))
    assert next_run(mirror)["registry_mirror_cache_bytes"] == cached <= 45_000


def test_content_fetched_longer_ago_than_maxage_is_evicted(make_registry: MakeRegistry) -> None:
    upstream = make_registry()
    old, recent = Image([os.urandom(5000)]), Image([os.urandom(5000), os.urandom(7000)])
    remote = unique_repo()
    old.push(RegistryClient(upstream.url), remote, "old")
    recent.push(RegistryClient(upstream.url), remote, "recent")
    mirror = make_registry(config=mirror_config(upstream, maxage="1h"))
    client, repo = RegistryClient(mirror.url), f"{PREFIX}/{remote}"
    pull(client, repo, "old", old)
    pull(client, repo, "recent", recent)
    before = next_run(mirror)
    assert before["registry_mirror_cache_bytes"] == old.size + recent.size
    assert before["registry_mirror_evicted_total{reason=age}"] == 0

    # everything of `old`, and one layer of `recent`, was fetched two hours ago
    stale_layer = digest_of(recent.layers[0])
    backdate(mirror, image_links(repo, "old", old) + [layer_link_path(repo, stale_layer)], TWO_HOURS)
    stale = [layer_link_path(repo, stale_layer), blob_path(stale_layer)]
    wait_until(lambda: gone(mirror, image_links(repo, "old", old) + image_data(old) + stale), "old content to go")
    assert present(mirror, [p for p in image_links(repo, "recent", recent) + image_data(recent) if p not in stale])
    after = next_run(mirror)
    assert after["registry_mirror_evicted_total{reason=age}"] == 1 + len(old.blobs) + 1
    assert after["registry_mirror_evicted_bytes_total{reason=age}"] == old.size + len(recent.layers[0])
    assert after["registry_mirror_cache_bytes"] == recent.size - len(recent.layers[0])
    assert after["registry_mirror_evicted_total{reason=size}"] == 0

    # a pull of `recent` fetches only the evicted layer again (the tag is fresh, the rest cached)
    pull(client, repo, "recent", recent)
    assert fetches(upstream, f"/v2/{remote}/blobs/{stale_layer}", 2) == 2
    assert fetches(upstream, f"/v2/{remote}/blobs/{digest_of(recent.layers[1])}", 1) == 1
    assert fetches(upstream, f"/v2/{remote}/manifests/recent", 1) == 1
    pull(client, repo, "old", old)
    assert fetches(upstream, f"/v2/{remote}/manifests/old", 2) == 2
    assert next_run(mirror)["registry_mirror_cache_bytes"] == old.size + recent.size


def test_data_a_local_repository_links_is_never_deleted(make_registry: MakeRegistry) -> None:
    """The mirror also holds local repositories: their blobs and manifests outlive the mirrored copies."""
    upstream = make_registry()
    shared_layer, own_layer = os.urandom(8000), os.urandom(9000)
    mixed = Image([shared_layer, own_layer])  # one layer also pushed to a local repository
    twin = Image([os.urandom(6000)])  # the very same image also pushed to a local repository
    remote = unique_repo()
    mixed.push(RegistryClient(upstream.url), remote, "mixed")
    twin.push(RegistryClient(upstream.url), remote, "twin")
    mirror = make_registry(config=mirror_config(upstream, maxage="1h"))
    client, repo = RegistryClient(mirror.url), f"{PREFIX}/{remote}"
    local, copy = unique_repo("local"), unique_repo("local")
    local_image = Image([shared_layer])
    local_image.push(client, local, "v1")
    twin.push(client, copy, "v1")

    pull(client, repo, "mixed", mixed)
    pull(client, repo, "twin", twin)
    # the mirror fetched shared content once and linked it; its bytes are stored once
    assert fetches(upstream, f"/v2/{remote}/blobs/{digest_of(shared_layer)}", 1) == 1
    backdate(mirror, image_links(repo, "mixed", mixed) + image_links(repo, "twin", twin), TWO_HOURS)

    only_mirrored = [blob_path(mixed.digest), blob_path(digest_of(mixed.config)), blob_path(digest_of(own_layer))]
    wait_until(lambda: gone(mirror, only_mirrored), "the mirrored-only data to be deleted")
    assert gone(mirror, image_links(repo, "mixed", mixed) + image_links(repo, "twin", twin))
    assert present(mirror, [blob_path(digest_of(shared_layer))] + image_data(twin))
    after = next_run(mirror)
    assert after["registry_mirror_deleted_bytes_total"] == mixed.size - len(shared_layer)
    stored = mirror.store.keys()
    assert not any(digest_of(own_layer).split(":")[1] in key for key in stored)  # nowhere in the store
    assert after["registry_mirror_evicted_bytes_total{reason=age}"] == mixed.size + twin.size
    assert after["registry_mirror_cache_bytes"] == 0

    # the local repositories pull as before, every byte
    pull(client, local, "v1", local_image)
    pull(client, copy, "v1", twin)
    r = client.request("GET", f"/v2/{copy}/manifests/{twin.digest}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == twin.manifest
    # and the mirrored name is filled again from the upstream
    pull(client, repo, "mixed", mixed)
    assert fetches(upstream, f"/v2/{remote}/blobs/{digest_of(shared_layer)}", 2) == 2


def test_data_left_aside_by_an_interrupted_eviction_is_put_back_when_linked(make_registry: MakeRegistry) -> None:
    """Eviction moves data aside before it deletes it; a run cut short (a crash) leaves it there.
    The next run puts back what a repository links and deletes only the rest."""
    upstream = make_registry()
    mirror = make_registry(config=mirror_config(upstream, maxage="1h"))
    client, local = RegistryClient(mirror.url), unique_repo("local")
    image = Image([os.urandom(2000)])
    image.push(client, local, "v1")
    linked, orphan = digest_of(image.layers[0]), digest_of(os.urandom(100))
    aside = mirror.root / f"{V2}/evicting/sha256"
    aside.mkdir(parents=True)
    (mirror.root / blob_path(linked)).rename(aside / linked.split(":")[1])
    (aside / orphan.split(":")[1]).write_bytes(b"x" * 100)

    wait_until(lambda: present(mirror, [blob_path(linked)]) and not any(aside.iterdir()), "the aside data to be settled")
    pull(client, local, "v1", image)
    assert not mirror.store.exists(blob_path(orphan))
    assert next_run(mirror)["registry_mirror_deleted_bytes_total"] == 100


def test_distribution_mode_caches_every_repository(make_registry: MakeRegistry) -> None:
    """With proxy.remoteurl every repository is mirrored, so all of them count and are evicted."""
    upstream = make_registry()
    one, two = Image([os.urandom(4000)]), Image([os.urandom(4000)])
    remote_one, remote_two = unique_repo(), unique_repo()
    one.push(RegistryClient(upstream.url), remote_one, "latest")
    two.push(RegistryClient(upstream.url), remote_two, "latest")
    mirror = make_registry(config={"proxy": {"remoteurl": upstream.url,
                                             "cache": {"maxage": "30m", "interval": INTERVAL}}})
    client = RegistryClient(mirror.url)
    pull(client, remote_one, "latest", one)
    pull(client, remote_two, "latest", two)
    assert next_run(mirror)["registry_mirror_cache_bytes"] == one.size + two.size

    backdate(mirror, image_links(remote_two, "latest", two), 3600)
    wait_until(lambda: gone(mirror, image_links(remote_two, "latest", two) + image_data(two)), "the image to go")
    assert present(mirror, image_links(remote_one, "latest", one) + image_data(one))
    assert next_run(mirror)["registry_mirror_cache_bytes"] == one.size
    pull(client, remote_two, "latest", two)


def test_eviction_runs_only_with_a_cache_section(make_registry: MakeRegistry) -> None:
    """Without proxy.cache nothing is evicted, however old: the cache grows as Distribution's does."""
    upstream = make_registry()
    image, remote = Image([os.urandom(3000)]), unique_repo()
    image.push(RegistryClient(upstream.url), remote, "v1")
    mirror = make_registry(config={"proxy": {"upstreams": [{"prefix": PREFIX, "remoteurl": upstream.url}]}})
    repo = f"{PREFIX}/{remote}"
    pull(RegistryClient(mirror.url), repo, "v1", image)
    backdate(mirror, image_links(repo, "v1", image), 10 * 365 * 86400)
    time.sleep(1)
    assert present(mirror, image_links(repo, "v1", image) + image_data(image))
    assert metrics(mirror)["registry_mirror_eviction_runs_total"] == 0


@pytest.mark.parametrize("text, size", [
    ("500MB", 500 * 10**6), ("50GB", 50 * 10**9), ("50GiB", 50 * 2**30), ("1.5KiB", 1536), ("45KB", 45_000),
    ("2tb", 2 * 10**12), (1234, 1234), ("1234", 1234), ("10B", 10), ("3 MiB", 3 * 2**20),
])
def test_cache_sizes_read_like_docker(text: str | int, size: int) -> None:
    assert parse_size(text) == size
