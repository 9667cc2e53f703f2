"""podman as a client: it pulls what docker pushed, pushes OCI, Docker v2s2 and zstd, and docker pulls its pushes.

podman keeps its own storage and credentials (tests/engines.py); `--tls-verify=false` lets it speak plain http to
the registry on the host, as the README shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .client import DOCKER_MANIFEST, OCI_MANIFEST, RegistryClient
from .auth_helpers import write_htpasswd
from .engines import Dockerd, Podman, readme_block, run_shell
from .oci_layout import ACCEPT_ALL
from .servers import MakeRegistry

#: real engines: one xdist group, so one dockerd and one image build per run (make test uses --dist loadgroup)
pytestmark = [pytest.mark.xdist_group("engines"), pytest.mark.slow]

OCI_ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


def stored_manifest(client: RegistryClient, repo: str, tag: str) -> dict:
    r = client.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert r.status_code == 200, r.text
    return r.json()


def test_podman_pulls_what_docker_pushed(dockerd: Dockerd, podman: Podman, make_registry: MakeRegistry,
                                         tmp_path: Path) -> None:
    registry = make_registry()
    ref = f"{registry.host}/team/from-docker:1"
    diff_ids = dockerd.publish_new_image(tmp_path, ref, 3)

    podman("pull", "--tls-verify=false", ref)
    assert podman.diff_ids(ref) == diff_ids


@pytest.mark.parametrize("format_, media_type", [("oci", OCI_MANIFEST), ("v2s2", DOCKER_MANIFEST)])
def test_docker_pulls_what_podman_pushed(dockerd: Dockerd, podman: Podman, make_registry: MakeRegistry,
                                         tmp_path: Path, format_: str, media_type: str) -> None:
    registry = make_registry()
    ref = f"{registry.host}/team/from-podman:{format_}"
    diff_ids = podman.load_new_image(tmp_path, ref, 2)
    podman("push", "--tls-verify=false", "--format", format_, ref)
    assert stored_manifest(RegistryClient(registry.url), "team/from-podman", format_)["mediaType"] == media_type

    dockerd("pull", ref)
    assert dockerd.diff_ids(ref) == diff_ids
    dockerd("rmi", ref)


def test_the_readme_podman_commands(podman: Podman, make_registry: MakeRegistry, tmp_path: Path) -> None:
    """The README's podman lines, run as they are, on a registry with htpasswd auth (alice, $PASSWORD)."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {"alice": "readme-password"})
    registry = make_registry(config={"auth": {"htpasswd": {"path": str(htpasswd)}}})
    client = RegistryClient(registry.url)
    client.session.auth = ("alice", "readme-password")
    env = {**podman.env, "PASSWORD": "readme-password"}
    diff_ids = podman.load_new_image(tmp_path, "team/alpine:3.20", 2)
    run_shell(readme_block("podman push --tls-verify=false team/alpine").replace("127.0.0.1:5000", registry.host), env)
    assert stored_manifest(client, "team/alpine", "3.20-docker")["mediaType"] == DOCKER_MANIFEST
    assert podman.diff_ids(f"{registry.host}/team/alpine:3.20") == diff_ids

    zstd_ids = podman.load_new_image(tmp_path, "team/app:2.0", 2)
    run_shell(readme_block("--compression-format zstd").replace("127.0.0.1:5000", registry.host), env)
    layers = stored_manifest(client, "team/app", "2.0")["layers"]
    assert [layer["mediaType"] for layer in layers] == [OCI_ZSTD_LAYER] * 2
    ref = f"{registry.host}/team/app:2.0"
    podman("rmi", "team/app:2.0")
    assert podman("image", "exists", ref, check=False).returncode == 1
    podman("pull", "--tls-verify=false", ref)
    assert podman.diff_ids(ref) == zstd_ids
