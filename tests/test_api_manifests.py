"""Manifest PUT, GET, HEAD and DELETE over a real socket: what a client pushing and pulling images sees."""

from __future__ import annotations

import http.client
import json
import uuid
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest

from .client import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    descriptor,
    digest_of,
    assert_error,
    unique_repo,
)
from .servers import RegistryServer

MAX_MANIFEST = 4 * 1024 * 1024
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
NONDISTRIBUTABLE_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def image_manifest(client: RegistryClient, repo: str, media_type: str = OCI_MANIFEST,
                   **fields: Any) -> dict[str, Any]:
    """A manifest whose config and layer are pushed to repo, not itself pushed."""
    docker = media_type == DOCKER_MANIFEST
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex}).encode()
    layer = uuid.uuid4().bytes * 64
    client.push_blob(repo, config)
    client.push_blob(repo, layer)
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer)],
        **fields,
    }


def index_manifest(client: RegistryClient, repo: str, media_type: str = OCI_INDEX) -> dict[str, Any]:
    """An index (or Docker list) over two images pushed to repo by digest."""
    child_type = DOCKER_MANIFEST if media_type == DOCKER_LIST else OCI_MANIFEST
    children = []
    for arch in ("amd64", "arm64"):
        body = json.dumps(image_manifest(client, repo, child_type)).encode()
        r = client.push_manifest(repo, digest_of(body), body, child_type)
        assert r.status_code == 201, r.text
        children.append(descriptor(child_type, body, platform={"architecture": arch, "os": "linux"}))
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": children}


def raw_get(url: str, path: str, headers: list[tuple[str, str]], method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A request with repeated header lines, which `requests` cannot send."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


KINDS: dict[str, Callable[[RegistryClient, str], dict[str, Any]]] = {
    OCI_MANIFEST: lambda c, repo: image_manifest(c, repo, OCI_MANIFEST),
    DOCKER_MANIFEST: lambda c, repo: image_manifest(c, repo, DOCKER_MANIFEST),
    OCI_INDEX: lambda c, repo: index_manifest(c, repo, OCI_INDEX),
    DOCKER_LIST: lambda c, repo: index_manifest(c, repo, DOCKER_LIST),
}


# --- push -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("media_type", list(KINDS))
def test_push_each_manifest_kind(client: RegistryClient, media_type: str, by: str) -> None:
    """All four schema2-era manifest kinds are accepted by tag and by digest, and read back as pushed."""
    repo = unique_repo()
    body = json.dumps(KINDS[media_type](client, repo)).encode()
    digest = digest_of(body)
    reference = "v1" if by == "tag" else digest
    r = client.push_manifest(repo, reference, body, media_type)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/v2/{repo}/manifests/{digest}")
    assert "OCI-Subject" not in r.headers

    for ref in {reference, digest}:
        got = client.request("GET", f"/v2/{repo}/manifests/{ref}")
        assert got.status_code == 200
        assert got.content == body
        assert got.headers["Content-Type"] == media_type
        assert got.headers["Docker-Content-Digest"] == digest
    listed = client.request("GET", f"/v2/{repo}/tags/list").json()["tags"]
    assert listed == (["v1"] if by == "tag" else [])


def test_bytes_stored_exactly_as_sent(client: RegistryClient) -> None:
    """Digests are over the pushed bytes, so the registry must never re-serialize a manifest."""
    repo = unique_repo()
    doc = image_manifest(client, repo)
    layer, config = doc["layers"][0], doc["config"]
    body = (
        '\n\t{  "layers" :[ {"size":%d ,"digest":"%s","mediaType":"%s"} ] ,\r\n'
        '"config":{"digest":"%s","mediaType":"%s","size":%d},\n'
        '  "annotations": {"z": "\\u00e9t\\u00e9", "a": "été", "k" :"1.50e0" },'
        '"schemaVersion":2, "mediaType"  :  "%s"   }\n\n'
    ) % (layer["size"], layer["digest"], layer["mediaType"], config["digest"], config["mediaType"],
         config["size"], OCI_MANIFEST)
    raw = body.encode()
    assert json.loads(raw)["schemaVersion"] == 2
    r = client.push_manifest(repo, "odd", raw)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest_of(raw)
    for ref in ("odd", digest_of(raw)):
        got = client.request("GET", f"/v2/{repo}/manifests/{ref}")
        assert got.content == raw
        assert digest_of(got.content) == got.headers["Docker-Content-Digest"] == digest_of(raw)


def test_media_type_from_content_type_when_field_absent(client: RegistryClient) -> None:
    """An OCI manifest may omit mediaType: the Content-Type it was pushed with is what GET answers."""
    repo = unique_repo()
    doc = image_manifest(client, repo)
    del doc["mediaType"]
    body = json.dumps(doc).encode()
    assert client.push_manifest(repo, "t", body, OCI_MANIFEST).status_code == 201
    got = client.request("GET", f"/v2/{repo}/manifests/t")
    assert got.content == body
    assert got.headers["Content-Type"] == OCI_MANIFEST


def test_retag_moves_tag_and_keeps_old_manifest(client: RegistryClient) -> None:
    """Pushing another manifest to a tag repoints the tag; the old one stays reachable by digest."""
    repo = unique_repo()
    first, first_body = client.push_image(repo, "latest")
    second, second_body = client.push_image(repo, "latest")
    assert first != second
    assert client.request("GET", f"/v2/{repo}/manifests/latest").content == second_body
    assert client.request("GET", f"/v2/{repo}/manifests/{first}").content == first_body


# --- validation -----------------------------------------------------------------------------------


def _valid_doc() -> dict[str, Any]:
    config = b"{}"
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, config), "layers": []}


INVALID_BODIES: dict[str, tuple[bytes, str]] = {
    "not-json": (b'{"schemaVersion": 2,', OCI_MANIFEST),
    "not-utf8": (b'{"schemaVersion": 2, "x": "\xff\xfe"}', OCI_MANIFEST),
    "empty": (b"", OCI_MANIFEST),
    "array": (b"[]", OCI_MANIFEST),
    "string": (b'"manifest"', OCI_MANIFEST),
    "number": (b"2", OCI_MANIFEST),
    "schema-1": (json.dumps({**_valid_doc(), "schemaVersion": 1}).encode(), OCI_MANIFEST),
    "schema-string": (json.dumps({**_valid_doc(), "schemaVersion": "2"}).encode(), OCI_MANIFEST),
    "schema-missing": (json.dumps({k: v for k, v in _valid_doc().items() if k != "schemaVersion"}).encode(),
                       OCI_MANIFEST),
    "type-mismatch": (json.dumps(_valid_doc()).encode(), DOCKER_MANIFEST),
    "index-as-image": (json.dumps({**_valid_doc(), "mediaType": OCI_INDEX}).encode(), OCI_INDEX),
    "schema1-type": (json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}).encode(), SCHEMA1),
    "text-plain": (json.dumps({k: v for k, v in _valid_doc().items() if k != "mediaType"}).encode(), "text/plain"),
    "unknown-field-type": (json.dumps({**_valid_doc(), "mediaType": "application/vnd.example+json"}).encode(),
                           "application/vnd.example+json"),
    "layers-not-list": (json.dumps({**_valid_doc(), "layers": {}}).encode(), OCI_MANIFEST),
    "config-missing": (json.dumps({k: v for k, v in _valid_doc().items() if k != "config"}).encode(), OCI_MANIFEST),
    "bad-layer-digest": (json.dumps({**_valid_doc(), "layers": [{"mediaType": OCI_LAYER, "size": 1,
                                                                   "digest": "sha256:abc"}]}).encode(), OCI_MANIFEST),
    "size-over-int64": (json.dumps({**_valid_doc(), "layers": [{**descriptor(OCI_LAYER, b"x"), "size": 2**63}]}).encode(),
                        OCI_MANIFEST),
    "descriptor-media-type": (json.dumps({**_valid_doc(), "layers": [descriptor("tar", b"x")]}).encode(), OCI_MANIFEST),
    "annotation-not-string": (json.dumps({**_valid_doc(), "annotations": {"k": 1}}).encode(), OCI_MANIFEST),
    "annotations-not-object": (json.dumps({**_valid_doc(), "annotations": ["k"]}).encode(), OCI_MANIFEST),
    "artifact-type": (json.dumps({**_valid_doc(), "artifactType": "sbom"}).encode(), OCI_MANIFEST),
    "descriptor-data": (json.dumps({**_valid_doc(), "config": {**_valid_doc()["config"], "data": 1}}).encode(),
                        OCI_MANIFEST),
    "platform-without-os": (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**descriptor(OCI_MANIFEST, b"x"), "platform": {"architecture": "amd64"}}]}).encode(), OCI_INDEX),
    "platform-features": (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**descriptor(OCI_MANIFEST, b"x"), "platform": {"architecture": "amd64", "os": "linux",
                                                         "features": "sse4"}}]}).encode(), OCI_INDEX),
    "negative-size": (json.dumps({**_valid_doc(), "layers": [{**descriptor(OCI_LAYER, b"x"), "size": -1}]}).encode(),
                      OCI_MANIFEST),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
def test_invalid_manifest_rejected(client: RegistryClient, case: str) -> None:
    """Malformed or unsupported manifests are refused with MANIFEST_INVALID, and nothing is tagged."""
    repo = unique_repo()
    client.push_blob(repo, b"{}")  # the config of _valid_doc(), so only the case's defect can fail it
    body, content_type = INVALID_BODIES[case]
    r = client.push_manifest(repo, "bad", body, content_type)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert client.request("GET", f"/v2/{repo}/manifests/bad").status_code == 404
    assert client.request("GET", f"/v2/{repo}/manifests/{digest_of(body)}").status_code == 404


def test_valid_doc_is_accepted(client: RegistryClient) -> None:
    """The control for test_invalid_manifest_rejected: its base document on its own is fine."""
    repo = unique_repo()
    client.push_blob(repo, b"{}")
    assert client.push_manifest(repo, "good", json.dumps(_valid_doc()).encode()).status_code == 201


@pytest.mark.parametrize("missing", ["config", "layer"])
def test_missing_blob_rejected(client: RegistryClient, missing: str) -> None:
    """A manifest may only reference blobs the repository holds."""
    repo = unique_repo()
    config, layer = b'{"os":"linux"}' + uuid.uuid4().hex.encode(), uuid.uuid4().bytes * 10
    if missing != "config":
        client.push_blob(repo, config)
    if missing != "layer":
        client.push_blob(repo, layer)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, config),
           "layers": [descriptor(OCI_LAYER, layer)]}
    r = client.push_manifest(repo, "v1", doc)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert client.request("GET", f"/v2/{repo}/manifests/v1").status_code == 404


def test_blob_in_another_repository_does_not_count(client: RegistryClient) -> None:
    """Repositories are isolated: a blob pushed elsewhere must be mounted before a manifest can use it."""
    repo, other = unique_repo(), unique_repo()
    doc = image_manifest(client, other)
    r = client.push_manifest(repo, "v1", doc)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert client.push_manifest(other, "v1", doc).status_code == 201


def test_index_with_missing_child_rejected(client: RegistryClient) -> None:
    """An index's children must be manifests of this repository, not merely somewhere in the registry."""
    repo, other = unique_repo(), unique_repo()
    index = index_manifest(client, other)
    assert_error(client.push_manifest(repo, "v1", index, OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN")
    index["manifests"].append(descriptor(OCI_MANIFEST, b'{"never": "pushed"}'))
    assert_error(client.push_manifest(other, "v1", index, OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN")
    index["manifests"].pop()
    assert client.push_manifest(other, "v1", index, OCI_INDEX).status_code == 201


def test_index_child_must_be_manifest_not_blob(client: RegistryClient) -> None:
    """A blob with the right digest is not a manifest an index may list."""
    repo = unique_repo()
    doc = image_manifest(client, repo)
    body = json.dumps(doc).encode()
    client.push_blob(repo, body)  # uploaded as a blob, never pushed as a manifest
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, body)]}
    assert_error(client.push_manifest(repo, "idx", index, OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN")


def _padded(doc: dict[str, Any], size: int) -> bytes:
    """doc with an annotation padding its JSON to exactly size bytes."""
    doc = {**doc, "annotations": {"pad": ""}}
    base = len(json.dumps(doc).encode())
    doc["annotations"]["pad"] = "x" * (size - base)
    body = json.dumps(doc).encode()
    assert len(body) == size
    return body


def test_manifest_of_exactly_4mib_accepted(client: RegistryClient) -> None:
    """The limit is inclusive: a 4 MiB manifest is stored and served whole."""
    repo = unique_repo()
    body = _padded(image_manifest(client, repo), MAX_MANIFEST)
    r = client.push_manifest(repo, "big", body)
    assert r.status_code == 201, r.text
    got = client.request("GET", f"/v2/{repo}/manifests/big")
    assert got.content == body
    assert got.headers["Docker-Content-Digest"] == digest_of(body)


def test_manifest_over_4mib_rejected(client: RegistryClient) -> None:
    """One byte over the limit is 413 with an error envelope, with or without a Content-Length."""
    repo = unique_repo()
    body = _padded(image_manifest(client, repo), MAX_MANIFEST + 1)
    assert_error(client.push_manifest(repo, "big", body), 413, "MANIFEST_INVALID")

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    r = client.request("PUT", f"/v2/{repo}/manifests/big", data=chunks(), headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 413, "MANIFEST_INVALID")
    assert client.request("GET", f"/v2/{repo}/manifests/big").status_code == 404


def test_digest_reference_must_match_body(client: RegistryClient) -> None:
    """PUT by digest is a promise about the bytes; a mismatch is DIGEST_INVALID and stores nothing."""
    repo = unique_repo()
    body = json.dumps(image_manifest(client, repo)).encode()
    wrong = digest_of(body + b" ")
    assert_error(client.push_manifest(repo, wrong, body), 400, "DIGEST_INVALID")
    assert client.request("GET", f"/v2/{repo}/manifests/{wrong}").status_code == 404
    assert client.request("GET", f"/v2/{repo}/manifests/{digest_of(body)}").status_code == 404


def test_nondistributable_layer_needs_no_blob(client: RegistryClient) -> None:
    """Layers with `urls` are fetched by clients from elsewhere, so the registry need not hold them."""
    repo = unique_repo()
    doc = image_manifest(client, repo)
    foreign = descriptor(NONDISTRIBUTABLE_LAYER, b"foreign layer" + uuid.uuid4().bytes,
                         urls=["https://example.com/layer.tar.gz"])
    doc["layers"].append(foreign)
    r = client.push_manifest(repo, "v1", doc)
    assert r.status_code == 201, r.text
    assert client.request("HEAD", f"/v2/{repo}/blobs/{foreign['digest']}").status_code == 404


@pytest.mark.parametrize("urls", [[""], ["layer.tar.gz"], "https://example.com/layer.tar.gz", [None]])
def test_layer_urls_must_be_urls(client: RegistryClient, urls: Any) -> None:
    """Found by schemathesis: any truthy `urls` (`[""]`, a string) let a manifest name a blob the registry lacks."""
    repo = unique_repo()
    doc = image_manifest(client, repo)
    doc["layers"].append(descriptor(NONDISTRIBUTABLE_LAYER, b"missing" + uuid.uuid4().bytes, urls=urls))
    assert_error(client.push_manifest(repo, "v1", doc), 400, "MANIFEST_INVALID")
    assert client.request("GET", f"/v2/{repo}/manifests/v1").status_code == 404


def test_subject_gets_oci_subject_header(client: RegistryClient) -> None:
    """A registry that processed `subject` says so, even when the subject is not (yet) pushed."""
    repo = unique_repo()
    subject = descriptor(OCI_MANIFEST, b'{"not": "pushed yet"}' + uuid.uuid4().bytes)
    doc = image_manifest(client, repo, subject=subject)
    r = client.push_manifest(repo, "sig", doc)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subject["digest"]


def test_tag_parameters_on_push_by_digest(client: RegistryClient) -> None:
    """`?tag=` on a PUT by digest tags the manifest in the same request and echoes OCI-Tag."""
    repo = unique_repo()
    body = json.dumps(image_manifest(client, repo)).encode()
    digest = digest_of(body)
    r = client.request("PUT", f"/v2/{repo}/manifests/{digest}", params=[("tag", "a"), ("tag", "b")], data=body,
                       headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert {t.strip() for t in r.headers["OCI-Tag"].split(",")} == {"a", "b"}
    for tag in ("a", "b"):
        got = client.request("GET", f"/v2/{repo}/manifests/{tag}")
        assert got.content == body
    assert client.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["a", "b"]


def test_invalid_tag_parameter_rejected(client: RegistryClient) -> None:
    """A bad `?tag=` is refused before anything is stored."""
    repo = unique_repo()
    body = json.dumps(image_manifest(client, repo)).encode()
    r = client.request("PUT", f"/v2/{repo}/manifests/{digest_of(body)}", params=[("tag", "ok"), ("tag", "-bad")],
                       data=body, headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "TAG_INVALID")
    assert client.request("GET", f"/v2/{repo}/manifests/ok").status_code == 404


def test_sha512_digest_reference(client: RegistryClient) -> None:
    """A manifest pushed by a sha512 reference is identified and served by that digest."""
    repo = unique_repo()
    body = json.dumps(image_manifest(client, repo)).encode()
    digest = digest_of(body, "sha512")
    r = client.push_manifest(repo, digest, body)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/v2/{repo}/manifests/{digest}")
    got = client.request("GET", f"/v2/{repo}/manifests/{digest}")
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["Docker-Content-Digest"] == digest
    assert client.request("GET", f"/v2/{repo}/manifests/{digest_of(body, 'sha256')}").status_code == 404
    assert client.request("DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202
    assert client.request("GET", f"/v2/{repo}/manifests/{digest}").status_code == 404


# --- pull -----------------------------------------------------------------------------------------


@pytest.fixture
def pushed(client: RegistryClient) -> tuple[str, str, bytes]:
    repo = unique_repo()
    digest, body = client.push_image(repo, "v1")
    return repo, digest, body


@pytest.mark.parametrize("ref", ["tag", "digest"])
def test_get_and_head_headers(client: RegistryClient, pushed: tuple[str, str, bytes], ref: str) -> None:
    """GET and HEAD describe the manifest identically; HEAD sends no body."""
    repo, digest, body = pushed
    reference = "v1" if ref == "tag" else digest
    get = client.request("GET", f"/v2/{repo}/manifests/{reference}")
    head = client.request("HEAD", f"/v2/{repo}/manifests/{reference}")
    for r in (get, head):
        assert r.status_code == 200
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Content-Length"] == str(len(body))
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.headers["ETag"].strip('"') == digest
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert get.content == body
    assert head.content == b""


@pytest.mark.parametrize("accept", [
    [("Accept", DOCKER_MANIFEST), ("Accept", OCI_MANIFEST)],
    [("Accept", DOCKER_MANIFEST), ("Accept", DOCKER_LIST)],
    [("Accept", f"{DOCKER_MANIFEST}, {DOCKER_LIST};q=0.9, {OCI_INDEX}")],
    [("Accept", f"{OCI_MANIFEST}, {OCI_INDEX}"), ("Accept", "*/*")],
    [("Accept", "text/html")],
])
def test_accept_lines_never_convert(client: RegistryClient, pushed: tuple[str, str, bytes],
                                    accept: list[tuple[str, str]]) -> None:
    """Whatever the Accept lines, the manifest comes back exactly as stored, with its own media type."""
    repo, digest, body = pushed
    status, headers, content = raw_get(client.url, f"/v2/{repo}/manifests/v1", accept)
    assert status == 200
    assert content == body
    assert headers["Content-Type"] == OCI_MANIFEST
    assert headers["Docker-Content-Digest"] == digest


def test_docker_manifest_served_with_docker_type(client: RegistryClient) -> None:
    """A Docker schema2 manifest is served as such even to a client preferring OCI."""
    repo = unique_repo()
    digest, body = client.push_image(repo, "v1", media_type=DOCKER_MANIFEST)
    status, headers, content = raw_get(client.url, f"/v2/{repo}/manifests/v1",
                                       [("Accept", OCI_MANIFEST), ("Accept", OCI_INDEX)])
    assert (status, content, headers["Content-Type"]) == (200, body, DOCKER_MANIFEST)


def test_if_none_match(client: RegistryClient, pushed: tuple[str, str, bytes]) -> None:
    """A client holding the manifest's ETag gets 304 and no body; a stale one gets the manifest."""
    repo, digest, body = pushed
    etag = client.request("GET", f"/v2/{repo}/manifests/v1").headers["ETag"]
    r = client.request("GET", f"/v2/{repo}/manifests/v1", headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["Docker-Content-Digest"] == digest
    stale = f'"{digest_of(b"other")}"'
    r = client.request("GET", f"/v2/{repo}/manifests/v1", headers={"If-None-Match": stale})
    assert r.status_code == 200
    assert r.content == body


def test_unknown_manifest_and_repository(client: RegistryClient, pushed: tuple[str, str, bytes]) -> None:
    """Unknown tags and digests are MANIFEST_UNKNOWN; unknown repositories NAME_UNKNOWN."""
    repo, _, _ = pushed
    assert_error(client.request("GET", f"/v2/{repo}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.request("GET", f"/v2/{repo}/manifests/{digest_of(b'nope')}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.request("GET", f"/v2/{unique_repo()}/manifests/v1"), 404, "NAME_UNKNOWN")
    head = client.request("HEAD", f"/v2/{repo}/manifests/nope")
    assert head.status_code == 404
    assert head.content == b""


def test_manifest_only_in_other_repository_is_unknown(client: RegistryClient,
                                                      pushed: tuple[str, str, bytes]) -> None:
    """A digest pushed to one repository is not readable through another."""
    _, digest, _ = pushed
    other = unique_repo()
    client.push_image(other, "v1")
    assert_error(client.request("GET", f"/v2/{other}/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")


# --- delete ---------------------------------------------------------------------------------------


def test_delete_by_digest_removes_manifest_and_tags(client: RegistryClient) -> None:
    """Deleting a digest takes every tag on it along; other manifests stay."""
    repo = unique_repo()
    body = json.dumps(image_manifest(client, repo)).encode()
    digest = digest_of(body)
    r = client.request("PUT", f"/v2/{repo}/manifests/{digest}", params=[("tag", "a"), ("tag", "b")], data=body,
                       headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    keep, _ = client.push_image(repo, "keep")

    assert client.request("DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202
    for ref in (digest, "a", "b"):
        assert_error(client.request("GET", f"/v2/{repo}/manifests/{ref}"), 404, "MANIFEST_UNKNOWN")
    assert client.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["keep"]
    assert client.request("GET", f"/v2/{repo}/manifests/{keep}").status_code == 200
    assert_error(client.request("DELETE", f"/v2/{repo}/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    # the same bytes can be pushed again afterwards
    assert client.push_manifest(repo, "again", body).status_code == 201


def test_repository_whose_only_manifest_was_deleted(client: RegistryClient) -> None:
    """It still links its blobs, so it is known alike on every backend (the filesystem keeps empty
    directories, S3 has none): its manifests are MANIFEST_UNKNOWN, as clients expect, its blobs are
    served, and having no manifest it has no tag list (NAME_UNKNOWN, as for one that never had one)."""
    repo = unique_repo()
    layer = uuid.uuid4().bytes * 64
    digest, _ = client.push_image(repo, "v1", [layer])
    assert client.request("DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202
    for method in ("GET", "HEAD", "DELETE"):
        for reference in (digest, "v1"):
            assert_error(client.request(method, f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest_of(layer)}").status_code == 200
    assert_error(client.request("GET", f"/v2/{repo}/tags/list"), 404, "NAME_UNKNOWN")
    assert client.push_manifest(repo, "v1", json.dumps(image_manifest(client, repo)).encode()).status_code == 201
    assert client.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]


def test_delete_by_tag_only_untags(client: RegistryClient) -> None:
    """Deleting a tag leaves the manifest, and its other tags, in place."""
    repo = unique_repo()
    digest, body = client.push_image(repo, "a")
    assert client.push_manifest(repo, "b", body).status_code == 201
    assert client.request("DELETE", f"/v2/{repo}/manifests/a").status_code == 202
    assert_error(client.request("GET", f"/v2/{repo}/manifests/a"), 404, "MANIFEST_UNKNOWN")
    assert client.request("GET", f"/v2/{repo}/manifests/{digest}").content == body
    assert client.request("GET", f"/v2/{repo}/manifests/b").content == body
    assert client.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["b"]


def test_delete_unknown(client: RegistryClient, pushed: tuple[str, str, bytes]) -> None:
    repo, _, _ = pushed
    assert_error(client.request("DELETE", f"/v2/{repo}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.request("DELETE", f"/v2/{repo}/manifests/{digest_of(b'x')}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.request("DELETE", f"/v2/{unique_repo()}/manifests/v1"), 404, "NAME_UNKNOWN")


def test_deletes_disabled(make_registry: Callable[..., RegistryServer]) -> None:
    """With deletes off, DELETE is 405 UNSUPPORTED and the manifest survives."""
    client = RegistryClient(make_registry(args=["--no-delete"]).url)
    repo = unique_repo()
    digest, body = client.push_image(repo, "v1")
    for ref in (digest, "v1"):
        assert_error(client.request("DELETE", f"/v2/{repo}/manifests/{ref}"), 405, "UNSUPPORTED")
    assert client.request("GET", f"/v2/{repo}/manifests/v1").content == body


def test_if_none_match_star_or_a_list_gets_304(client: RegistryClient) -> None:
    repo = unique_repo()
    digest, _ = client.push_image(repo, "v1")
    for header in ("*", f'"sha256:{"0" * 64}", "{digest}"', f'W/"{digest}"'):
        r = client.request("GET", f"/v2/{repo}/manifests/v1", headers={"If-None-Match": header})
        assert r.status_code == 304, header
        assert r.content == b""
    r = client.request("GET", f"/v2/{repo}/manifests/v1", headers={"If-None-Match": f'"sha256:{"0" * 64}"'})
    assert r.status_code == 200


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_LIST])
def test_null_media_type_rejected(client: RegistryClient, media_type: str) -> None:
    """Found by schemathesis: `"mediaType": null` passed as if the field were absent, and the manifest was stored."""
    repo = unique_repo()
    body = json.dumps({"schemaVersion": 2, "mediaType": None, "manifests": []}).encode()
    assert_error(client.push_manifest(repo, "null", body, media_type), 400, "MANIFEST_INVALID")
    assert_error(client.request("GET", f"/v2/{repo}/manifests/null"), 404, "NAME_UNKNOWN")
