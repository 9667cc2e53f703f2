"""skopeo, a real client, against the registry: images built on disk go in and come back out unchanged.

skopeo talks https first; with TLS verification off it falls back to plain
http, which is how these tests reach the registry on its loopback port.
Every test runs on the filesystem and on S3, where skopeo pulls each blob by
following the registry's 307 to a presigned URL of the bucket.
"""

from __future__ import annotations

import json
from pathlib import Path

import requests

from .client import (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RegistryClient,
                     digest_of, fetch_blob, unique_repo)
from .oci_layout import (ACCEPT_ALL, Layout, assert_same_image, copy, large_image, multi_arch_index, skopeo,
                         skopeo_may_fail, small_image)
from .servers import RegistryServer

def docker_ref(registry: RegistryServer, repo: str, tag: str) -> str:
    return f"docker://{registry.host}/{repo}:{tag}"


def get_manifest(client: RegistryClient, repo: str, reference: str) -> requests.Response:
    r = client.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
    assert r.status_code == 200, r.text
    return r


def assert_blobs_served(client: RegistryClient, repo: str, source: Layout, blobs: dict[str, int]) -> None:
    """Every blob reachable from a manifest is served with the source layout's bytes."""
    for digest, size in blobs.items():
        if _is_manifest(source, digest):
            r = client.request("GET", f"/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT_ALL})
        else:
            r = fetch_blob(client, repo, digest)
        assert r.status_code == 200, (digest, r.text)
        assert len(r.content) == size
        assert digest_of(r.content) == digest
        assert r.content == source.read_blob(digest)


def _is_manifest(layout: Layout, digest: str) -> bool:
    try:
        document = json.loads(layout.read_blob(digest))
    except ValueError:
        return False
    return isinstance(document, dict) and ("layers" in document or "manifests" in document)


def test_small_image_round_trip(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    source = small_image(tmp_path / "src", "v1")
    repo = unique_repo("skopeo")
    copy(source.ref("v1"), docker_ref(registry, repo, "v1"))

    digest, body = source.manifest("v1")
    r = get_manifest(client, repo, "v1")
    assert r.content == body
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Type"] == OCI_MANIFEST
    assert_blobs_served(client, repo, source, source.reachable(digest))
    assert client.request("GET", f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["v1"]}

    copy(docker_ref(registry, repo, "v1"), f"oci:{tmp_path / 'out'}:pulled")
    assert_same_image(source, "v1", Layout(tmp_path / "out"), "pulled")


def test_inspect_raw_is_the_pushed_manifest(registry: RegistryServer, tmp_path: Path) -> None:
    source = small_image(tmp_path / "src", "v1")
    repo = unique_repo("skopeo")
    copy(source.ref("v1"), docker_ref(registry, repo, "v1"))
    digest, body = source.manifest("v1")

    raw = skopeo("inspect", "--raw", "--tls-verify=false", docker_ref(registry, repo, "v1"))
    assert raw.stdout.encode() == body
    details = json.loads(skopeo("inspect", "--tls-verify=false", docker_ref(registry, repo, "v1")).stdout)
    manifest = json.loads(body)
    assert details["Digest"] == digest
    assert details["Architecture"] == "amd64"
    assert details["Layers"] == [layer["digest"] for layer in manifest["layers"]]


def test_list_tags(registry: RegistryServer, tmp_path: Path) -> None:
    source = small_image(tmp_path / "src", "v1")
    repo = unique_repo("skopeo")
    for tag in ("b-tag", "a-tag", "1.0"):
        copy(source.ref("v1"), docker_ref(registry, repo, tag))
    listed = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry.host}/{repo}").stdout)
    assert sorted(listed["Tags"]) == ["1.0", "a-tag", "b-tag"]


def test_multi_arch_index_with_all(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    source = multi_arch_index(tmp_path / "src", "multi")
    repo = unique_repo("skopeo")
    copy(source.ref("multi"), docker_ref(registry, repo, "multi"), "--all")

    digest, body = source.manifest("multi")
    r = get_manifest(client, repo, "multi")
    assert r.content == body
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.headers["Docker-Content-Digest"] == digest
    children = json.loads(body)["manifests"]
    assert [c["platform"]["architecture"] for c in children] == ["amd64", "arm64"]
    for child in children:
        child_response = get_manifest(client, repo, child["digest"])
        assert child_response.headers["Content-Type"] == OCI_MANIFEST
        assert child_response.content == source.read_blob(child["digest"])
    assert_blobs_served(client, repo, source, source.reachable(digest))
    raw = skopeo("inspect", "--raw", "--tls-verify=false", docker_ref(registry, repo, "multi"))
    assert raw.stdout.encode() == body

    copy(docker_ref(registry, repo, "multi"), f"oci:{tmp_path / 'out'}:multi", "--all")
    assert_same_image(source, "multi", Layout(tmp_path / "out"), "multi")


def test_large_layer_round_trip(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    source = large_image(tmp_path / "src", "big")
    repo = unique_repo("skopeo")
    copy(source.ref("big"), docker_ref(registry, repo, "big"))

    digest, body = source.manifest("big")
    big = json.loads(body)["layers"][0]
    assert big["size"] > 100 * 2**20
    r = client.request("HEAD", f"/v2/{repo}/blobs/{big['digest']}")
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == big["size"]
    assert r.headers["Docker-Content-Digest"] == big["digest"]
    tail = fetch_blob(client, repo, big["digest"], headers={"Range": "bytes=-4096"})
    assert tail.status_code == 206
    with open(source.blob_path(big["digest"]), "rb") as f:
        f.seek(-4096, 2)
        assert tail.content == f.read()

    copy(docker_ref(registry, repo, "big"), f"oci:{tmp_path / 'out'}:big")
    assert_same_image(source, "big", Layout(tmp_path / "out"), "big")


def test_docker_schema2(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    source = small_image(tmp_path / "src", "v1")
    repo = unique_repo("skopeo")
    copy(source.ref("v1"), docker_ref(registry, repo, "v2s2"), "--format", "v2s2")

    r = get_manifest(client, repo, "v2s2")
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    assert r.headers["Docker-Content-Digest"] == digest_of(r.content)
    manifest = json.loads(r.content)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert {layer["mediaType"] for layer in manifest["layers"]} == {DOCKER_LAYER}
    # The conversion rewrites the manifest only: config and layers keep their bytes and digests.
    oci = json.loads(source.manifest("v1")[1])
    assert manifest["config"]["digest"] == oci["config"]["digest"]
    assert [layer["digest"] for layer in manifest["layers"]] == [layer["digest"] for layer in oci["layers"]]
    by_digest = get_manifest(client, repo, digest_of(r.content))
    assert by_digest.headers["Content-Type"] == DOCKER_MANIFEST
    assert by_digest.content == r.content
    head = client.request("HEAD", f"/v2/{repo}/manifests/v2s2", headers={"Accept": DOCKER_MANIFEST})
    assert head.headers["Content-Type"] == DOCKER_MANIFEST
    assert int(head.headers["Content-Length"]) == len(r.content)

    raw = skopeo("inspect", "--raw", "--tls-verify=false", docker_ref(registry, repo, "v2s2"))
    assert raw.stdout.encode() == r.content
    out = tmp_path / "dir"
    copy(docker_ref(registry, repo, "v2s2"), f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == r.content
    for blob in [oci["config"], *oci["layers"]]:
        pulled = out / blob["digest"].split(":", 1)[1]
        assert pulled.read_bytes() == source.read_blob(blob["digest"])


def test_copy_between_repositories_mounts_layers(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    source = small_image(tmp_path / "src", "v1")
    first, second = unique_repo("skopeo"), unique_repo("skopeo")
    copy(source.ref("v1"), docker_ref(registry, first, "v1"))
    # skopeo remembers where it pushed the layer, so it asks the registry to mount it from there.
    result = copy(docker_ref(registry, first, "v1"), docker_ref(registry, second, "copied"))

    digest, body = source.manifest("v1")
    layer = json.loads(body)["layers"][0]["digest"]
    mount_query = f"from={first.replace('/', '%2F')}&mount={layer.replace(':', '%3A')}"
    assert f"POST http://{registry.host}/v2/{second}/blobs/uploads/?{mount_query}" in result.stderr
    assert f"digest={layer.replace(':', '%3A')}" not in result.stderr, "the layer was uploaded, not mounted"
    r = get_manifest(client, second, "copied")
    assert r.content == body
    assert r.headers["Docker-Content-Digest"] == digest
    assert_blobs_served(client, second, source, source.reachable(digest))
    assert get_manifest(client, first, "v1").content == body


def test_skopeo_delete(registry: RegistryServer, client: RegistryClient, tmp_path: Path) -> None:
    source = small_image(tmp_path / "src", "v1")
    repo = unique_repo("skopeo")
    copy(source.ref("v1"), docker_ref(registry, repo, "v1"))
    copy(source.ref("v1"), docker_ref(registry, repo, "also"))
    other = small_image(tmp_path / "other", "v1")
    copy(other.ref("v1"), docker_ref(registry, repo, "other"))
    digest, _ = source.manifest("v1")

    skopeo("delete", "--tls-verify=false", docker_ref(registry, repo, "v1"))
    # skopeo deletes by digest: the manifest goes, and with it every tag on it.
    for reference in ("v1", "also", digest):
        r = client.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
        assert r.status_code == 404, reference
    assert client.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["other"]
    assert get_manifest(client, repo, "other").headers["Docker-Content-Digest"] == other.manifest("v1")[0]
    gone = skopeo_may_fail("inspect", "--raw", "--tls-verify=false", docker_ref(registry, repo, "also"))
    assert gone.returncode != 0
    assert "manifest unknown" in gone.stderr.lower()
