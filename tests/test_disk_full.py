"""A full disk, for real: the registry's store on a 40 MiB tmpfs (mounting one needs root, as `make
test` runs). Every kind of write that meets a full disk is answered 507 with an UNAVAILABLE error
envelope and one log line naming the path and the free space; no temporary file outlives the
failed write, a failed chunk leaves its upload as it was, what was stored stays correct, and once
there is room again pushes succeed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from .client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryClient, assert_error, descriptor, digest_of, \
    unique_repo
from .servers import RegistryServer
from .store_view import incoming_data

MiB = 1 << 20
DISK = "40m"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of its own, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"mounting a tmpfs needs root (make test runs as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all the disk's room but `leave` bytes."""
    filler = disk / "filler"
    size = shutil.disk_usage(disk).free - leave + (filler.stat().st_size if filler.exists() else 0)
    with open(filler, "wb") as f:
        f.truncate(0)
        for _ in range(size // MiB):
            f.write(b"\0" * MiB)
        f.write(b"\0" * (size % MiB))
    return filler


def temp_files(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".tmp-*")]


def assert_full(response: object) -> None:
    assert_error(response, 507, "UNAVAILABLE")  # type: ignore[arg-type]


def test_full_disk_is_507_and_leaves_nothing_behind(disk: Path, make_registry: Callable[..., RegistryServer]) -> None:
    server = make_registry(root=disk / "data")
    client = RegistryClient(server.url)
    repo = unique_repo("full")
    kept = {client.push_blob(repo, data): data for data in (os.urandom(MiB), os.urandom(2 * MiB))}
    config = client.push_blob(repo, b"{}")
    big = os.urandom(8 * MiB)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 2},
                "layers": [descriptor(OCI_LAYER, data) for data in kept.values()]}
    session = client.start_upload(repo)
    assert client.push_manifest(repo, "v1", manifest).status_code == 201
    other = {**manifest, "annotations": {"another": "manifest"}}

    filler = fill(disk, 4 * MiB)
    # a monolithic push, and a chunk, bigger than the room left
    assert_full(client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(big)}, data=big))
    assert_full(client.request("PATCH", session, data=big, headers={"Content-Range": f"0-{len(big) - 1}"}))
    assert client.request("GET", session).headers["Range"] == "0-0"  # the chunk is not half kept
    assert incoming_data(server.store) == []

    fill(disk, 0)
    # no room at all: starting an upload, a new manifest, a new tag on a stored one
    assert_full(client.request("POST", f"/v2/{repo}/blobs/uploads/"))
    assert_full(client.push_manifest(repo, "other", other))
    assert_full(client.push_manifest(repo, "v2", manifest))
    assert client.request("GET", f"/v2/{repo}/manifests/v2").status_code == 404
    assert temp_files(server.root) == []
    log = server.logged("storage full serving PUT")  # logged before the answer, written within a loop turn
    assert "Traceback" not in log
    assert re.search(r"storage full serving PUT .*: no space left on the device writing docker/registry/v2/\S+ "
                     r"\([\d,]+ bytes free\)", log), log

    filler.unlink()
    for digest, data in kept.items():  # what was stored is intact
        assert client.request("GET", f"/v2/{repo}/blobs/{digest}").content == data
    assert client.request("GET", f"/v2/{repo}/manifests/v1").content == json.dumps(manifest).encode()
    assert client.push_blob(repo, big) == digest_of(big)
    assert client.push_manifest(repo, "v2", manifest).status_code == 201
    assert client.push_manifest(repo, "other", other).status_code == 201
    r = client.request("PATCH", session, data=b"resumed", headers={"Content-Range": "0-6"})
    assert r.status_code == 202, r.text
    assert temp_files(server.root) == []
