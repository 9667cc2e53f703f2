"""Configuration precedence and the `registry serve` process: startup line, access log, SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable

import yaml

from registry.config import load_config

from .client import RegistryClient, unique_repo
from .servers import RegistryServer


def test_defaults_match_the_readme() -> None:
    config = load_config(environ={})
    assert config.http.host_port == ("127.0.0.1", 5000)
    assert config.storage.filesystem is not None and config.storage.filesystem.rootdirectory == "./data"
    assert config.storage.delete.enabled is True
    assert config.storage.driver == "filesystem"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({
        "http": {"addr": "127.0.0.1:6000"},
        "storage": {"filesystem": {"rootdirectory": "/from-file"}, "delete": {"enabled": True}},
    }))
    environ = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/from-env", "REGISTRY_STORAGE_DELETE_ENABLED": "false"}
    config = load_config(str(path), environ=environ, overrides={"http": {"addr": "0.0.0.0:7000"}})
    assert config.http.host_port == ("0.0.0.0", 7000)
    assert config.storage.filesystem is not None and config.storage.filesystem.rootdirectory == "/from-env"
    assert config.storage.delete.enabled is False


def test_distribution_style_addr_without_host_listens_everywhere() -> None:
    assert load_config(environ={"REGISTRY_HTTP_ADDR": ":5001"}).http.host_port == ("0.0.0.0", 5001)


def test_inmemory_driver_is_selected_by_its_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("storage:\n  inmemory: {}\n")
    assert load_config(str(path), environ={}).storage.driver == "inmemory"


def test_server_logs_where_it_listens_and_each_request_then_stops_on_sigterm(
    make_registry: Callable[..., RegistryServer], tmp_path: Path
) -> None:
    server = make_registry(root=tmp_path / "store")
    client = RegistryClient(server.url)
    repo = unique_repo()
    client.push_image(repo, "v1")
    assert client.request("GET", f"/v2/{repo}/manifests/v1").status_code == 200
    proc = server.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    log = server.log_path.read_text()
    assert f"listening on http://127.0.0.1:{server.port}" in log
    assert str(tmp_path / "store") in log
    assert f'"GET /v2/{repo}/manifests/v1 HTTP/1.1" 200' in log


def test_read_only_config_refuses_writes_but_serves_reads(make_registry: Callable[..., RegistryServer],
                                                         tmp_path: Path) -> None:
    root = tmp_path / "store"
    writable = make_registry(root=root)
    repo = unique_repo()
    RegistryClient(writable.url).push_image(repo, "v1")
    writable.stop()
    server = make_registry(root=root, config={"storage": {"maintenance": {"readonly": {"enabled": True}}}})
    client = RegistryClient(server.url)
    assert client.request("GET", f"/v2/{repo}/manifests/v1").status_code == 200
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 405
    assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert "read-only" in r.json()["errors"][0]["message"]
