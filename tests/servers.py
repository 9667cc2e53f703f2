"""Real server processes for tests and benchmarks: this registry and Distribution's, on loopback ports."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from typing import Callable

import requests
import yaml

from .store_view import StoreView, store_view

REFERENCE_BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server process listening on a random loopback port, stopped by its PID."""

    #: answered with 200 (or 401) once the server is ready
    ready_path = "/v2/"

    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        #: (certificate, key) the readiness probe presents to a server that requires client certificates
        self.probe_cert: tuple[str, str] | None = None
        #: RLIMIT_NOFILE for a host with few descriptors: (soft, hard), or one number for both
        self.descriptor_limit: int | tuple[int, int] | None = None

    @property
    def tls_ca(self) -> str | None:
        """The CA file an https server's certificate is checked against; None: the server speaks plain http."""
        return None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 20) -> "ServerProcess":
        if not self.port:
            self.port = free_port()
        log = open(self.log_path, "ab")
        limit = self.descriptor_limit
        limits = (limit, limit) if isinstance(limit, int) else limit
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                     preexec_fn=None if limits is None else
                                     lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits))
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command()} exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}{self.ready_path}", timeout=1, verify=self.tls_ca or True,
                                cert=self.probe_cert).status_code in (200, 401):
                    return self
            except (requests.ConnectionError, requests.Timeout):  # a loaded machine may answer slowly at first
                time.sleep(0.05)
        raise RuntimeError(f"{self.command()} did not answer in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def logged(self, text: str, timeout: float = 10) -> str:
        """The server's log once it holds `text` (a request's access line is written after its answer)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log_path.read_text()):
            assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s"
            time.sleep(0.05)
        return log

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RegistryServer(ServerProcess):
    """This project's registry, run as `python -m registry serve`."""

    #: the process answers (the API may answer 503 while a configured health check fails)
    ready_path = "/livez"

    def __init__(self, root: Path, log_path: Path, config: dict | None = None, args: list[str] | None = None) -> None:
        super().__init__(root, log_path)
        self.config = config
        self.args = args or []
        self._store: StoreView | None = None

    @property
    def tls_ca(self) -> str | None:
        """With `http.tls`, the configured certificate: self-signed (`registry gen-cert`), it is its own CA."""
        tls = ((self.config or {}).get("http") or {}).get("tls") or {}
        return str(tls["certificate"]) if tls.get("certificate") else None

    @property
    def backend(self) -> str:
        return "s3" if ((self.config or {}).get("storage") or {}).get("s3") else "filesystem"

    @property
    def store(self) -> StoreView:
        """What the registry stored, read directly from its directory or bucket."""
        if self._store is None:
            self._store = store_view(self.root, self.config)
        return self._store

    @property
    def redirects(self) -> bool:
        """Whether blob GETs answer 307 to the storage (S3 unless storage.redirect.disable)."""
        storage = (self.config or {}).get("storage") or {}
        return self.backend == "s3" and not (storage.get("redirect") or {}).get("disable", False)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "registry", "serve", "--addr", self.host]
        if self.backend == "filesystem":
            cmd += ["--root", str(self.root)]
        if self.config is not None:
            config_path = self.log_path.with_suffix(".yml")
            config_path.write_text(yaml.safe_dump(self.config))
            cmd += ["--config", str(config_path)]
        return cmd + self.args

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        repo_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
        return env


class ReferenceRegistry(ServerProcess):
    """CNCF Distribution, from Debian's docker-registry package, on the filesystem driver."""

    #: Distribution's `auth` section, to compare what each registry accepts; None: no auth
    auth: dict | None = None

    def command(self) -> list[str]:
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root)}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        if self.auth:
            config["auth"] = self.auth
        config_path = self.log_path.with_suffix(".yml")
        config_path.write_text(yaml.safe_dump(config))
        return [reference_binary(), "serve", str(config_path)]


def reference_binary() -> str:
    path = shutil.which("docker-registry") or REFERENCE_BINARY
    if not os.path.exists(path):
        raise RuntimeError("Debian's docker-registry is not installed: run `make test`, which installs it")
    return path


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


class MotoServer(ServerProcess):
    """An S3 endpoint: moto in server mode."""

    ready_path = "/"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def env(self) -> dict[str, str]:
        return {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


#: the type of the make_registry fixture (tests/conftest.py)
MakeRegistry = Callable[..., RegistryServer]
