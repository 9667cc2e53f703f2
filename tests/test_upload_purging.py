"""Upload purging: abandoned uploads older than the configured age disappear in the background."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest

from registry.config import parse_duration

from .client import RegistryClient, unique_repo
from .s3 import s3_client
from .servers import MotoServer, RegistryServer


def test_abandoned_uploads_are_purged_and_recent_ones_kept(make_registry: Callable[..., RegistryServer],
                                                           tmp_path: Path) -> None:
    root = tmp_path / "store"
    writer = make_registry(root=root)
    client = RegistryClient(writer.url)
    repo = unique_repo()
    old = client.start_upload(repo)
    assert client.request("PATCH", old, data=b"x" * 1000).status_code == 202
    uploads = root / f"docker/registry/v2/repositories/{repo}/_uploads"
    old_id = old.rsplit("/", 1)[1]
    # Distribution's format, with nanoseconds, two weeks ago
    (uploads / old_id / "startedat").write_text("2026-01-01T10:00:00.123456789Z")
    fresh = client.start_upload(repo)
    writer.stop()

    config = {"storage": {"maintenance": {"uploadpurging": {"enabled": True, "age": "168h", "interval": "1s"}}}}
    server = make_registry(root=root, config=config)
    client = RegistryClient(server.url)
    deadline = time.monotonic() + 20
    while (uploads / old_id).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (uploads / old_id).exists()
    assert client.request("GET", old).status_code == 404
    assert client.request("GET", fresh).status_code == 204
    assert "purged 1 abandoned upload" in server.log_path.read_text()


def test_dry_run_reports_but_keeps(make_registry: Callable[..., RegistryServer], tmp_path: Path) -> None:
    root = tmp_path / "store"
    config = {"storage": {"maintenance": {"uploadpurging": {"age": "1s", "interval": "1s", "dryrun": True}}}}
    server = make_registry(root=root, config=config)
    client = RegistryClient(server.url)
    location = client.start_upload(unique_repo())
    deadline = time.monotonic() + 20
    while "would purge" not in server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "would purge" in server.log_path.read_text()
    assert client.request("GET", location).status_code == 204


@pytest.mark.parametrize("text, seconds", [("168h", 604800), ("1h30m", 5400), ("90s", 90), ("250ms", 0.25), (45, 45)])
def test_durations_read_like_distribution(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "h", "1x", "1h 30m"])
def test_bad_durations_refused(text: str) -> None:
    """As in Go, a duration in text needs its unit; only a YAML number is taken as seconds."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_s3_abandoned_uploads_and_multipart_uploads_are_purged(make_registry: Callable[..., RegistryServer],
                                                               moto: MotoServer) -> None:
    """On S3 purging also aborts multipart uploads left behind (a replica that died while
    composing a blob), and removes upload sessions by their startedat, in the bucket."""
    writer = make_registry(backend="s3", config={"storage": {"maintenance": {"uploadpurging": {"enabled": False}}}})
    s3 = writer.config["storage"]["s3"]
    bucket, root = s3["bucket"], s3["rootdirectory"].strip("/")
    client = RegistryClient(writer.url)
    location = client.start_upload(unique_repo())
    assert client.request("PATCH", location, data=b"y" * 1000).status_code == 202
    boto = s3_client(moto)
    stale = boto.create_multipart_upload(Bucket=bucket, Key=f"{root}/docker/registry/v2/blobs/sha256/ab/abandoned/data")
    outside = boto.create_multipart_upload(Bucket=bucket, Key="not-the-registry/data")
    writer.stop()
    time.sleep(1.5)  # both are now older than the age below

    config = {"storage": {"s3": s3, "maintenance": {"uploadpurging": {"age": "1s", "interval": "1s"}}}}
    server = make_registry(config=config)
    deadline = time.monotonic() + 30
    while "purged" not in server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "purged 1 abandoned upload(s) and 1 incomplete multipart upload(s)" in server.log_path.read_text()
    open_uploads = {u["UploadId"] for u in boto.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert stale["UploadId"] not in open_uploads
    assert outside["UploadId"] in open_uploads  # outside rootdirectory: not the registry's to purge
    assert RegistryClient(server.url).request("GET", location).status_code == 404
