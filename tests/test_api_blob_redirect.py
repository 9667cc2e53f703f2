"""Blob GETs on S3: a 307 to a presigned URL of the bucket (Distribution's default), or, with
storage.redirect.disable, the bytes streamed by the registry itself.

The registry checks the repository's link before redirecting, answers HEAD
itself, and the URL it hands out serves exactly the blob's bytes, Range included.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import requests

from .client import RegistryClient, assert_error, digest_of, fetch_blob, unique_repo
from .oci_layout import Layout, assert_same_image, copy, small_image
from .servers import MotoServer, RegistryServer
from .store_view import blob_path

BLOB_SIZE = 300_000


def push(client: RegistryClient, size: int = BLOB_SIZE) -> tuple[str, bytes, str]:
    repo = unique_repo("redirect")
    data = os.urandom(size)
    return repo, data, client.push_blob(repo, data)


def test_get_is_307_to_the_bucket_serving_exactly_the_blob(s3_registry: RegistryServer, moto: MotoServer) -> None:
    client = RegistryClient(s3_registry.url)
    repo, data, digest = push(client)
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 307
    assert r.content == b""
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["ETag"] == f'"{digest}"'
    location = urlsplit(r.headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == moto.url
    bucket = s3_registry.config["storage"]["s3"]["bucket"]  # path-style, under the root directory
    assert location.path == f"/{bucket}/registry/{blob_path(digest)}"
    assert location.query, "the URL must be presigned"
    # the URL works on its own, without the registry or any credentials of the client
    direct = requests.get(r.headers["Location"], timeout=30)
    assert direct.status_code == 200
    assert direct.content == data
    assert direct.headers["Content-Type"] == "application/octet-stream"
    ranged = requests.get(r.headers["Location"], headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert ranged.status_code == 206
    assert ranged.content == data[1000:2000]


def test_head_is_answered_by_the_registry(s3_registry: RegistryServer) -> None:
    """Pushing clients HEAD every blob first: that must stay one round trip, with the size."""
    client = RegistryClient(s3_registry.url)
    repo, data, digest = push(client)
    r = client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert "Location" not in r.headers
    assert r.content == b""
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest


def test_no_redirect_without_a_link(s3_registry: RegistryServer) -> None:
    """The presigned URL is only handed out for a blob the repository holds: unknown, foreign
    and deleted blobs are the registry's own 404, never a URL into the bucket."""
    client = RegistryClient(s3_registry.url)
    repo, data, digest = push(client)
    other = unique_repo("redirect")
    client.push_blob(other, b"something else")
    for r in (
        client.request("GET", f"/v2/{repo}/blobs/{digest_of(data + b'!')}"),
        client.request("GET", f"/v2/{other}/blobs/{digest}"),
    ):
        assert_error(r, 404, "BLOB_UNKNOWN")
        assert "Location" not in r.headers
    assert client.request("DELETE", f"/v2/{repo}/blobs/{digest}").status_code == 202
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert_error(r, 404, "BLOB_UNKNOWN")
    assert "Location" not in r.headers


def test_if_none_match_is_304_before_any_redirect(s3_registry: RegistryServer) -> None:
    client = RegistryClient(s3_registry.url)
    repo, _, digest = push(client, 100)
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"If-None-Match": f'"{digest}"'})
    assert r.status_code == 304
    assert "Location" not in r.headers


def test_unsatisfiable_range_through_the_redirect_is_416(s3_registry: RegistryServer) -> None:
    """The registry redirects without reading the Range; the storage refuses it as the registry would."""
    client = RegistryClient(s3_registry.url)
    repo, data, digest = push(client, 1000)
    r = fetch_blob(client, repo, digest, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416


def test_redirect_disabled_streams_the_bytes(
    s3_registry: RegistryServer, s3_streaming_registry: RegistryServer
) -> None:
    """storage.redirect.disable: for storage clients cannot reach. The same bucket, bytes through the registry."""
    repo, data, digest = push(RegistryClient(s3_registry.url))
    client = RegistryClient(s3_streaming_registry.url)
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert "Location" not in r.headers
    assert r.content == data
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Docker-Content-Digest"] == digest
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=100000-200099"})
    assert r.status_code == 206
    assert r.content == data[100_000:200_100]
    assert r.headers["Content-Range"] == f"bytes 100000-200099/{len(data)}"
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=-10"})
    assert r.status_code == 206
    assert r.content == data[-10:]


def test_redirect_disabled_streams_a_blob_assembled_from_chunks(s3_streaming_registry: RegistryServer) -> None:
    """A chunked upload larger than a part is composed server-side in the bucket; it streams back whole."""
    client = RegistryClient(s3_streaming_registry.url)
    repo = unique_repo("redirect")
    data = os.urandom(12 << 20)
    digest = digest_of(data)
    location = client.start_upload(repo)
    cuts = [0, 3 << 20, 11 << 20, len(data)]
    for start, end in zip(cuts[:-2], cuts[1:-1]):
        r = client.request("PATCH", location, data=data[start:end], headers={"Content-Range": f"{start}-{end - 1}"})
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
    r = client.request("PUT", location, params={"digest": digest}, data=data[cuts[-2]:],
                       headers={"Content-Range": f"{cuts[-2]}-{len(data) - 1}"})
    assert r.status_code == 201, r.text
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert digest_of(r.content) == digest
    middle = (5 << 20) - 7, (5 << 20) + 7
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={middle[0]}-{middle[1] - 1}"})
    assert r.status_code == 206
    assert r.content == data[middle[0]:middle[1]]
    assert s3_streaming_registry.store.read(blob_path(digest)) == data


def test_skopeo_pulls_through_the_redirect(s3_registry: RegistryServer, tmp_path: Path) -> None:
    """skopeo follows the 307s: the image comes back intact, and its blobs never passed through the registry."""
    source = small_image(tmp_path / "src", "v1")
    repo = unique_repo("redirect")
    target = f"docker://{s3_registry.host}/{repo}:v1"
    copy(source.ref("v1"), target)
    copy(target, f"oci:{tmp_path / 'out'}:pulled")
    assert_same_image(source, "v1", Layout(tmp_path / "out"), "pulled")
    manifest = json.loads(source.manifest("v1")[1])
    for blob in [manifest["config"], *manifest["layers"]]:
        log = s3_registry.logged(f'"GET /v2/{repo}/blobs/{blob["digest"]} HTTP/1.1"')  # written after the answer
        answered = re.findall(rf'"GET /v2/{re.escape(repo)}/blobs/{blob["digest"]} HTTP/1\.1" (\d+)', log)
        assert answered and set(answered) == {"307"}, (blob["digest"], answered)
