"""One data directory, two registries: what Distribution (Debian's docker-registry 2.8) stored, this
registry serves identically, and the other way round.

Each test fills a directory with one registry, stops it, starts the other on
the same directory, and compares everything a client can read: the catalog,
tag lists, manifests by tag and by digest, and blobs. Distribution 2.8 has no
referrers API, so subjects and referrers stay out of these tests.

One difference is deliberate: Distribution 2.8 lists in its catalog a
repository holding blobs but no manifest (it looks for `_layers`); this
registry, like Distribution 3, lists repositories that hold manifests.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from .client import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RegistryClient, \
    descriptor, digest_of, error_codes
from .oci_layout import ACCEPT_ALL, Layout, assert_same_image, copy, multi_arch_index, small_image
from .servers import MakeRegistry, ReferenceRegistry, RegistryServer

MakeReference = Callable[[Path], ReferenceRegistry]
#: repositories with blobs and no manifest: in Distribution 2.8's catalog, not in ours (see above)
BLOB_ONLY_REPOSITORIES = ["compat/blobs-only"]


def chunked_push_blob(client: RegistryClient, repo: str, data: bytes, chunk: int = 64 * 1024) -> str:
    """POST, PATCH with Content-Range, PUT ?digest=: the upload flow both registries support."""
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        r = client.request("PATCH", location, data=piece, headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{start}-{start + len(piece) - 1}"})
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
    digest = digest_of(data)
    r = client.request("PUT", location, params={"digest": digest}, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest


@dataclass
class Content:
    """What the tests put in a data directory, to be found again by whichever registry serves it."""

    layouts: dict[str, Layout] = field(default_factory=dict)
    #: repo -> {tag: manifest digest}
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    #: repo -> blob digests pushed on their own
    blobs: dict[str, list[str]] = field(default_factory=dict)


def fill(server: RegistryServer | ReferenceRegistry, tmp_path: Path) -> Content:
    """Push OCI and Docker images, an index, extra tags and lone blobs, with skopeo and the raw API."""
    content = Content()
    client = RegistryClient(server.url)
    single = small_image(tmp_path / "single", "v1")
    multi = multi_arch_index(tmp_path / "multi", "multi")
    content.layouts = {"single": single, "multi": multi}

    def push(layout: Layout, tag: str, repo: str, dest_tag: str, *options: str) -> None:
        copy(layout.ref(tag), f"docker://{server.host}/{repo}:{dest_tag}", *options)
        r = client.request("GET", f"/v2/{repo}/manifests/{dest_tag}", headers={"Accept": ACCEPT_ALL})
        assert r.status_code == 200, r.text
        content.tags.setdefault(repo, {})[dest_tag] = r.headers["Docker-Content-Digest"]

    push(single, "v1", "compat/oci", "v1")
    push(single, "v1", "compat/oci", "latest")
    push(single, "v1", "compat/docker", "v2s2", "--format", "v2s2")
    push(multi, "multi", "compat/index", "multi", "--all")
    push(multi, "multi", "compat/nested/deeper/index", "1.0", "--all")
    content.blobs["compat/oci"] = [chunked_push_blob(client, "compat/oci", random.randbytes(200_000))]
    for repo in BLOB_ONLY_REPOSITORIES:
        content.blobs[repo] = [chunked_push_blob(client, repo, random.randbytes(1000))]
    return content


def snapshot(server: RegistryServer | ReferenceRegistry, content: Content) -> dict[str, Any]:
    """Everything a client reads, walked from the catalog and the repositories pushed to.

    Bodies are reduced to their sha256, kept with the headers that matter.
    """
    client = RegistryClient(server.url)
    catalog = client.request("GET", "/v2/_catalog")
    assert catalog.status_code == 200, catalog.text
    seen: dict[str, Any] = {"catalog": catalog.json()}
    for repo in sorted({*catalog.json()["repositories"], *content.tags, *content.blobs}):
        tags = client.request("GET", f"/v2/{repo}/tags/list")
        tag_names = (tags.json()["tags"] or []) if tags.status_code == 200 else []
        # Sorted: Distribution 2.8 lists tags in directory order, this registry in lexical order (as the spec asks).
        listed = {"name": tags.json()["name"], "tags": sorted(tag_names)} if tags.status_code == 200 else None
        seen[f"{repo} tags"] = (tags.status_code, listed or error_codes(tags))
        pending = list(tag_names)
        visited: set[str] = set()
        while pending:
            reference = pending.pop()
            if reference in visited:
                continue
            visited.add(reference)
            r = client.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
            head = client.request("HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
            seen[f"{repo} manifest {reference}"] = _described(r, head)
            if r.status_code != 200:
                continue
            document = json.loads(r.content)
            pending += [child["digest"] for child in document.get("manifests", [])]
            if reference in tag_names:
                pending.append(r.headers["Docker-Content-Digest"])
            if "config" in document:
                for blob in [document["config"], *document["layers"]]:
                    seen[f"{repo} blob {blob['digest']}"] = _blob(client, repo, blob["digest"])
        for digest in content.blobs.get(repo, []):
            seen[f"{repo} blob {digest}"] = _blob(client, repo, digest)
    return seen


def _blob(client: RegistryClient, repo: str, digest: str) -> dict[str, Any]:
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    head = client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    return _described(r, head)


def _described(r: Any, head: Any) -> dict[str, Any]:
    return {
        "status": r.status_code,
        "sha256": hashlib.sha256(r.content).hexdigest(),
        "headers": {k: r.headers.get(k) for k in ("Content-Type", "Content-Length", "Docker-Content-Digest", "ETag")},
        "head": (head.status_code, {k: head.headers.get(k) for k in ("Content-Type", "Content-Length",
                                                                     "Docker-Content-Digest")}),
    }


def assert_content_served(seen: dict[str, Any], content: Content) -> None:
    """The snapshot holds what was pushed, so that two equal snapshots cannot both be empty."""
    for repo, tags in content.tags.items():
        assert repo in seen["catalog"]["repositories"]
        assert sorted(seen[f"{repo} tags"][1]["tags"]) == sorted(tags)
        for tag, digest in tags.items():
            served = seen[f"{repo} manifest {tag}"]
            assert served["status"] == 200
            assert served["headers"]["Docker-Content-Digest"] == digest
            assert seen[f"{repo} manifest {digest}"]["sha256"] == digest.split(":", 1)[1]
    for repo, blobs in content.blobs.items():
        for digest in blobs:
            assert seen[f"{repo} blob {digest}"]["status"] == 200
            assert seen[f"{repo} blob {digest}"]["sha256"] == digest.split(":", 1)[1]
    single_digest = content.layouts["single"].manifest("v1")[0]
    assert content.tags["compat/oci"]["v1"] == single_digest
    assert seen["compat/oci manifest v1"]["headers"]["Content-Type"] == OCI_MANIFEST
    assert seen["compat/docker manifest v2s2"]["headers"]["Content-Type"] == DOCKER_MANIFEST
    assert seen["compat/index manifest multi"]["headers"]["Content-Type"] == OCI_INDEX


def assert_same_snapshots(ours: dict[str, Any], reference: dict[str, Any]) -> None:
    """Equal in every response, but for the blob-only repositories Distribution 2.8 adds to its catalog."""
    ours_catalog, reference_catalog = ours["catalog"]["repositories"], reference["catalog"]["repositories"]
    assert reference_catalog == sorted(ours_catalog + BLOB_ONLY_REPOSITORIES)
    assert {k: v for k, v in ours.items() if k != "catalog"} == {k: v for k, v in reference.items() if k != "catalog"}


def test_reference_data_served_identically(
    make_reference: MakeReference, make_registry: MakeRegistry, tmp_path: Path
) -> None:
    root = tmp_path / "shared"
    reference = make_reference(root)
    content = fill(reference, tmp_path)
    expected = snapshot(reference, content)
    assert_content_served(expected, content)
    reference.stop()

    ours = make_registry(root=root)
    served = snapshot(ours, content)
    assert_same_snapshots(served, expected)
    copy(f"docker://{ours.host}/compat/index:multi", f"oci:{tmp_path / 'pulled'}:multi", "--all")
    assert_same_image(content.layouts["multi"], "multi", Layout(tmp_path / "pulled"), "multi")


def test_our_data_served_identically_by_reference(
    make_reference: MakeReference, make_registry: MakeRegistry, tmp_path: Path
) -> None:
    root = tmp_path / "shared"
    ours = make_registry(root=root)
    content = fill(ours, tmp_path)
    expected = snapshot(ours, content)
    assert_content_served(expected, content)
    ours.stop()

    reference = make_reference(root)
    served = snapshot(reference, content)
    assert_same_snapshots(expected, served)
    pulls = [("single", "v1", "compat/oci:latest"), ("multi", "multi", "compat/index:multi")]
    for name, tag, source in pulls:
        out = tmp_path / f"pulled-{name}"
        copy(f"docker://{reference.host}/{source}", f"oci:{out}:{tag}", "--all")
        assert_same_image(content.layouts[name], tag, Layout(out), tag)


def test_upload_started_by_reference_finished_by_us(
    make_reference: MakeReference, make_registry: MakeRegistry, tmp_path: Path
) -> None:
    """An upload Distribution left half done (its `_uploads/<id>/` with hashstates) is resumed here."""
    root = tmp_path / "shared"
    repo = "compat/upload"
    data = random.randbytes(300_000)
    digest = digest_of(data)
    reference = make_reference(root)
    client = RegistryClient(reference.url)
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["Location"]
    for start, end in [(0, 100_000), (100_000, 180_000)]:
        r = client.request("PATCH", location, data=data[start:end], headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{start}-{end - 1}"})
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
    assert r.headers["Range"] == "0-179999"
    reference.stop()

    ours = make_registry(root=root)
    client = RegistryClient(ours.url)
    parts = urlsplit(location)
    path = f"{parts.path}?{parts.query}" if parts.query else parts.path  # Distribution's _state is ignored
    r = client.request("GET", path)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-179999"
    r = client.request("PATCH", path, data=data[180_000:], headers={
        "Content-Type": "application/octet-stream", "Content-Range": f"180000-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    r = client.request("PUT", path, params={"digest": digest})
    assert r.status_code == 201, r.text
    assert client.request("GET", f"/v2/{repo}/blobs/{digest}").content == data
    ours.stop()

    # Back on Distribution, the blob we committed is a blob like any other.
    reference = make_reference(root)
    r = RegistryClient(reference.url).request("GET", f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Docker-Content-Digest"] == digest


def test_reference_serves_a_manifest_whose_pushed_type_we_keep(
    make_reference: MakeReference, make_registry: MakeRegistry, tmp_path: Path
) -> None:
    """A manifest without mediaType pushed with a Docker Content-Type: the file this registry keeps its
    type in (beside the revision link) does not disturb Distribution, which serves the same bytes."""
    root = tmp_path / "shared"
    ours = make_registry(root=root)
    client = RegistryClient(ours.url)
    repo = "compat/typed"
    config, layer = b'{"architecture": "amd64", "os": "linux"}', random.randbytes(2000)
    client.push_blob(repo, config)
    client.push_blob(repo, layer)
    body = json.dumps({"schemaVersion": 2, "config": descriptor(DOCKER_CONFIG, config),
                       "layers": [descriptor(DOCKER_LAYER, layer)]}).encode()
    assert client.push_manifest(repo, "v1", body, DOCKER_MANIFEST).status_code == 201
    ours.stop()

    reference = RegistryClient(make_reference(root).url)
    for path in (f"/v2/{repo}/manifests/v1", f"/v2/{repo}/manifests/{digest_of(body)}"):
        r = reference.request("GET", path, headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"})
        assert r.status_code == 200 and r.content == body, r.text
    assert reference.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]
    assert repo in reference.request("GET", "/v2/_catalog").json()["repositories"]
