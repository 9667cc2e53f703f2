"""Upload purging: abandoned uploads older than the configured age disappear in the background."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest

from registry.durations import parse_duration

from .client import RegistryClient, unique_repo
from .servers import RegistryServer


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
