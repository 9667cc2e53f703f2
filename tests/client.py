"""A small OCI client over `requests`, for the API tests: raw responses, nothing hidden."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def unique_repo(prefix: str = "test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


class RegistryClient:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        target = path if path.startswith("http") else f"{self.url}{path}"
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", 120)
        return self.session.request(method, target, **kwargs)

    def push_blob(self, repo: str, data: bytes, chunk: int | None = None) -> str:
        """POST then PUT with the body: the upload every registry (Distribution 2.8 too) supports.
        chunk: POST, PATCHes of that many bytes with Content-Range, then a PUT without body."""
        digest = digest_of(data)
        location = self.start_upload(repo)
        for start in range(0, len(data), chunk) if chunk else ():
            piece = data[start:start + chunk]
            r = self.request("PATCH", location, data=piece, headers={
                "Content-Type": "application/octet-stream", "Content-Range": f"{start}-{start + len(piece) - 1}"})
            assert r.status_code == 202, r.text
            location = r.headers["Location"]
        r = self.request("PUT", location, params={"digest": digest}, data=None if chunk else data)
        assert r.status_code == 201, r.text
        return digest

    def start_upload(self, repo: str) -> str:
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        return r.headers["Location"]

    def push_manifest(self, repo: str, reference: str, manifest: dict[str, Any] | bytes,
                      media_type: str = OCI_MANIFEST) -> requests.Response:
        body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        return self.request("PUT", f"/v2/{repo}/manifests/{reference}", data=body,
                            headers={"Content-Type": media_type})

    def push_image(self, repo: str, tag: str, layers: list[bytes] | None = None,
                   media_type: str = OCI_MANIFEST, *, chunk: int | None = None, **fields: Any) -> tuple[str, bytes]:
        """Push config, layers (in PATCHes of chunk bytes, if given) and a manifest; returns the
        manifest's digest and bytes."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex}).encode()
        layers = layers if layers is not None else [uuid.uuid4().bytes * 100]
        docker = media_type == DOCKER_MANIFEST
        self.push_blob(repo, config)
        for layer in layers:
            self.push_blob(repo, layer, chunk)
        manifest = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
            "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in layers],
            **fields,
        }
        body = json.dumps(manifest).encode()
        r = self.push_manifest(repo, tag, body, media_type)
        assert r.status_code == 201, r.text
        return digest_of(body), body


def error_codes(response: requests.Response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


def assert_error(response: requests.Response, status: int, code: str) -> None:
    """The spec's JSON error envelope with the expected code, on every failure (HEAD has no body)."""
    assert response.status_code == status, response.text
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert response.headers["Content-Type"].startswith("application/json")
    if response.request.method == "HEAD":
        assert response.content == b""
        return
    errors = response.json()["errors"]
    assert errors and all(isinstance(e["message"], str) and e["message"] for e in errors)
    assert code in [e["code"] for e in errors]


def blob_file(root: Path, digest: str) -> Path:
    """Where the filesystem layout keeps a blob's data."""
    algorithm, hex_ = digest.split(":")
    return root / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_ / "data"


def fetch_blob(client: RegistryClient, repo: str, digest: str, headers: dict[str, str] | None = None,
               stream: bool = False) -> requests.Response:
    """GET a blob as pulling clients do: a 307 to the storage (S3's presigned URL) is followed, once,
    with the same headers (Range too). The registry's own answer is then `registry_answer(r)`."""
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers=headers, stream=stream, allow_redirects=True)
    assert [h.status_code for h in r.history] in ([], [307]), [h.status_code for h in r.history]
    if r.history:
        first = r.history[0]
        assert first.headers["Docker-Content-Digest"] == digest
        assert first.content == b""
        assert r.url == first.headers["Location"]
    return r


def registry_answer(response: requests.Response) -> requests.Response:
    """The registry's response to a request whose redirect was followed (fetch_blob)."""
    return response.history[0] if response.history else response


class Image:
    """An OCI image built in the test, every digest and size known; with `subject` (an Image, or the
    bytes of an image manifest), a referrer of it."""

    def __init__(self, layers: list[bytes], subject: "Image | bytes | None" = None) -> None:
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex}).encode()
        self.layers = layers
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, self.config),
            "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
        }
        if subject is not None:
            document["subject"] = descriptor(OCI_MANIFEST, subject if isinstance(subject, bytes) else subject.manifest)
            document["artifactType"] = "application/vnd.example.signature"
        self.manifest = json.dumps(document).encode()

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        """Config and layers by digest."""
        return {digest_of(b): b for b in [self.config, *self.layers]}

    @property
    def content(self) -> dict[str, int]:
        """Every digest it puts in the blob store (the manifest too), with its size."""
        return {self.digest: len(self.manifest), **{d: len(b) for d, b in self.blobs.items()}}

    @property
    def size(self) -> int:
        """What the image holds in a store, each object once."""
        return sum(self.content.values())

    def push(self, client: RegistryClient, repo: str, *tags: str) -> None:
        """Blobs, then the manifest under each tag (by its digest without tags)."""
        for blob in self.blobs.values():
            client.push_blob(repo, blob)
        for reference in tags or (self.digest,):
            r = client.push_manifest(repo, reference, self.manifest)
            assert r.status_code == 201, r.text
