"""Container engines driven by the tests: a Docker daemon and podman of their own, and images made on this machine.

Nothing is ever pulled from a public registry. The base image of the registry's image is Debian bookworm with
python3, made by debootstrap from the Debian archive apt uses and cached between runs (CACHE_DIR); images the
clients push are written here as `docker save` tarballs. Debian's docker.io, podman and debootstrap are
installed by `make test`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from registry.version import describe, revision, version

from .cli import REPO_ROOT

#: Debian's client, of the daemon's version: /usr/local/bin/docker, if there, is another client
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
#: tried in order: overlay2 needs a kernel and file system that allow it, vfs works anywhere (and copies a lot)
STORAGE_DRIVERS = ("overlay2", "vfs")
PODMAN = "/usr/bin/podman"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "oci-registry-tests"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: this machine's trust store goes into the base image: pip inside `docker build` reaches PyPI through it
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
#: what the base image leaves out: package caches and lists, documentation
TRIMMED = ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*", "usr/share/doc/*",
           "usr/share/man/*", "usr/share/locale/*")
COMMAND_TIMEOUT = 600


class CommandFailed(AssertionError):
    pass


def run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True, timeout: float = COMMAND_TIMEOUT,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A command as a user types it; with check, a failure raises with what it printed."""
    result = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise CommandFailed(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                            f"{result.stderr[-3000:]}")
    return result


def short_temp_dir(prefix: str) -> Path:
    """A directory in /tmp: engines put unix sockets under their run directories, whose paths are short."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def wait_until(predicate: Any, what: str, timeout: float = 60, interval: float = 0.2) -> Any:
    """Poll `predicate` until it returns something true; AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def remove_tree(path: Path) -> None:
    """rm -rf, after unmounting what an engine left mounted under `path` (a network namespace, say)."""
    prefix = str(path) + "/"
    with open("/proc/self/mounts") as mounts:
        mounted = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for mountpoint in sorted(mounted, reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


class Engine:
    """What docker and podman share: a command line run with the engine's environment, the same image commands."""

    binary = ""

    @property
    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def __call__(self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT,
                 stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` or `podman ARGS`, as a user types it."""
        return run([self.binary, *args], self.env, check, timeout, stdin)

    def diff_ids(self, image: str) -> list[str]:
        return json.loads(self("image", "inspect", "--format", "{{json .RootFS.Layers}}", image).stdout)

    def load_new_image(self, directory: Path, name: str, layers: int) -> list[str]:
        """`load` of a new image of `layers` layers, as `name`; its diff_ids."""
        archive, diff_ids = new_image_archive(directory, name, layers)
        self("load", "--input", str(archive))
        return diff_ids


class Dockerd(Engine):
    """A Docker daemon of its own: state, socket and client config in a fresh directory, stopped by its PID.

    No bridge and no iptables: containers and builds use the host's network (`--network host`).
    `daemon_config` is its daemon.json (`{"registry-mirrors": [...]}`), never the machine's /etc/docker/daemon.json.
    """

    binary = DOCKER

    def __init__(self, log_path: Path, daemon_config: dict[str, Any] | None = None) -> None:
        self.log_path = log_path
        self.daemon_config = daemon_config or {}
        self.state = short_temp_dir("dockerd-")
        self.socket = self.state / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """DOCKER_CONFIG keeps `docker login`'s credentials here; BuildKit builds without a container per step."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.state / "client"),
                "DOCKER_BUILDKIT": "1"}

    def start(self) -> "Dockerd":
        """With overlay2 where the kernel allows it (a container then costs no copy of its image), else vfs."""
        config = self.state / "daemon.json"
        config.write_text(json.dumps(self.daemon_config))
        for driver in STORAGE_DRIVERS:
            cmd = [DOCKERD, f"--config-file={config}", "--iptables=false", "--ip6tables=false", "--bridge=none",
                   f"--storage-driver={driver}", f"--data-root={self.state / 'data'}",
                   f"--exec-root={self.state / 'exec'}", f"--pidfile={self.state / 'dockerd.pid'}",
                   "-H", f"unix://{self.socket}", "--log-level=warn"]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            if wait_until(self._answers, "dockerd answering on its socket", timeout=120) == "up":
                return self
        raise RuntimeError(f"dockerd did not start with any of {STORAGE_DRIVERS}:\n{self.log_path.read_text()[-3000:]}")

    def _answers(self) -> str | None:
        """"up", "exited" (the storage driver may not suit this machine), or None while starting."""
        if self.proc is not None and self.proc.poll() is not None:
            return "exited"
        if self.socket.exists() and self("version", check=False, timeout=30).returncode == 0:
            return "up"
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        remove_tree(self.state)

    def publish_new_image(self, directory: Path, ref: str, layers: int) -> list[str]:
        """A new image pushed to `ref` and no longer held here; its diff_ids."""
        diff_ids = self.load_new_image(directory, ref, layers)
        self("push", ref)
        self("rmi", ref)
        return diff_ids

    def has_image(self, image: str) -> bool:
        return self("image", "inspect", image, check=False).returncode == 0


class Podman(Engine):
    """podman with storage (vfs), credentials and settings of its own, all named by environment variables.

    `podman ARGS` run with `env` uses them too, so commands can be run as a user types them.
    """

    binary = PODMAN

    def __init__(self, base: Path) -> None:
        self.base = base
        self.runroot = short_temp_dir("podman-")  # conmon's socket paths must stay short
        base.mkdir(parents=True, exist_ok=True)
        (base / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{base / "storage"}"\nrunroot = "{self.runroot}"\n')
        (base / "containers.conf").write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n')
        (base / "auth.json").write_text('{"auths": {}}')
        #: a registries.conf (mirrors), when a test writes one
        self.registries_conf = base / "registries.conf"

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(self.base / "storage.conf"),
               "CONTAINERS_CONF": str(self.base / "containers.conf"),
               "REGISTRY_AUTH_FILE": str(self.base / "auth.json")}
        if self.registries_conf.exists():
            env["CONTAINERS_REGISTRIES_CONF"] = str(self.registries_conf)
        return env

    def close(self) -> None:
        remove_tree(self.runroot)
        remove_tree(self.base / "storage")


def base_image_key() -> str:
    """Names the cached base: a change of suite, packages or this machine's trust store makes another."""
    digest = hashlib.sha256(json.dumps([BASE_SUITE, BASE_PACKAGES, TRIMMED]).encode() + HOST_CA.read_bytes())
    return digest.hexdigest()[:12]


def base_rootfs_tarball() -> Path:
    """The base image's root filesystem as a tarball, made once by debootstrap (about a minute) and cached."""
    key = base_image_key()
    tarball = CACHE_DIR / f"{BASE_SUITE}-python3-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        rootfs = Path(work) / "rootfs"
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, str(rootfs)])
        for pattern in TRIMMED:
            for path in rootfs.glob(pattern):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        shutil.copyfile(HOST_CA, rootfs / "etc/ssl/certs/ca-certificates.crt")
        partial = Path(work) / "rootfs.tar"
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        os.replace(partial, tarball)
    for stale in CACHE_DIR.glob(f"{BASE_SUITE}-python3-*.tar"):
        if stale != tarball:
            stale.unlink()
    return tarball


def import_base_image(dockerd: Dockerd) -> str:
    """The cached base imported into dockerd; pip in it trusts the copied store (its own certifi would not)."""
    name = f"local/{BASE_SUITE}-python3:{base_image_key()}"
    cert = "/etc/ssl/certs/ca-certificates.crt"
    dockerd("import", "--change", f"ENV PIP_CERT={cert} SSL_CERT_FILE={cert}", "--change", 'CMD ["python3"]',
            str(base_rootfs_tarball()), name)
    return name


def build_registry_image(dockerd: Dockerd, base: str, tag: str) -> str:
    """deploy/Dockerfile built as the README says, on `base`, with this checkout's version and revision."""
    dockerd("build", "--network", "host", "-f", "deploy/Dockerfile", "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", f"VERSION={version()}", "--build-arg", f"REVISION={revision() or ''}", "-t", tag,
            str(REPO_ROOT))
    return tag


def expected_version_line() -> str:
    """What `registry --version` prints, here and in the image built from this checkout."""
    return f"registry {describe()}"


def layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer: the bytes whose sha256 is the layer's diff_id."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def new_image_archive(directory: Path, name: str, layers: int) -> tuple[Path, list[str]]:
    """A `docker save` tarball in `directory` of a new image named `name`, and its diff_ids."""
    archive = directory / f"{re.sub(r'[^A-Za-z0-9.-]', '_', name)}.tar"
    return archive, write_docker_archive(archive, name, layers)


def write_docker_archive(path: Path, repo_tag: str, layer_count: int) -> list[str]:
    """A `docker save` tarball of one image of `layer_count` layers, unique to this call; returns its diff_ids."""
    nonce = uuid.uuid4().hex
    layers = [layer_tar({f"layer{i}/{nonce}.txt": f"layer {i} of {repo_tag} {nonce}\n".encode() * (i + 1)})
              for i in range(layer_count)]
    diff_ids = [sha256_digest(layer) for layer in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(layer_count)],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    members: dict[str, bytes] = {config_name: config}
    layer_names = []
    for i, layer in enumerate(layers):
        members[f"{i}/layer.tar"] = layer
        layer_names.append(f"{i}/layer.tar")
    members["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": [repo_tag],
                                            "Layers": layer_names}]).encode()
    path.write_bytes(layer_tar(members))
    return diff_ids


def readme_block(containing: str) -> str:
    """The README's first fenced code block containing `containing`: tests run what the README shows."""
    blocks = (REPO_ROOT / "README.md").read_text().split("```")[1::2]
    found = [block.split("\n", 1)[1] for block in blocks if containing in block]
    assert found, f"README.md has no code block with {containing!r}"
    return found[0]


def run_shell(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Lines from the README, in bash, with Debian's docker first on PATH."""
    env = {**env, "PATH": "/usr/bin:" + env.get("PATH", "")}
    return run(["bash", "-euo", "pipefail", "-c", script], env)
