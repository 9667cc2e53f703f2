"""Odd input a client may send: numbers Python reads but no HTTP header means, numbers longer than
any size, JSON nested too deep. Each gets the spec's error (or is ignored, where HTTP says so),
never a 500 and never a traceback in the log.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Callable, Iterator

import pytest

from .client import RegistryClient, assert_error, unique_repo
from .servers import RegistryServer

HUGE = "9" * 4400  # beyond Python's 4,300-digit int() limit, within aiohttp's 8 KiB for a header
ODD_NUMBERS = ["²", "١٢", "1_000", " 7", "+5", "0x10", "-1", HUGE]


@pytest.fixture
def assert_no_traceback(registry: RegistryServer) -> Iterator[Callable[[], None]]:
    """Checks that the shared registry logged no traceback since the test began."""
    start = registry.log_path.stat().st_size

    def check() -> None:
        with open(registry.log_path, "rb") as log:
            log.seek(start)
            assert b"Traceback" not in log.read()

    yield check


@pytest.mark.parametrize("n", ODD_NUMBERS)
def test_odd_page_sizes_are_400(client: RegistryClient, n: str, assert_no_traceback: Callable[[], None]) -> None:
    repo = unique_repo("numbers")
    client.push_image(repo, "v1")
    for path in (f"/v2/{repo}/tags/list", "/v2/_catalog"):
        assert_error(client.request("GET", path, params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")
    assert_no_traceback()


def test_odd_ranges_are_ignored_or_unsatisfiable(client: RegistryClient, registry: RegistryServer,
                                                  assert_no_traceback: Callable[[], None]) -> None:
    """A Range we cannot read is ignored (RFC 9110: the whole blob); one past the end is 416. (HEAD:
    a GET on S3 is redirected to the bucket, which reads the Range itself.)"""
    repo = unique_repo("numbers")
    data = os.urandom(1000)
    digest = client.push_blob(repo, data)
    path = f"/v2/{repo}/blobs/{digest}"
    method = "HEAD" if registry.redirects else "GET"
    for header in ("bytes=²-", "bytes=0-²", "bytes=¹-³"):  # headers are latin-1: its odd digits
        r = client.request(method, path, headers={"Range": header})
        assert r.status_code == 200 and "Content-Range" not in r.headers, header
    for header in (f"bytes=0-{HUGE}", f"bytes=-{HUGE}"):  # to the end; the last N bytes, N > size: all of it
        r = client.request(method, path, headers={"Range": header})
        assert r.status_code == 206 and r.headers["Content-Range"] == "bytes 0-999/1000", header
        assert method == "HEAD" or r.content == data
    r = client.request(method, path, headers={"Range": f"bytes={HUGE}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */1000"
    assert_no_traceback()


@pytest.mark.parametrize("content_range,status,code", [
    (f"0-{HUGE}", 400, "SIZE_INVALID"),  # a range past every size: not the chunk's 3 bytes
    (f"{HUGE[:3000]}-{HUGE[:3000]}", 400, "SIZE_INVALID"),
    (f"{HUGE}-5", 416, "RANGE_INVALID"),  # it ends before it starts
    ("²-³", 416, "RANGE_INVALID"),  # not a range at all
    ("0-¹", 416, "RANGE_INVALID"),
])
def test_odd_content_ranges(client: RegistryClient, content_range: str, status: int, code: str,
                            assert_no_traceback: Callable[[], None]) -> None:
    repo = unique_repo("numbers")
    location = client.start_upload(repo)
    r = client.request("PATCH", location, data=b"abc", headers={"Content-Range": content_range})
    assert_error(r, status, code)
    assert client.request("GET", location).headers["Range"] == "0-0"
    assert_no_traceback()


MALFORMED = {
    "huge-content-length": f"PATCH /v2/a/blobs/uploads/x HTTP/1.1\r\nHost: r\r\nContent-Length: {HUGE}\r\n\r\n",
    "header-line-over-8-kib": f"GET /v2/ HTTP/1.1\r\nHost: r\r\nX-Padding: {'p' * 9000}\r\n\r\n",
    "request-line-over-8-kib": f"GET /v2/{'a' * 9000}/tags/list HTTP/1.1\r\nHost: r\r\n\r\n",
    "bad-method": "G@T /v2/ HTTP/1.1\r\nHost: r\r\n\r\n",
    "no-request-line": "HELLO\r\n\r\n",
}


@pytest.mark.parametrize("request_text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_get_the_error_envelope(registry: RegistryServer, request_text: str,
                                                   assert_no_traceback: Callable[[], None]) -> None:
    """aiohttp's parser refuses them before any handler runs: 400 with the JSON error envelope, as every
    other error, and the connection closes; the log says so in one line."""
    with socket.create_connection(("127.0.0.1", registry.port), timeout=10) as sock:
        sock.sendall(request_text.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
    assert lines[0].split(" ")[1] == "400"
    assert headers["content-type"].startswith("application/json")
    [error] = json.loads(body)["errors"]
    assert error["code"] == "INVALID_REQUEST" and error["message"]
    assert_no_traceback()


def test_deeply_nested_json_is_400(client: RegistryClient, assert_no_traceback: Callable[[], None]) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    assert_error(client.request("PUT", "/admin/readonly", data=nested), 400, "INVALID_REQUEST")
    assert client.request("GET", "/admin/readonly").json() == {"enabled": False}
    r = client.push_manifest(unique_repo("numbers"), "v1", nested)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_no_traceback()
