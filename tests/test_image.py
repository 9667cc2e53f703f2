"""The image deploy/Dockerfile builds, run as registry:2 is: a mounted config, the data volume, port and health.

The image is built on a base made on this machine (tests/engines.py) and run with the host's network; skopeo on
the host pushes to it and pulls from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests
import yaml

from registry.version import revision, version

from .cli import REPO_ROOT
from .engines import Dockerd, expected_version_line, wait_until
from .oci_layout import Layout, assert_same_image, copy, small_image
from .servers import free_port

#: real engines: one xdist group, so one dockerd and one image build per run (make test uses --dist loadgroup)
pytestmark = [pytest.mark.xdist_group("engines"), pytest.mark.slow]

#: the image's paths, registry:2's
CONFIG_PATH = "/etc/docker/registry/config.yml"
DATA_DIR = "/var/lib/registry"
#: what `docker stop` gives the registry before SIGKILL; in-flight requests get 30 s, an idle registry needs none
STOP_GRACE = "30"

RunContainer = Callable[..., str]


@pytest.fixture
def run_container(dockerd: Dockerd, registry_image: str) -> Iterator[RunContainer]:
    """`docker run -d` the image with the host's network; every container is removed at the end."""
    names: list[str] = []

    def run(*options: str) -> str:
        name = f"registry-test-{len(names)}-{free_port()}"
        names.append(name)
        dockerd("run", "-d", "--name", name, "--network", "host", "--health-interval", "1s", *options, registry_image)
        return name

    yield run
    for name in names:
        dockerd("rm", "--force", "--volumes", name, check=False)


def wait_healthy(dockerd: Dockerd, name: str) -> None:
    """The image's HEALTHCHECK command (probed every second here) reports healthy."""
    def status() -> bool:
        state = json.loads(dockerd("inspect", "--format", "{{json .State}}", name).stdout)
        assert state["Status"] == "running", dockerd("logs", name).stderr
        assert state["Health"]["Status"] != "unhealthy", state["Health"]
        return state["Health"]["Status"] == "healthy"

    wait_until(status, f"container {name} healthy")


def push_and_pull(host: str, tmp_path: Path) -> None:
    source = small_image(tmp_path / "source", "v1")
    copy(source.ref("v1"), f"docker://{host}/deploy/image:v1")
    copy(f"docker://{host}/deploy/image:v1", f"oci:{tmp_path / 'pulled'}:v1")
    assert_same_image(source, "v1", Layout(tmp_path / "pulled"), "v1")


def test_the_image_serves_with_a_mounted_config_as_a_non_root_user_and_stops_cleanly_on_sigterm(
        dockerd: Dockerd, run_container: RunContainer, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"version": 0.1, "http": {"addr": f"127.0.0.1:{port}"},
                                      "storage": {"filesystem": {"rootdirectory": DATA_DIR}}}))
    config.chmod(0o644)
    name = run_container("-v", f"{config}:{CONFIG_PATH}:ro")
    wait_healthy(dockerd, name)

    push_and_pull(f"127.0.0.1:{port}", tmp_path)
    dockerd("exec", name, "test", "-d", f"{DATA_DIR}/docker/registry/v2/repositories/deploy/image")
    status = dict(line.split(":", 1) for line in dockerd("exec", name, "cat", "/proc/1/status").stdout.splitlines())
    assert status["Uid"].split() == ["10001"] * 4
    assert status["Gid"].split() == ["10001"] * 4

    dockerd("stop", "--time", STOP_GRACE, name)
    state = json.loads(dockerd("inspect", "--format", "{{json .State}}", name).stdout)
    assert state["ExitCode"] == 0, state  # 137 would mean SIGKILL at the end of the grace period
    logs = dockerd("logs", name)
    assert "Traceback" not in logs.stdout + logs.stderr


def test_the_default_config_stores_in_var_lib_registry_and_the_image_carries_version_and_revision(
        dockerd: Dockerd, registry_image: str, run_container: RunContainer, tmp_path: Path) -> None:
    port = free_port()
    name = run_container("-e", f"REGISTRY_HTTP_ADDR=127.0.0.1:{port}")
    wait_healthy(dockerd, name)
    push_and_pull(f"127.0.0.1:{port}", tmp_path)
    dockerd("exec", name, "test", "-d", f"{DATA_DIR}/docker/registry/v2/repositories/deploy/image")

    labels = json.loads(dockerd("image", "inspect", "--format", "{{json .Config.Labels}}", registry_image).stdout)
    assert labels["org.opencontainers.image.version"] == version()
    assert labels["org.opencontainers.image.revision"] == revision()
    printed = dockerd("run", "--rm", "--network", "host", "--entrypoint", "registry", registry_image, "--version")
    assert printed.stdout.strip() == expected_version_line()
    assert f"registry {version()}" in dockerd("logs", name).stderr  # the startup line
    served = requests.get(f"http://127.0.0.1:{port}/openapi.yaml", timeout=30)  # a link in the package
    assert served.status_code == 200 and served.content == (REPO_ROOT / "openapi.yaml").read_bytes()
