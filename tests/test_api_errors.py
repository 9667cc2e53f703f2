"""Routing and error rendering: malformed names and tags, path traversal, unknown routes and methods.

Whatever a client sends, the answer is a JSON error envelope with the API version header,
never a 500, and nothing outside the store is ever touched.
"""

from __future__ import annotations

import http.client
import json
import os
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import pytest
import requests

from .client import OCI_CONFIG, OCI_MANIFEST, RegistryClient, assert_error, descriptor, digest_of, unique_repo
from .servers import RegistryServer

DIGEST = digest_of(b"anything")


def raw(url: str, method: str, path: str, body: bytes = b"",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send path exactly as written: `requests` (urllib3) would normalize dot segments away."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def check_envelope(status: int, headers: dict[str, str], body: bytes, method: str = "GET") -> list[str]:
    """The error codes of a response, after checking it is a well-formed error."""
    assert 400 <= status < 500, (status, body[:300])
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    assert headers["content-type"].startswith("application/json")
    if method == "HEAD":
        assert body == b""
        return []
    errors = json.loads(body)["errors"]
    assert errors
    for error in errors:
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return [e["code"] for e in errors]


def minimal_manifest_bytes() -> bytes:
    """A valid image manifest with no layers and the two-byte `{}` config."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, b"{}"),
                       "layers": []}).encode()


def minimal_manifest(client: RegistryClient, repo: str) -> bytes:
    """minimal_manifest_bytes(), with its config pushed to repo so the manifest can be."""
    client.push_blob(repo, b"{}")
    return minimal_manifest_bytes()


# --- names ----------------------------------------------------------------------------------------

BAD_NAMES = [
    "Upper", "a/Upper", "-lead", "a/-lead", ".lead", "_lead", "trail-", "trail.", "a..b", "a/../b", "a/./b",
    "..", "a/..", "_uploads", "a/_uploads", "a/_manifests", "a/_layers/b", "a//b", "a/", "a%20b",
    "a%00b", "a%5Cb", "a:b", "a@b", "a" * 256, "/".join(["ab"] * 86),
]


def name_requests(name: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("HEAD", f"/v2/{name}/manifests/{DIGEST}"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/{DIGEST}"),
        ("GET", f"/v2/{name}/blobs/{DIGEST}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={DIGEST}"),
        ("GET", f"/v2/{name}/referrers/{DIGEST}"),
    ]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_malformed_names_refused(client: RegistryClient, name: str) -> None:
    """Every endpoint refuses a malformed repository name with NAME_INVALID (or finds no route)."""
    for method, path in name_requests(name):
        status, headers, body = raw(client.url, method, path, b"{}" if method in ("PUT", "POST") else b"")
        codes = check_envelope(status, headers, body, method)
        if method != "HEAD":
            assert (status, codes) in [(400, ["NAME_INVALID"]), (404, ["NOT_FOUND"])], (method, path, status, body)
        else:
            assert status in (400, 404)


def test_name_length_limit(client: RegistryClient) -> None:
    """255 characters is still a name (unknown, so NAME_UNKNOWN); 256 is not."""
    longest = ("a" * 120) + "/" + ("b" * 134)
    assert len(longest) == 255
    assert_error(client.request("GET", f"/v2/{longest}/tags/list"), 404, "NAME_UNKNOWN")
    assert_error(client.request("GET", f"/v2/{longest}b/tags/list"), 400, "NAME_INVALID")
    body = minimal_manifest(client, longest)
    assert client.push_manifest(longest, "t", body).status_code == 201
    assert client.request("GET", f"/v2/{longest}/tags/list").json() == {"name": longest, "tags": ["t"]}


def test_valid_name_forms_accepted(client: RegistryClient) -> None:
    """The separators the grammar allows (., _, __, runs of -) all work, nested too."""
    suffix = unique_repo("sep").replace("/", "-")
    for name in (f"a.b_c__d---e/{suffix}", f"{suffix}/x/y/z", f"0/{suffix}"):
        body = minimal_manifest(client, name)
        assert client.push_manifest(name, "t", body).status_code == 201, name
        assert client.request("GET", f"/v2/{name}/manifests/t").content == body


TRAVERSALS = [
    ("GET", "/v2/a/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside/tags/list"),
    ("PUT", "/v2/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside/manifests/latest"),
    ("PUT", "/v2/a/../../../../../../outside/manifests/latest"),
    ("POST", "/v2/..%2f..%2f..%2f..%2f..%2f..%2foutside/blobs/uploads/"),
    ("POST", "/v2/a%2f..%2f..%2f..%2f..%2f..%2f..%2foutside/blobs/uploads/"),
    ("POST", "/v2/a%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Foutside/blobs/uploads/"),
    ("POST", f"/v2/%2e%2e%5c%2e%2e%5coutside/blobs/uploads/?digest={digest_of(b'{}')}"),
    ("PUT", "/v2/%2Foutside/manifests/latest"),
    ("PUT", "/v2//outside/manifests/latest"),
    ("PUT", "/v2/a/manifests/..%2f..%2f..%2f..%2f..%2f..%2foutside"),
    ("PUT", "/v2/a/manifests/%2e%2e"),
    ("PUT", "/v2/a/manifests/..%5c..%5coutside"),
    ("PUT", f"/v2/a/manifests/{DIGEST}?tag=..%2f..%2f..%2f..%2f..%2f..%2f..%2foutside"),
    ("PUT", f"/v2/a/manifests/{DIGEST}?tag=%2e%2e"),
    ("PATCH", "/v2/a/blobs/uploads/..%2f..%2f..%2f..%2f..%2f..%2f..%2foutside"),
    ("PUT", f"/v2/a/blobs/uploads/%2e%2e?digest={digest_of(b'{}')}"),
    ("DELETE", "/v2/a/blobs/uploads/%2e%2e"),
    ("GET", "/v2/a/blobs/sha256:..%2f..%2f..%2f..%2foutside"),
    ("GET", "/v2/a/blobs/sha256%3a..%2f..%2f..%2foutside%2fsecret"),
    ("DELETE", "/v2/a/manifests/sha256:%2e%2e"),
    ("GET", "/v2/a/referrers/sha256:..%2f..%2f..%2foutside"),
    ("GET", "/v2/a/tags/list?last=../../../../outside&n=1"),
]


def snapshot(root: Path, skip: set[Path]) -> dict[str, tuple[int, int, bytes]]:
    """Every file and directory under root (except skipped subtrees) with size, mtime and content."""
    found: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for entry in dirnames + filenames:
            path = Path(dirpath, entry)
            st = path.lstat()
            content = path.read_bytes() if path.is_file() else b""
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, content)
    return found


def test_path_traversal_stays_in_store(tmp_path: Path, make_registry: Callable[..., RegistryServer]) -> None:
    """Dot segments, encoded slashes and backslashes in names, tags, digests and upload ids reach no file
    outside the store, and create nothing inside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = f"SECRET-{uuid.uuid4().hex}"
    (outside / "secret").write_text(secret)
    store = tmp_path / "box" / "store"
    server = make_registry(root=store)
    before = snapshot(tmp_path, {store})
    for method, path in TRAVERSALS:
        body = minimal_manifest_bytes() if method == "PUT" else b"{}" if method in ("POST", "PATCH") else b""
        status, headers, content = raw(server.url, method, path, body, {"Content-Type": OCI_MANIFEST})
        assert status in (400, 404), (method, path, status, content[:300])
        check_envelope(status, headers, content, method)
        assert secret.encode() not in content
    # the server's log files grow; nothing else outside the store may change
    after = snapshot(tmp_path, {store})
    logs = {p for p in after if p.startswith("server")}
    assert {k: v for k, v in after.items() if k not in logs} == {k: v for k, v in before.items() if k not in logs}
    assert (outside / "secret").read_text() == secret
    repositories = store / "docker" / "registry" / "v2" / "repositories"
    assert not repositories.exists() or not any(repositories.iterdir())
    blobs = store / "docker" / "registry" / "v2" / "blobs"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))
    assert requests.get(f"{server.url}/v2/", timeout=10).status_code == 200


def test_encoded_slash_in_name_is_just_a_slash(client: RegistryClient) -> None:
    """An encoded `/` between valid components names the same nested repository, nothing else."""
    repo = unique_repo("enc")
    body = minimal_manifest(client, repo)
    assert client.push_manifest(repo, "t", body).status_code == 201
    status, _, content = raw(client.url, "GET", f"/v2/{repo.replace('/', '%2F')}/manifests/t")
    assert (status, content) == (200, body)


# --- tags -----------------------------------------------------------------------------------------

BAD_TAGS = ["-lead", ".lead", "a" * 129, "a+b", "a%20b", "a%2Bb", "%2e%2e", ".", "a%00", "t%c3%a9"]


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_bad_tags_refused(client: RegistryClient, tag: str) -> None:
    """Tags outside the grammar are 400 on push, pull and delete, and are never created."""
    repo = unique_repo()
    body = minimal_manifest(client, repo)
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        status, headers, content = raw(client.url, method, f"/v2/{repo}/manifests/{tag}",
                                       body if method == "PUT" else b"", {"Content-Type": OCI_MANIFEST})
        assert status == 400, (method, tag, status, content[:300])
        codes = check_envelope(status, headers, content, method)
        assert method == "HEAD" or codes == ["TAG_INVALID"]
    assert client.request("GET", f"/v2/{repo}/tags/list").status_code == 404


def test_longest_tag_accepted(client: RegistryClient) -> None:
    repo = unique_repo()
    tag = "_" + "A9._-" * 25 + "xy"
    assert len(tag) == 128
    body = minimal_manifest(client, repo)
    assert client.push_manifest(repo, tag, body).status_code == 201
    assert client.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == [tag]


# --- routes and methods ---------------------------------------------------------------------------

#: ("/" is the web UI's; with ui.enabled false it is unknown too: tests/test_ui_http.py)
UNKNOWN_ENDPOINTS = [
    "/v1/", "/v3/", "/v2/nope", "/v2/a/nope/x", "/v2/a/manifests/", "/v2/a/blobs/", "/v2/a/tags/list/extra",
    "/v2/a/tags/", "/v2/a/referrers/", "/v2/_catalog/extra", "/favicon.ico", "/v2/a/manifests/x/y",
]


@pytest.mark.parametrize("path", UNKNOWN_ENDPOINTS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT"])
def test_unknown_endpoints(client: RegistryClient, path: str, method: str) -> None:
    status, headers, body = raw(client.url, method, path)
    codes = check_envelope(status, headers, body, method)
    assert status == 404, (method, path, status, body)
    assert method == "HEAD" or codes == ["NOT_FOUND"]


WRONG_METHODS = [
    ("POST", "/v2/"),
    ("DELETE", "/v2/"),
    ("POST", "/v2/_catalog"),
    ("PUT", "/v2/a/tags/list"),
    ("DELETE", "/v2/a/tags/list"),
    ("POST", "/v2/a/manifests/latest"),
    ("PATCH", "/v2/a/manifests/latest"),
    ("POST", f"/v2/a/blobs/{DIGEST}"),
    ("PUT", f"/v2/a/blobs/{DIGEST}"),
    ("PATCH", f"/v2/a/blobs/{DIGEST}"),
    ("GET", "/v2/a/blobs/uploads/"),
    ("PUT", "/v2/a/blobs/uploads/"),
    ("POST", "/v2/a/blobs/uploads/0b3e8f4e-1b0c-4f6b-9d37-8f3b7f1d2a10"),
    ("DELETE", f"/v2/a/referrers/{DIGEST}"),
    ("PUT", f"/v2/a/referrers/{DIGEST}"),
    ("OPTIONS", "/v2/a/tags/list"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_wrong_method(client: RegistryClient, method: str, path: str) -> None:
    """A known route with a method it does not serve is 405 UNSUPPORTED, with Allow listing the right ones."""
    status, headers, body = raw(client.url, method, path)
    assert status == 405, (method, path, status, body)
    assert check_envelope(status, headers, body, method) == ["UNSUPPORTED"]
    allowed = {m.strip() for m in headers["allow"].split(",")}
    assert allowed and method not in allowed


def test_errors_on_head_have_headers_only(client: RegistryClient) -> None:
    """HEAD errors keep status and headers but carry no body."""
    for path in (f"/v2/{unique_repo()}/manifests/x", f"/v2/{unique_repo()}/blobs/{DIGEST}", "/v2/Bad/manifests/x"):
        status, headers, body = raw(client.url, "HEAD", path)
        assert status in (400, 404)
        check_envelope(status, headers, body, "HEAD")


def test_malformed_json_body_and_headers_never_500(client: RegistryClient) -> None:
    """Odd but well-formed HTTP never makes the server fail."""
    repo = unique_repo()
    cases = [
        ("PUT", f"/v2/{repo}/manifests/t", b"\x00\xff" * 100, {"Content-Type": "application/x; q=\"\xe9\""}),
        ("PUT", f"/v2/{repo}/manifests/t", b"{" * 10000, {"Content-Type": OCI_MANIFEST}),
        ("PUT", f"/v2/{repo}/manifests/t", b"[" * 100000 + b"]" * 100000, {"Content-Type": OCI_MANIFEST}),
        ("GET", f"/v2/{repo}/manifests/t", b"", {"If-None-Match": 'W/"' + "\xe9" * 1000 + '", *'}),
        ("GET", f"/v2/{repo}/tags/list?n=%ff&last=%ff", b"", {}),
        ("GET", "/v2/_catalog?n=1e3", b"", {}),
    ]
    for method, path, body, headers in cases:
        status, resp_headers, content = raw(client.url, method, path, body, headers)
        assert 400 <= status < 500, (method, path, status, content[:300])
        check_envelope(status, resp_headers, content, method)


# --- configuration --------------------------------------------------------------------------------


def test_delete_disabled_by_environment(monkeypatch: pytest.MonkeyPatch,
                                        make_registry: Callable[..., RegistryServer]) -> None:
    """REGISTRY_STORAGE_DELETE_ENABLED=false, as in Distribution, turns deletes into 405 UNSUPPORTED."""
    monkeypatch.setenv("REGISTRY_STORAGE_DELETE_ENABLED", "false")
    client = RegistryClient(make_registry().url)
    repo = unique_repo()
    digest, body = client.push_image(repo, "v1")
    for path in (f"/v2/{repo}/manifests/{digest}", f"/v2/{repo}/manifests/v1",
                 f"/v2/{repo}/blobs/{digest_of(b'nope')}"):
        assert_error(client.request("DELETE", path), 405, "UNSUPPORTED")
    assert client.request("GET", f"/v2/{repo}/manifests/v1").content == body


def test_read_only_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  make_registry: Callable[..., RegistryServer]) -> None:
    """The maintenance read-only switch, set from the environment, refuses writes but serves reads."""
    root = tmp_path / "shared"
    writer = RegistryClient(make_registry(root=root).url)
    repo = unique_repo()
    digest, body = writer.push_image(repo, "v1")
    monkeypatch.setenv("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true")
    reader = RegistryClient(make_registry(root=root).url)
    assert reader.request("GET", f"/v2/{repo}/manifests/v1").content == body
    assert_error(reader.push_manifest(repo, "v2", body), 405, "UNSUPPORTED")
    assert_error(reader.request("POST", f"/v2/{repo}/blobs/uploads/"), 405, "UNSUPPORTED")
    assert_error(reader.request("DELETE", f"/v2/{repo}/manifests/{digest}"), 405, "UNSUPPORTED")
    assert reader.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]


@pytest.mark.parametrize(("method", "path"), [("TRACE", "/metrics"), ("POST", "/metrics"), ("DELETE", "/admin/readonly"),
                                              ("PUT", "/openapi.yaml")])
def test_wrong_method_outside_v2_lists_allow(client: RegistryClient, method: str, path: str) -> None:
    """Found by schemathesis: the routes outside /v2/ answered 405 without the Allow header RFC 9110 requires."""
    status, headers, body = raw(client.url, method, path)
    assert status == 405, (method, path, status, body)
    assert check_envelope(status, headers, body, method) == ["UNSUPPORTED"]
    allowed = {m.strip() for m in headers["allow"].split(",")}
    assert "GET" in allowed and method not in allowed


@pytest.mark.parametrize(("method", "path"), [("POST", "/v2/a%0Ab/blobs/uploads/"), ("GET", "/v2/a%0Ab/tags/list"),
                                              ("PUT", "/v2/a%0Ab/manifests/latest")])
def test_name_with_a_line_break_is_no_route(client: RegistryClient, method: str, path: str) -> None:
    """Found by schemathesis: a name with a line break takes no route, so a 404 NOT_FOUND that the spec
    did not list for the upload POST (it does now, for every operation with a name)."""
    status, headers, body = raw(client.url, method, path)
    assert status == 404 and check_envelope(status, headers, body, method) == ["NOT_FOUND"]
