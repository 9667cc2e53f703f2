"""docker as a client of the registry: login, push, pull, pull by digest, layers reused, a tag moved.

dockerd (tests/engines.py) pushes to and pulls from a registry process on the host, with htpasswd (Basic) and
with the built-in token service. The images are `docker load`ed from tarballs written here or `docker import`ed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .auth_helpers import write_htpasswd
from .client import RegistryClient
from .engines import Dockerd, layer_tar, readme_block, run_shell, sha256_digest
from .servers import MakeRegistry, RegistryServer

#: real engines: one xdist group, so one dockerd and one image build per run (make test uses --dist loadgroup)
pytestmark = [pytest.mark.xdist_group("engines"), pytest.mark.slow]

USER, PASSWORD = "alice", "docker-client-password"
DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


@pytest.fixture(params=["htpasswd", "token"])
def secured(request: pytest.FixtureRequest, make_registry: MakeRegistry, tmp_path: Path) -> RegistryServer:
    """A registry on the host with one user; "token" adds the built-in token service."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {USER: PASSWORD})
    auth: dict = {"htpasswd": {"path": str(htpasswd), "realm": "docker-tests"}}
    if request.param == "token":
        auth["token"] = {"builtin": True}
    return make_registry(config={"auth": auth})


def login(dockerd: Dockerd, registry: RegistryServer, password: str = PASSWORD, check: bool = True):  # noqa: ANN201
    """As the README: `echo "$PASSWORD" | docker login --username alice --password-stdin 127.0.0.1:5000`."""
    return dockerd("login", "--username", USER, "--password-stdin", registry.host, stdin=password + "\n",
                   check=check, timeout=120)


def push(dockerd: Dockerd, ref: str) -> tuple[str, str]:
    """(digest docker reports, its whole output)."""
    output = dockerd("push", ref).stdout
    match = DIGEST.search(output)
    assert match, output
    return match.group(1), output


def manifest_digest(registry: RegistryServer, repo: str, tag: str) -> str:
    client = RegistryClient(registry.url)
    client.session.auth = (USER, PASSWORD)
    r = client.request("HEAD", f"/v2/{repo}/manifests/{tag}",
                       headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert r.status_code == 200, r.status_code
    return r.headers["Docker-Content-Digest"]


def test_login_push_pull_by_tag_and_digest_layers_reused_and_a_tag_moved(
        dockerd: Dockerd, secured: RegistryServer, tmp_path: Path) -> None:
    login(dockerd, secured)
    local = f"deploytest/three-{secured.port}:1"
    diff_ids = dockerd.load_new_image(tmp_path, local, 3)
    ref = f"{secured.host}/team/app:1"
    dockerd("tag", local, ref)
    digest, _ = push(dockerd, ref)
    assert manifest_digest(secured, "team/app", "1") == digest
    if secured.config["auth"].get("token"):
        assert '"POST /auth/token' in secured.log_path.read_text()  # docker traded its login for tokens

    dockerd("rmi", local, ref)
    assert not dockerd.has_image(ref)
    dockerd("pull", ref)
    assert dockerd.diff_ids(ref) == diff_ids

    # the same layers again: mounted into another repository, already there in the same one
    other = f"{secured.host}/team/other:1"
    dockerd("tag", ref, other)
    _, output = push(dockerd, other)
    assert output.count("Mounted from team/app") == 3, output
    _, output = push(dockerd, ref)
    assert output.count("Layer already exists") == 3, output

    by_digest = f"{secured.host}/team/app@{digest}"
    dockerd("rmi", ref, other)
    dockerd("pull", by_digest)
    assert dockerd.diff_ids(by_digest) == diff_ids

    # a second image pushed under the same tag moves it
    newer_local = f"deploytest/newer-{secured.port}:1"
    newer_ids = dockerd.load_new_image(tmp_path, newer_local, 1)
    dockerd("tag", newer_local, ref)
    newer_digest, _ = push(dockerd, ref)
    assert newer_digest != digest
    assert manifest_digest(secured, "team/app", "1") == newer_digest
    dockerd("rmi", newer_local, ref)
    dockerd("pull", ref)
    assert dockerd.diff_ids(ref) == newer_ids
    dockerd("rmi", ref, by_digest)


def test_an_imported_image_comes_back_with_its_layer(dockerd: Dockerd, make_registry: MakeRegistry,
                                                     tmp_path: Path) -> None:
    registry = make_registry()
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(layer_tar({"etc/imported": f"imported into {registry.port}\n".encode()}))
    ref = f"{registry.host}/imported/app:1"
    dockerd("import", str(rootfs), ref)
    diff_ids = dockerd.diff_ids(ref)
    assert diff_ids == [sha256_digest(rootfs.read_bytes())]
    push(dockerd, ref)
    dockerd("rmi", ref)
    dockerd("pull", ref)
    assert dockerd.diff_ids(ref) == diff_ids
    dockerd("rmi", ref)


def test_a_wrong_password_is_refused_with_an_authentication_error(dockerd: Dockerd, secured: RegistryServer) -> None:
    result = login(dockerd, secured, password="not-the-password", check=False)
    assert result.returncode != 0
    assert "unauthorized" in result.stderr.lower(), result.stderr
    assert "Login Succeeded" not in result.stdout


def test_the_readme_docker_commands(dockerd: Dockerd, make_registry: MakeRegistry, tmp_path: Path) -> None:
    """The README's docker lines, run as they are, on a registry with htpasswd auth (alice, $PASSWORD)."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {USER: PASSWORD})
    registry = make_registry(config={"auth": {"htpasswd": {"path": str(htpasswd)}}})
    diff_ids = dockerd.load_new_image(tmp_path, "alpine:3.20", 2)
    digest = ""
    for line in readme_block("docker push 127.0.0.1:5000").strip().splitlines():
        line = line.replace("127.0.0.1:5000", registry.host).replace("sha256:...", digest)
        match = DIGEST.search(run_shell(line, {**dockerd.env, "PASSWORD": PASSWORD}).stdout)
        digest = match.group(1) if match else digest
    assert manifest_digest(registry, "team/alpine", "3.20") == digest
    assert dockerd.diff_ids(f"{registry.host}/team/alpine@{digest}") == diff_ids
    dockerd("rmi", "alpine:3.20", f"{registry.host}/team/alpine:3.20")
