"""docker and podman pull Docker Hub names through the registry in mirror mode, configured as the README says.

The "Docker Hub" here is a second registry holding library/alpine:3.20; the engines cannot reach the real one, so
a pull that did not go through the mirror fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .client import RegistryClient
from .engines import Dockerd, Podman, readme_block
from .servers import MakeRegistry, RegistryServer

#: real engines: one xdist group, so one dockerd and one image build per run (make test uses --dist loadgroup)
pytestmark = [pytest.mark.xdist_group("engines"), pytest.mark.slow]

README_MIRROR = "mirror.example.com:5000"


def upstream_with_alpine(dockerd: Dockerd, make_registry: MakeRegistry, tmp_path: Path) -> tuple[RegistryServer, list[str]]:
    """A registry holding library/alpine:3.20 (an image made here), and the image's diff_ids."""
    upstream = make_registry()
    return upstream, dockerd.publish_new_image(tmp_path, f"{upstream.host}/library/alpine:3.20", 2)


def cached_tags(mirror: RegistryServer, repo: str) -> list[str]:
    r = RegistryClient(mirror.url).request("GET", f"/v2/{repo}/tags/list")
    assert r.status_code == 200, r.text
    return r.json()["tags"]


def test_docker_pulls_a_docker_hub_name_through_registry_mirrors(dockerd: Dockerd, make_registry: MakeRegistry,
                                                                  tmp_path: Path) -> None:
    upstream, diff_ids = upstream_with_alpine(dockerd, make_registry, tmp_path)
    mirror = make_registry(config={"proxy": {"remoteurl": upstream.url}})
    daemon_json = json.loads(readme_block('"registry-mirrors"').replace(README_MIRROR, mirror.host))
    client = Dockerd(tmp_path / "dockerd-with-mirror.log", daemon_json).start()
    try:
        client("pull", "alpine:3.20")
        assert client.diff_ids("alpine:3.20") == diff_ids
    finally:
        client.stop()
    assert cached_tags(mirror, "library/alpine") == ["3.20"]


def test_podman_pulls_a_docker_hub_name_through_a_registries_conf_mirror(
        dockerd: Dockerd, podman: Podman, make_registry: MakeRegistry, tmp_path: Path) -> None:
    upstream, diff_ids = upstream_with_alpine(dockerd, make_registry, tmp_path)
    mirror = make_registry(config={"proxy": {"upstreams": [{"prefix": "docker.io", "remoteurl": upstream.url}]}})
    podman.registries_conf.write_text(readme_block("[[registry.mirror]]").replace(README_MIRROR, mirror.host))
    podman("pull", "docker.io/library/alpine:3.20")
    assert podman.diff_ids("docker.io/library/alpine:3.20") == diff_ids
    assert cached_tags(mirror, "docker.io/library/alpine") == ["3.20"]
