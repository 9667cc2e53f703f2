"""Maintenance: `registry verify` (hash every stored object, quarantine corrupt ones), `registry du`
(storage per repository) and the read-only switch at /admin/readonly, over real processes.

Damage is done the way it happens in practice, on the filesystem store behind the server's back:
a byte flipped in a blob's data file, a data file gone. What verify must report is derived from
what each test pushed and damaged.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import requests

from .auth_helpers import client_for, write_htpasswd
from .cli import run_registry, store_config
from .client import (
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    RegistryClient,
    assert_error,
    blob_file,
    descriptor,
    digest_of,
    unique_repo,
)
from .servers import MakeRegistry, RegistryServer, free_port


def layer() -> bytes:
    return uuid.uuid4().bytes * 512


def run_cli(server: RegistryServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`registry <args> --config <a config naming the server's store>`, as an operator runs it."""
    return run_registry(*args, "--config", str(store_config(server)))


def verify(server: RegistryServer, *flags: str) -> tuple[int, dict[str, list[str]], str]:
    """Run `registry verify`: (exit status, findings by kind: the lines' second word, summary)."""
    done = run_cli(server, "verify", *flags)
    assert done.returncode in (0, 1), done.stderr
    found: dict[str, list[str]] = {"corrupt": [], "missing": [], "broken": [], "quarantined": []}
    lines = done.stdout.splitlines()
    for line in lines[:-1]:
        kind, subject = line.split()[:2]
        found[kind].append(subject)
    return done.returncode, found, lines[-1]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_reports_corrupt_and_missing_data_and_what_it_breaks(make_registry: MakeRegistry) -> None:
    """A flipped byte is corrupt, a deleted data file missing; every tag whose manifest (or index
    child) needs either is broken, in every repository; untouched images are not. --quarantine
    unlinks the corrupt blob and moves it aside (then 404), and pushing the images again repairs all."""
    server = make_registry()
    client = RegistryClient(server.url)
    apps, tools, other = unique_repo("verify"), unique_repo("verify"), unique_repo("verify")
    shared = layer()
    web, db, cli, healthy = Image([shared, layer()]), Image([layer()]), Image([shared]), Image([layer()])
    web.push(client, apps, "web", "web-1.0")
    db.push(client, apps, "db")
    cli.push(client, tools, "cli")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [descriptor(OCI_MANIFEST, cli.manifest)]}).encode()
    assert client.push_manifest(tools, "multi", index, OCI_INDEX).status_code == 201
    healthy.push(client, other, "ok")
    everything = web.content | db.content | cli.content | healthy.content | {digest_of(index): len(index)}

    status, found, summary = verify(server)
    assert status == 0 and found == {"corrupt": [], "missing": [], "broken": [], "quarantined": []}
    assert summary.startswith(f"checked {len(everything)} object(s), {sum(everything.values())} bytes: "
                              "0 corrupt, 0 missing")

    flip_a_byte(blob_file(server.root, digest_of(shared)))
    gone = digest_of(db.layers[0])
    blob_file(server.root, gone).unlink()
    status, found, summary = verify(server)
    assert status == 1
    assert found["corrupt"] == [digest_of(shared)]
    assert found["missing"] == [gone]
    assert sorted(found["broken"]) == sorted([f"{apps}:web", f"{apps}:web-1.0", f"{apps}:db",
                                              f"{tools}:cli", f"{tools}:multi"])
    assert "1 corrupt, 1 missing; 2 repositories and 5 tag(s) broken" in summary
    assert found["quarantined"] == []
    assert blob_file(server.root, digest_of(shared)).exists()  # without --quarantine nothing moves

    status, found, summary = verify(server, "--quarantine")
    assert status == 1 and found["quarantined"] == [digest_of(shared)]
    kept = server.root / "docker/registry/v2/quarantine/sha256" / digest_of(shared).split(":")[1]
    assert kept.read_bytes() != shared and len(kept.read_bytes()) == len(shared)
    assert not blob_file(server.root, digest_of(shared)).exists()
    for repo in (apps, tools):
        for method in ("GET", "HEAD"):
            assert_error(client.request(method, f"/v2/{repo}/blobs/{digest_of(shared)}"), 404, "BLOB_UNKNOWN")
    assert client.request("GET", f"/v2/{other}/manifests/ok").status_code == 200

    status, found, _ = verify(server)  # the quarantined blob is now missing for the manifests that need it
    assert status == 1 and found["corrupt"] == []
    assert sorted(found["missing"]) == sorted([digest_of(shared), gone])

    web.push(client, apps, "web")
    db.push(client, apps, "db")
    cli.push(client, tools, "cli")
    status, found, summary = verify(server)
    assert (status, found["missing"], found["broken"]) == (0, [], []), summary
    r = client.request("GET", f"/v2/{tools}/blobs/{digest_of(shared)}")
    assert r.status_code == 200 and r.content == shared


def test_du_splits_each_repository_into_unique_and_shared_bytes(make_registry: MakeRegistry) -> None:
    """A blob two repositories' manifests reference is shared for both; the total counts every object
    once, with data no manifest references counted apart (what garbage collection looks at)."""
    server = make_registry()
    client = RegistryClient(server.url)
    first, second, third = unique_repo("du"), unique_repo("du"), unique_repo("du")
    base = layer()
    one, two, same = Image([base, layer()]), Image([base, layer() * 2]), Image([layer()])
    one.push(client, first, "v1")
    two.push(client, second, "v1")
    same.push(client, second, "same")
    same.push(client, third, "same")
    orphan = layer() * 3
    client.push_blob(third, orphan)
    assert client.request("DELETE", f"/v2/{third}/blobs/{digest_of(orphan)}").status_code == 202

    done = run_cli(server, "du")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["repository", "unique_bytes", "shared_bytes", "total_bytes"]
    rows = {name: tuple(map(int, numbers)) for name, *numbers in (line.split() for line in lines[1:-1])}

    contents = {first: one.content, second: two.content | same.content, third: same.content}
    expected = {}
    for repo, content in contents.items():
        shared = sum(size for digest, size in content.items()
                     if any(digest in c for other, c in contents.items() if other != repo))
        unique = sum(content.values()) - shared
        expected[repo] = (unique, shared, unique + shared)
    assert rows == expected
    assert rows[first][1] == len(base)  # only the base layer is shared with another repository
    assert rows[third][0] == 0  # all it holds is also in `second`
    stored = one.content | two.content | same.content
    total = sum(stored.values()) + len(orphan)
    assert lines[-1] == (f"total {total} bytes in {len(stored) + 1} object(s), "
                         f"{len(orphan)} bytes referenced by no manifest; garbage collection would free "
                         f"0 bytes in 0 object(s) (grace 3600s)")  # the orphan is younger than that


def _push_attempt(client: RegistryClient, repo: str) -> list[requests.Response]:
    """A blob upload and a manifest push: what read-only mode must refuse."""
    data = uuid.uuid4().bytes
    image = Image([data])
    return [client.request("POST", f"/v2/{repo}/blobs/uploads/"),
            client.push_manifest(repo, "t", image.manifest)]


def set_readonly(client: RegistryClient, enabled: bool) -> requests.Response:
    return client.request("PUT", "/admin/readonly", json={"enabled": enabled})


def test_readonly_switch_at_runtime_blocks_and_unblocks_pushes(make_registry: MakeRegistry) -> None:
    """Without auth, a loopback client switches read-only mode on (writes get 405 UNSUPPORTED
    "read-only", pulls still work) and off again, with no restart; a bad body is refused."""
    server = make_registry()
    client = RegistryClient(server.url)
    repo = unique_repo("ro")
    image = Image([layer()])
    image.push(client, repo, "before")
    assert client.request("GET", "/admin/readonly").json() == {"enabled": False}

    r = set_readonly(client, True)
    assert r.status_code == 200 and r.json() == {"enabled": True}
    assert client.request("GET", "/admin/readonly").json() == {"enabled": True}
    for refused in _push_attempt(client, repo):
        assert_error(refused, 405, "UNSUPPORTED")
        assert "read-only" in refused.json()["errors"][0]["message"]
    assert_error(client.request("DELETE", f"/v2/{repo}/manifests/{image.digest}"), 405, "UNSUPPORTED")
    pulled = client.request("GET", f"/v2/{repo}/manifests/before", headers={"Accept": OCI_MANIFEST})
    assert pulled.status_code == 200 and pulled.content == image.manifest

    for body in (b"", b"{}", b'{"enabled": "yes"}', b"[true]"):
        assert_error(client.request("PUT", "/admin/readonly", data=body), 400, "INVALID_REQUEST")
    assert client.request("GET", "/admin/readonly").json() == {"enabled": True}

    assert set_readonly(client, False).json() == {"enabled": False}
    Image([layer()]).push(client, repo, "after")
    assert server.proc is not None and server.proc.poll() is None  # the same process throughout


def _outward_address() -> str:
    """This machine's address towards other hosts (no packet is sent): a client that is not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("203.0.113.1", 9))
        address = probe.getsockname()[0]
    assert not address.startswith("127."), "the tests need a non-loopback IPv4 address"
    return address


def test_without_auth_only_direct_loopback_clients_may_switch(tmp_path: Path) -> None:
    """A client on another address, or one a proxy forwarded (X-Forwarded-For), is refused 403."""
    port = free_port()
    server = RegistryServer(tmp_path / "data", tmp_path / "server.log", args=["--addr", f"0.0.0.0:{port}"])
    server.port = port
    server.start()
    try:
        remote = RegistryClient(f"http://{_outward_address()}:{port}")
        assert_error(set_readonly(remote, True), 403, "DENIED")
        assert_error(remote.request("GET", "/admin/readonly"), 403, "DENIED")
        local = RegistryClient(server.url)
        proxied = local.request("PUT", "/admin/readonly", json={"enabled": True},
                                headers={"X-Forwarded-For": "198.51.100.7"})
        assert_error(proxied, 403, "DENIED")
        assert local.request("GET", "/admin/readonly").json() == {"enabled": False}
        Image([layer()]).push(remote, unique_repo("ro"), "still-writable")
    finally:
        server.stop()


def test_with_auth_only_admins_may_switch(tmp_path: Path, make_registry: MakeRegistry) -> None:
    """Anonymous callers are challenged, a user outside the `admins` group is denied (even one
    allowed everything on every repository), and an admin's switch applies to everyone."""
    passwords = {"alice": "alice-pw", "bob": "bob-pw"}
    write_htpasswd(tmp_path / "htpasswd", passwords)
    access: dict[str, Any] = {"groups": {"admins": ["alice"]},
                              "rules": [{"repositories": ["*"], "users": ["alice", "bob"], "actions": ["*"]}]}
    server = make_registry(config={"auth": {"htpasswd": {"realm": "test", "path": str(tmp_path / "htpasswd")},
                                            "access": access}})
    anonymous = RegistryClient(server.url)
    bob = client_for(server.url, auth=("bob", passwords["bob"]))
    alice = client_for(server.url, auth=("alice", passwords["alice"]))
    repo = unique_repo("ro")

    challenged = set_readonly(anonymous, True)
    assert_error(challenged, 401, "UNAUTHORIZED")
    assert challenged.headers["WWW-Authenticate"].startswith("Basic ")
    assert_error(set_readonly(bob, True), 403, "DENIED")
    assert_error(bob.request("GET", "/admin/readonly"), 403, "DENIED")
    Image([layer()]).push(bob, repo, "bob-was-not-stopped")

    assert set_readonly(alice, True).json() == {"enabled": True}
    for refused in _push_attempt(bob, repo):
        assert_error(refused, 405, "UNSUPPORTED")
    assert_error(set_readonly(bob, False), 403, "DENIED")
    assert alice.request("GET", "/admin/readonly").json() == {"enabled": True}
    assert set_readonly(alice, False).json() == {"enabled": False}
    Image([layer()]).push(bob, repo, "after")
