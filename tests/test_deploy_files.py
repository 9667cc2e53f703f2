"""Every file in deploy/ checked by the tool made for it, and every registry config shipped there served from.

The Dockerfile by hadolint, compose.yaml by docker-compose, the Kubernetes manifests by kubernetes-validate,
the systemd unit by systemd-analyze; the configs of compose and Kubernetes start this registry, which serves a
push and a pull on them (on a moto bucket for S3). deploy/Dockerfile and deploy/config.yml are built and run by
tests/test_image.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from registry.healthcheck import HEALTH_PATH, READY_PATH

from .auth_helpers import write_htpasswd
from .cli import run_registry
from .engines import REPO_ROOT, expected_version_line, run
from .oci_layout import Layout, assert_same_image, copy, small_image
from .s3 import s3_client, s3_config, new_bucket
from .servers import MakeRegistry, MotoServer, free_port

DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
#: the newest Kubernetes release kubernetes-validate knows here
KUBERNETES_VERSION = "1.37.0"
#: hadolint, kubernetes-validate and registry, installed in the venv
VENV_BIN = Path(sys.executable).parent
#: where the README installs the registry for the systemd unit
UNIT_EXEC = "/opt/oci-registry/bin/registry"


def quiet_success(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def kubernetes_documents() -> dict[str, dict[str, Any]]:
    """The manifests the kustomization lists, by kind."""
    resources = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    documents = [doc for name in resources for doc in yaml.safe_load_all((KUBERNETES / name).read_text())]
    return {doc["kind"]: doc for doc in documents}


def test_the_dockerfile_is_clean_under_hadolint() -> None:
    quiet_success(run([str(VENV_BIN / "hadolint"), str(DEPLOY / "Dockerfile")], check=False))


def test_compose_validates_with_two_replicas_sharing_the_bucket_and_http_secret() -> None:
    env = {**os.environ, "REGISTRY_HTTP_SECRET": "shared-by-the-replicas"}
    rendered = run(["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "--profile", "s3", "--profile", "mirror",
                    "config"], env)
    services = yaml.safe_load(rendered.stdout)["services"]
    assert set(services) == {"registry", "minio", "bucket", "registry-1", "registry-2", "loadbalancer", "mirror"}
    replicas = [services["registry-1"], services["registry-2"]]
    for replica in replicas:
        assert replica["environment"]["REGISTRY_HTTP_SECRET"] == "shared-by-the-replicas"
        assert replica["volumes"] == replicas[0]["volumes"]
    balanced = services["loadbalancer"]["command"]
    assert "registry-1:5000" in balanced and "registry-2:5000" in balanced
    plain = run(["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config"], env)
    assert yaml.safe_load(plain.stdout)["services"]["registry"]["ports"][0]["published"] == 5000


def test_the_kubernetes_manifests_validate_and_keep_the_deployment_safe() -> None:
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    result = run([str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION,
                  *(str(KUBERNETES / name) for name in listed)], check=False)
    quiet_success(result)

    documents = kubernetes_documents()
    assert set(documents) == {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
                              "HorizontalPodAutoscaler"}
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    assert documents["Deployment"]["spec"]["replicas"] >= 2
    assert documents["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "privileged": False, "capabilities": {"drop": ["ALL"]}}
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": HEALTH_PATH, "port": "http"}


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze checks that ExecStart exists: the unit is verified with this venv's registry there."""
    unit = (DEPLOY / "systemd" / "registry.service").read_text()
    assert f"ExecStart={UNIT_EXEC} serve " in unit
    copy_ = tmp_path / "registry.service"
    copy_.write_text(unit.replace(UNIT_EXEC, str(VENV_BIN / "registry")))
    quiet_success(run(["systemd-analyze", "verify", str(copy_)], check=False))


def test_the_registry_notifies_systemd_when_it_listens_and_when_it_stops(tmp_path: Path) -> None:
    """Type=notify: READY=1 comes once the port answers (no retry needed), STOPPING=1 at SIGTERM."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    proc = subprocess.Popen([sys.executable, "-m", "registry", "serve", "--addr", f"127.0.0.1:{port}", "--root",
                             str(tmp_path / "data")], env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE)
    try:
        assert notify.recv(4096) == b"READY=1"
        assert requests.get(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096) == b"STOPPING=1"
        assert proc.wait(timeout=40) == 0
    finally:
        proc.kill()
        proc.wait()
        notify.close()


def test_registry_version_names_the_package_version_and_the_git_revision() -> None:
    printed = run_registry("--version")
    assert printed.returncode == 0, printed.stderr
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert printed.stdout.strip() == expected_version_line()
    assert head.strip()[:12] in printed.stdout


def shipped_config(name: str) -> dict[str, Any]:
    """A registry config from deploy/: a file, or the config.yml of the Kubernetes ConfigMap."""
    if name == "kubernetes":
        return yaml.safe_load(kubernetes_documents()["ConfigMap"]["data"]["config.yml"])
    return yaml.safe_load((DEPLOY / name).read_text())


def round_trip(host: str, tmp_path: Path, *creds: str) -> None:
    source = small_image(tmp_path / "source", "v1")
    copy(source.ref("v1"), f"docker://{host}/deploy/check:v1", *(f"--dest-creds={c}" for c in creds))
    copy(f"docker://{host}/deploy/check:v1", f"oci:{tmp_path / 'pulled'}:v1", *(f"--src-creds={c}" for c in creds))
    assert_same_image(source, "v1", Layout(tmp_path / "pulled"), "v1")


@pytest.mark.parametrize("name", ["compose/s3.yml", "kubernetes"])
def test_the_shipped_s3_configs_serve_from_their_bucket(moto: MotoServer, make_registry: MakeRegistry,
                                                        tmp_path: Path, name: str) -> None:
    """The endpoint, bucket and credentials become moto's; every other key is as shipped."""
    config = shipped_config(name)
    bucket = new_bucket(moto)
    config["storage"]["s3"].update({k: v for k, v in s3_config(moto, bucket).items() if k != "region"})
    creds: list[str] = []
    if "auth" in config:
        write_htpasswd(tmp_path / "htpasswd", {"deployer": "deploy-password"})
        config["auth"]["htpasswd"]["path"] = str(tmp_path / "htpasswd")
        creds = ["deployer:deploy-password"]
    server = make_registry(config=config)
    round_trip(server.host, tmp_path, *creds)
    root = config["storage"]["s3"]["rootdirectory"].strip("/")
    listed = s3_client(moto).list_objects_v2(Bucket=bucket, Prefix=f"{root}/docker/registry/v2/repositories/deploy/")
    assert listed["KeyCount"] > 0


def test_the_shipped_mirror_config_pulls_through(make_registry: MakeRegistry, tmp_path: Path) -> None:
    upstream = make_registry()
    round_trip(upstream.host, tmp_path / "upstream")
    config = shipped_config("compose/mirror.yml")
    config["proxy"]["remoteurl"] = upstream.url
    mirror = make_registry(config=config)
    pulled = tmp_path / "through-mirror"
    copy(f"docker://{mirror.host}/deploy/check:v1", f"oci:{pulled}:v1")
    assert Layout(pulled).manifest("v1") == Layout(tmp_path / "upstream" / "pulled").manifest("v1")


def test_the_health_check_passes_without_credentials_and_fails_without_an_answer(make_registry: MakeRegistry,
                                                                             tmp_path: Path) -> None:
    """What the image's HEALTHCHECK and the Kubernetes probes run, against a registry with auth."""
    write_htpasswd(tmp_path / "htpasswd", {"deployer": "deploy-password"})
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"auth": {"htpasswd": {"path": str(tmp_path / "htpasswd")}}}))
    server = make_registry(config=yaml.safe_load(config.read_text()))
    env = {**os.environ, "REGISTRY_HTTP_ADDR": server.host}
    check = [sys.executable, "-m", "registry.healthcheck", str(config)]
    healthy = run(check, env)
    assert healthy.stdout.strip() == f"http://{server.host}{HEALTH_PATH}: 200"
    ready = run([*check[:3], "--ready", str(config)], env)
    assert ready.stdout.strip() == f"http://{server.host}{READY_PATH}: 200"
    server.stop()
    unhealthy = run(check, env, check=False)
    assert unhealthy.returncode == 1
    assert f"http://{server.host}{HEALTH_PATH}:" in unhealthy.stderr


def locked_names(lock: Path) -> set[str]:
    return {canonicalize_name(line.split("==")[0]) for line in lock.read_text().splitlines() if "==" in line
            and not line.startswith((" ", "#"))}


def test_the_locks_pin_every_dependency_pyproject_names() -> None:
    """A dependency added to pyproject.toml without `make lock` would be missing from the image and the venv."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}
    extras = {canonicalize_name(Requirement(spec).name) for specs in project["optional-dependencies"].values()
              for spec in specs}
    assert runtime - locked_names(REPO_ROOT / "requirements.lock") == set(), "run `make lock`"
    assert (runtime | extras) - locked_names(REPO_ROOT / "requirements-dev.lock") == set(), "run `make lock`"
