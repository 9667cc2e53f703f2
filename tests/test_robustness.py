"""Slow and abusive clients, on real sockets against a registry process, no login needed.

Each test attacks a registry started with lowered limits (timeouts of a few seconds, a few
dozen connections, and where it matters a descriptor limit of its own), so that an attack that
once took thousands of sockets and minutes takes a few hundred and seconds. While it goes on, a
newcomer's `GET /v2/` must be answered within a second and the server must stay under 300 MiB
(tests/attacks.py); afterwards no descriptor, temporary file or lock may be left.
"""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from registry.tls import write_self_signed

from .attacks import ProcessWatch, Slowloris, connect, read_response_head, run_for, wait_closed, watched
from .client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryClient, assert_error, digest_of, unique_repo
from .servers import RegistryServer
from .store_view import incoming_data

MiB = 1 << 20
#: the deadlines of the registries whose deadlines are under test (others keep the defaults, so that a
#: machine busy with other work does not cut off the test's own requests)
TIMEOUTS = {"header": "2s", "body": "2s", "keepalive": "2s"}
MakeRegistry = Callable[..., RegistryServer]


def hardened(timeouts: dict[str, str] = TIMEOUTS, **http: Any) -> dict[str, Any]:
    return {"http": {"timeouts": timeouts, **http}}


def server_log(server: RegistryServer) -> str:
    return server.log_path.read_text(errors="replace")


def test_slowloris_heads_are_cut_off_at_the_header_deadline(make_registry: MakeRegistry) -> None:
    """Request heads trickled a byte at a time are closed once http.timeouts.header has passed."""
    server = make_registry(config=hardened())
    watch = ProcessWatch(server)
    baseline = watch.descriptors()
    attack = Slowloris(server, count=40, interval=0.5)
    with watched(server) as probe:
        attack.start()
        run_for(6)
        attack.stop()
    probe.assert_held_up()
    assert attack.closed >= 40, f"the server closed only {attack.closed} trickling connections"
    server.logged("no whole request head within 2s (http.timeouts.header)")
    assert watch.settle(baseline) <= baseline


def test_slowloris_cannot_exhaust_descriptors(make_registry: MakeRegistry) -> None:
    """Twice as many trickling heads as the process has descriptors: at most http.limits.connections are
    open at once, the longest idle closed to make room, and newcomers and pushes go on."""
    limit = 128
    server = make_registry(config=hardened(limits={"connections": 48}), descriptor_limit=limit)
    watch = ProcessWatch(server)
    baseline = watch.descriptors()
    client = RegistryClient(server.url)
    repo = unique_repo("slowloris")
    attack = Slowloris(server, count=2 * limit, interval=0.5)
    with watched(server) as probe:
        attack.start()
        run_for(3)
        pushed = [client.push_blob(repo, os.urandom(64 * 1024)) for _ in range(3)]
        run_for(2)
        attack.stop()
    probe.assert_held_up()
    assert probe.peak_descriptors < baseline + 48 + 8
    assert attack.closed >= 2 * limit, f"the server closed only {attack.closed} trickling connections"
    for digest in pushed:
        assert client.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 200
    server.logged("48 connections open (http.limits.connections): closing the longest idle ones")
    assert watch.settle(baseline) <= baseline


def test_connection_limit_fits_the_descriptor_limit(make_registry: MakeRegistry) -> None:
    """The soft descriptor limit is raised to the hard one; where that is still too low for
    http.limits.connections, fewer are served, and the log says so."""
    raised = make_registry(descriptor_limit=(256, 4096))
    limits = Path(f"/proc/{ProcessWatch(raised).pid}/limits").read_text()
    assert any(line.startswith("Max open files") and line.split()[3:5] == ["4096", "4096"]
               for line in limits.splitlines()), limits
    low = make_registry(descriptor_limit=128)
    low.logged("http.limits.connections is 1000, but the descriptor limit (ulimit -n) is 128: serving at most 96 "
               "connections")


def test_silent_and_idle_connections_are_closed(make_registry: MakeRegistry) -> None:
    """A connection that says nothing is closed at the header deadline, an idle keep-alive one at the
    keep-alive deadline; a request head completed in time is served."""
    server = make_registry(config=hardened())
    silent = connect(server)
    assert wait_closed(silent, 10) < 5
    idle = connect(server)
    idle.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
    assert read_response_head(idle)[0] == 200
    assert wait_closed(idle, 10) < 5
    slow = connect(server)
    for byte in b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n":
        slow.send(bytes([byte]))
        time.sleep(0.02)
    assert read_response_head(slow)[0] == 200


def test_stalled_patch_is_cut_off_and_releases_its_upload(make_registry: MakeRegistry) -> None:
    """A PATCH whose body stops halfway holds the upload's lock only until the body deadline: the
    connection is closed, the partial chunk is dropped, and a DELETE waiting for the lock goes through."""
    server = make_registry(config=hardened())
    watch = ProcessWatch(server)
    baseline = watch.descriptors()
    client = RegistryClient(server.url)
    repo = unique_repo("stall")
    location = client.start_upload(repo)
    stalled = connect(server)
    stalled.sendall(f"PATCH {location} HTTP/1.1\r\nHost: registry\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Length: {MiB}\r\n\r\n".encode() + os.urandom(MiB // 2))
    deleted: list[requests.Response] = []
    deleter = threading.Thread(target=lambda: deleted.append(client.request("DELETE", location, timeout=30)))
    with watched(server) as probe:
        time.sleep(0.5)  # the PATCH holds the upload's lock by now
        deleter.start()
        assert wait_closed(stalled, 15) < 10
        deleter.join(timeout=15)
    probe.assert_held_up()
    assert deleted and deleted[0].status_code == 204, deleted
    assert_error(client.request("GET", location), 404, "BLOB_UPLOAD_UNKNOWN")
    server.logged("sent no byte of its request body for 2s (http.timeouts.body)")
    assert watch.settle(baseline) <= baseline


def test_stalled_patch_keeps_the_upload_as_it_was(make_registry: MakeRegistry) -> None:
    """The chunk cut off is not kept: the upload resumes from where the last whole chunk ended."""
    server = make_registry(config=hardened())
    client = RegistryClient(server.url)
    repo = unique_repo("stall")
    first, second = os.urandom(1000), os.urandom(5000)
    location = client.start_upload(repo)
    r = client.request("PATCH", location, data=first, headers={"Content-Range": f"0-{len(first) - 1}"})
    assert r.status_code == 202, r.text
    stalled = connect(server)
    stalled.sendall(f"PATCH {r.headers['Location']} HTTP/1.1\r\nHost: registry\r\n"
                    f"Content-Length: {len(second)}\r\n\r\n".encode() + second[:3000])
    assert wait_closed(stalled, 15) < 10
    status = client.request("GET", location)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{len(first) - 1}"
    r = client.request("PUT", location, params={"digest": digest_of(first + second)}, data=second,
                       headers={"Content-Range": f"{len(first)}-{len(first) + len(second) - 1}"})
    assert r.status_code == 201, r.text


def test_stalled_monolithic_push_leaves_nothing(make_registry: MakeRegistry) -> None:
    server = make_registry(config=hardened())
    data = os.urandom(3 * MiB)
    stalled = connect(server)
    stalled.sendall(f"POST /v2/{unique_repo('stall')}/blobs/uploads/?digest={digest_of(data)} HTTP/1.1\r\n"
                    f"Host: registry\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data[:2 * MiB])
    assert wait_closed(stalled, 15) < 10
    deadline = time.monotonic() + 5
    while incoming_data(server.store) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert incoming_data(server.store) == []


def _manifest_head(repo: str, length: int) -> bytes:
    return (f"PUT /v2/{repo}/manifests/latest HTTP/1.1\r\nHost: registry\r\nContent-Type: {OCI_MANIFEST}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_manifest_memory_flood_is_bounded(make_registry: MakeRegistry) -> None:
    """A hundred manifest PUTs stopping one byte short of 4 MiB: two fit in an 8 MiB budget and wait
    for their bodies, the others are refused at once with 503 and Retry-After, unread; memory stays
    bounded, and once the stalled ones are cut off, manifests are pushed again."""
    server = make_registry(config=hardened({"body": "3s"}, limits={"manifestmemory": "8MiB"}))
    body = b"{" + b" " * (4 * MiB - 2)
    repo = unique_repo("flood")
    holding: list[socket.socket] = []
    refused = 0
    with watched(server) as probe:
        for _ in range(100):
            sock = connect(server)
            sock.sendall(_manifest_head(repo, len(body) + 1))
            if select.select([sock], [], [], 0.5)[0]:  # answered before the body: refused
                status, headers = read_response_head(sock)
                assert (status, headers.get("retry-after")) == (503, "1")
                refused += 1
                sock.close()
            else:
                sock.sendall(body)
                holding.append(sock)
        for sock in holding:
            assert wait_closed(sock, 15) < 10
    probe.assert_held_up()
    assert len(holding) == 2 and refused == 98
    client = RegistryClient(server.url)
    config = client.push_blob(repo, b"{}")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG,
                "digest": config, "size": 2}, "layers": []}
    assert client.push_manifest(repo, "latest", manifest).status_code == 201


def _send_until_refused(sock: socket.socket, limit: int) -> int:
    """Bytes of body sent until the server stops taking them (at most limit)."""
    piece = b"x" * MiB
    sent = 0
    sock.settimeout(2)
    try:
        while sent < limit:
            sent += sock.send(piece)
    except OSError:
        pass
    return sent


def test_oversized_manifest_is_answered_without_reading_it(make_registry: MakeRegistry) -> None:
    """413 at once, and the connection closes rather than read the rest of a 5 GiB body."""
    server = make_registry()
    sock = connect(server)
    sock.sendall(_manifest_head(unique_repo("big"), 5 << 30))
    status, headers = read_response_head(sock)
    assert status == 413 and headers.get("connection") == "close"
    assert _send_until_refused(sock, 512 * MiB) < 64 * MiB


def test_manifest_naming_thousands_of_missing_blobs(make_registry: MakeRegistry) -> None:
    """Four 3.7 MB manifests naming 26,000 unknown layers each, at once (again, until the probe has
    run enough times): each is refused listing the first 100, and the registry keeps answering meanwhile."""
    server = make_registry()
    client = RegistryClient(server.url)
    repo = unique_repo("refs")
    config = client.push_blob(repo, b"{}")
    layers = [{"mediaType": OCI_LAYER, "digest": digest_of(i.to_bytes(4, "big")), "size": 4} for i in range(26_000)]
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 2}, "layers": layers}).encode()
    answers: list[requests.Response | Exception] = []

    def push() -> None:
        try:
            answers.append(RegistryClient(server.url).push_manifest(repo, "many", body))
        except requests.RequestException as exc:
            answers.append(exc)

    with watched(server) as probe:
        while not probe.has_enough():  # on a quick machine one round is over before the probe has its say
            pushers = [threading.Thread(target=push) for _ in range(4)]
            for pusher in pushers:
                pusher.start()
            for pusher in pushers:
                pusher.join()
    probe.assert_held_up()
    assert answers and len(answers) % 4 == 0
    for answer in answers:
        assert isinstance(answer, requests.Response), answer
        assert_error(answer, 400, "MANIFEST_BLOB_UNKNOWN")
        assert len(answer.content) < 32 * 1024
        missing = answer.json()["errors"][0]["detail"]["missing"]
        assert missing == [layer["digest"] for layer in layers[:100]]


def test_a_client_that_stops_reading_is_cut_off(tmp_path: Path, make_registry: MakeRegistry) -> None:
    """A blob GET whose client takes nothing more (over TLS, where the bytes pass through the server's
    send buffer) is closed after http.timeouts.body rather than held for ever."""
    cert, key = tmp_path / "registry.crt", tmp_path / "registry.key"
    write_self_signed(["127.0.0.1"], cert, key)
    server = make_registry(config=hardened(tls={"certificate": str(cert), "key": str(key)}))
    client = RegistryClient(server.url)
    client.session.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify
    client.session.verify = str(cert)
    repo = unique_repo("reader")
    data = os.urandom(64 * MiB)
    digest = client.push_blob(repo, data)
    context = ssl.create_default_context(cafile=str(cert))
    with context.wrap_socket(connect(server), server_hostname="127.0.0.1") as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: registry\r\n\r\n".encode())
        received = len(sock.recv(65536))
        deadline = time.monotonic() + 15
        while "took no byte of the response for 2s" not in server_log(server):
            assert time.monotonic() < deadline, "the server waited on a client that reads nothing"
            time.sleep(0.2)
        sock.settimeout(10)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except (ssl.SSLError, ConnectionError):
            pass
    assert received < len(data)


def test_wrong_protocol_gets_go_s_answer_and_one_log_line(tmp_path: Path, make_registry: MakeRegistry) -> None:
    """A TLS handshake on the plain port gets Distribution's 400 and a log line saying what happened,
    not an access log line; plain HTTP on a TLS port gets "Client sent an HTTP request to an HTTPS server."."""
    plain = make_registry()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with connect(plain) as sock:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(sock, server_hostname="127.0.0.1")
    log = plain.logged("sent a TLS handshake to this plain-HTTP port: it expects https")
    assert "UNKNOWN" not in log
    with connect(plain) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400 Bad Request\r\n")

    cert, key = tmp_path / "registry.crt", tmp_path / "registry.key"
    write_self_signed(["127.0.0.1"], cert, key)
    tls = make_registry(config={"http": {"tls": {"certificate": str(cert), "key": str(key)}}})
    answer = requests.get(f"http://127.0.0.1:{tls.port}/v2/", timeout=10)
    assert answer.status_code == 400
    assert answer.text == "Client sent an HTTP request to an HTTPS server.\n"
    tls.logged("sent plain HTTP to this TLS port")
    session = requests.Session()
    session.trust_env = False
    assert session.get(f"{tls.url}/v2/", verify=str(cert), timeout=10).status_code == 200
