"""The two servers under test, each on a fresh data directory, and their memory use."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

from tests.servers import ReferenceRegistry, RegistryServer, ServerProcess  # noqa: E402

#: the same logging for both: errors only, no access log (the reference's settings in tests/servers.py)
OUR_CONFIG = {"log": {"level": "error", "accesslog": {"disabled": True}}}
SIDES = ("reference", "ours")


class CachedReference(ReferenceRegistry):
    """Distribution as shipped (Debian's and upstream's config.yml): with its in-memory blob
    descriptor cache on. Without it every HEAD and GET re-reads link files, a handicap no
    deployment runs with, and our registry keeps manifests in memory too."""

    def command(self) -> list[str]:
        cmd = super().command()
        config_path = self.log_path.with_suffix(".yml")
        config = yaml.safe_load(config_path.read_text())
        config["storage"]["cache"] = {"blobdescriptor": "inmemory"}
        config_path.write_text(yaml.safe_dump(config))
        return cmd


class Side:
    """One server under test: started on a new, empty data directory, deleted when stopped."""

    def __init__(self, name: str, workdir: Path, cached_reference: bool = True) -> None:
        self.name = name
        self.cached_reference = cached_reference
        self.workdir = workdir
        self.server: ServerProcess | None = None
        self.generation = 0

    def start(self) -> ServerProcess:
        self.stop()
        self.generation += 1
        base = self.workdir / f"{self.name}-{self.generation}"
        base.mkdir(parents=True)
        if self.name == "reference":
            reference = CachedReference if self.cached_reference else ReferenceRegistry
            self.server = reference(base / "data", base / "server.log")
        else:
            self.server = RegistryServer(base / "data", base / "server.log", config=OUR_CONFIG)
        return self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            shutil.rmtree(self.server.root.parent, ignore_errors=True)
            self.server = None

    @property
    def pid(self) -> int:
        assert self.server is not None and self.server.proc is not None
        return self.server.proc.pid

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc/<pid>/task/*/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


class RssSampler:
    """Peak resident memory of a process tree: VmRSS summed over the tree every `interval`,
    and the main process's own high-water mark (VmHWM), which catches peaks between samples."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        return sum(_status_kib(p, "VmRSS") for p in process_tree(self.pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.sample())
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self.sample(), _status_kib(self.pid, "VmHWM"))

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024
