"""Registry operations as a client performs them, over bench.httpclient connections."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from .httpclient import Connection, FileSlice, HTTPError, Response, expect, target_of, with_query

OCTET = {"Content-Type": "application/octet-stream"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class BlobFile:
    """A blob generated on disk once, with its digest computed once."""

    path: str
    size: int
    digest: str


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def start_upload(conn: Connection, repo: str) -> str:
    r = expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b""), 202)
    return target_of(r.header("location"))


def push_file_monolithic(conn: Connection, repo: str, blob: BlobFile) -> None:
    """POST for a session, then one PUT carrying the whole file: the protocol both servers speak."""
    location = start_upload(conn, repo)
    body = FileSlice(blob.path, 0, blob.size)
    expect(conn.request("PUT", with_query(location, digest=blob.digest), OCTET, body), 201)


def push_file_chunked(conn: Connection, repo: str, blob: BlobFile, chunk: int) -> None:
    """POST, PATCHes of `chunk` bytes with Content-Range, then a PUT without body."""
    location = start_upload(conn, repo)
    for start in range(0, blob.size, chunk):
        count = min(chunk, blob.size - start)
        headers = {**OCTET, "Content-Range": f"{start}-{start + count - 1}"}
        r = expect(conn.request("PATCH", location, headers, FileSlice(blob.path, start, count)), 202)
        location = target_of(r.header("location"))
    expect(conn.request("PUT", with_query(location, digest=blob.digest), body=b""), 201)


def push_small(conn: Connection, repo: str, data: bytes, digest: str, single_post: bool) -> None:
    """A small blob: one POST ?digest= where the server takes it, else POST then PUT."""
    if single_post:
        expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", OCTET, data), 201)
        return
    location = start_upload(conn, repo)
    expect(conn.request("PUT", with_query(location, digest=digest), OCTET, data), 201)


def supports_single_post(conn: Connection, repo: str) -> bool:
    """Whether POST ?digest= with a body completes the upload (ours) or only opens a session (Distribution)."""
    data = b"single-post probe " + repo.encode()
    digest = digest_of(data)
    r = conn.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", OCTET, data)
    if r.status == 201:
        return True
    expect(r, 202)
    conn.request("DELETE", target_of(r.header("location")))
    return False


def pull(conn: Connection, repo: str, digest: str, size: int) -> None:
    r = expect(conn.request("GET", f"/v2/{repo}/blobs/{digest}", discard=True), 200)
    if r.received != size:
        raise HTTPError(f"pulled {r.received} bytes of {size}")


def pull_verified(conn: Connection, repo: str, blob: BlobFile) -> None:
    """Pull once, hashing what arrives: both servers must serve the very bytes pushed."""
    r = expect(conn.request("GET", f"/v2/{repo}/blobs/{blob.digest}"), 200)
    if digest_of(r.body) != blob.digest:
        raise HTTPError(f"pulled bytes do not match {blob.digest}")


class Redirects:
    """Keep-alive connections to the hosts that blob GETs redirect to (presigned storage URLs)."""

    def __init__(self) -> None:
        self.conns: dict[tuple[str, int], Connection] = {}

    def follow(self, location: str, discard: bool) -> Response:
        parts = urlsplit(location)
        if parts.scheme != "http" or parts.hostname is None:
            raise HTTPError(f"cannot follow a redirect to {location}")
        host = (parts.hostname, parts.port or 80)
        if host not in self.conns:
            self.conns[host] = Connection(*host)
        return self.conns[host].request("GET", target_of(location), discard=discard)

    def __enter__(self) -> "Redirects":
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns.values():
            conn.close()


def _get_redirected(conn: Connection, storage: Redirects, repo: str, digest: str, discard: bool) -> Response:
    r = expect(conn.request("GET", f"/v2/{repo}/blobs/{digest}"), 307)
    return expect(storage.follow(r.header("location"), discard), 200)


def pull_redirected(conn: Connection, storage: Redirects, repo: str, digest: str, size: int) -> None:
    """GET the blob from the registry, which must answer 307, then GET it where it points."""
    r = _get_redirected(conn, storage, repo, digest, discard=True)
    if r.received != size:
        raise HTTPError(f"pulled {r.received} bytes of {size} from the storage")


def pull_redirected_verified(conn: Connection, storage: Redirects, repo: str, blob: BlobFile) -> None:
    if digest_of(_get_redirected(conn, storage, repo, blob.digest, discard=False).body) != blob.digest:
        raise HTTPError(f"bytes pulled by redirect do not match {blob.digest}")


def mount(conn: Connection, repo: str, digest: str, source: str) -> None:
    expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}", body=b""), 201)


def image_manifest(config: bytes, layers: list[bytes]) -> bytes:
    def descriptor(media_type: str, data: bytes) -> dict[str, object]:
        return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}

    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
    }).encode()


def put_manifest(conn: Connection, repo: str, reference: str, manifest: bytes) -> None:
    expect(conn.request("PUT", f"/v2/{repo}/manifests/{reference}", {"Content-Type": OCI_MANIFEST}, manifest), 201)


def get_json(conn: Connection, target: str, headers: dict[str, str] | None = None) -> object:
    return json.loads(expect(conn.request("GET", target, headers), 200).body)
