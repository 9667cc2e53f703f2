"""The two servers under test, each on a fresh data directory or S3 bucket, and their memory use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

from tests.s3 import new_bucket, s3_client, s3_config  # noqa: E402
from tests.s3_proxy import S3FaultProxy  # noqa: E402
from tests.servers import MotoServer, ReferenceRegistry, RegistryServer, ServerProcess, free_port  # noqa: E402

#: the same logging for both: errors only, no access log (the reference's settings in tests/servers.py)
OUR_CONFIG = {"log": {"level": "error", "accesslog": {"disabled": True}}}
SIDES = ("reference", "ours")
#: where in its bucket each server keeps its tree, and the part size of its multipart uploads
#: (10 MiB is both servers' default; written out so that both do the same S3 work)
S3_ROOT = "/registry"
S3_CHUNKSIZE = 10 << 20


class S3Endpoint:
    """One moto server for all S3 scenarios; every server start gets a bucket of its own,
    emptied and deleted when that server stops, so moto does not accumulate the blobs."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.moto = _BenchMoto(workdir, workdir / "moto.log")
        self._proxy: S3FaultProxy | None = None

    def start(self) -> "S3Endpoint":
        self.moto.start()
        return self

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
        self.moto.stop()

    @property
    def proxy(self) -> S3FaultProxy:
        """A proxy in front of moto that counts every call by S3 operation (started on first use)."""
        if self._proxy is None:
            self._proxy = S3FaultProxy(self.moto.url).start()
        return self._proxy

    def new_bucket(self) -> str:
        return new_bucket(self.moto)

    def storage(self, bucket: str, redirect: bool, counted: bool = False) -> dict[str, Any]:
        """The `storage` section both servers read (Distribution's keys). Distribution 2.8's
        driver ignores `forcepathstyle` but uses path-style URLs whenever `regionendpoint` is set.
        counted: through the counting proxy rather than to moto directly."""
        s3 = s3_config(self.moto, bucket, rootdirectory=S3_ROOT, v4auth=True, chunksize=S3_CHUNKSIZE)
        if counted:
            s3["regionendpoint"] = self.proxy.url
        return {"s3": s3, "redirect": {"disable": not redirect}}

    def drop_bucket(self, bucket: str) -> None:
        client = s3_client(self.moto)
        try:
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
                for upload in page.get("Uploads", []):
                    client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            client.delete_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError):  # moto may already be gone (Ctrl-C); its memory and temp dir go with it
            pass


class _BenchMoto(MotoServer):
    """moto spills large objects to temporary files: keep them in the benchmark's temp dir."""

    def env(self) -> dict[str, str]:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {**super().env(), "TMPDIR": str(tmp)}


class BenchReference(ReferenceRegistry):
    """Distribution as shipped (Debian's and upstream's config.yml): with its in-memory blob
    descriptor cache on. Without it every HEAD and GET re-reads link files, a handicap no
    deployment runs with, and our registry keeps manifests in memory too. `storage` replaces
    the filesystem driver (S3)."""

    def __init__(self, root: Path, log_path: Path, cache: bool = True, storage: dict[str, Any] | None = None) -> None:
        super().__init__(root, log_path)
        self.cache = cache
        self.storage = storage

    def command(self) -> list[str]:
        cmd = super().command()
        config_path = self.log_path.with_suffix(".yml")
        config = yaml.safe_load(config_path.read_text())
        if self.storage is not None:
            config["storage"] = {**self.storage, "delete": config["storage"]["delete"]}
        if self.cache:
            config["storage"]["cache"] = {"blobdescriptor": "inmemory"}
        config_path.write_text(yaml.safe_dump(config))
        return cmd

    def env(self) -> dict[str, str]:
        # aws-sdk-go refuses to start when AWS_CA_BUNDLE is set ("unable to load custom CA
        # bundle, HTTPClient's transport unsupported type"); the endpoint is plain HTTP anyway
        env = super().env()
        env.pop("AWS_CA_BUNDLE", None)
        return env


class Side:
    """One server under test: started on a new, empty data directory (or S3 bucket), deleted when stopped."""

    def __init__(self, name: str, workdir: Path, cached_reference: bool = True,
                 s3: S3Endpoint | None = None) -> None:
        self.name = name
        self.cached_reference = cached_reference
        self.workdir = workdir
        self.s3 = s3
        self.server: ServerProcess | None = None
        self.replicas: list[ServerProcess] = []
        self.bucket: str | None = None
        self.generation = 0
        self.our_config: dict[str, Any] = {}
        self.counted = False

    def start(self, our_config: dict[str, Any] | None = None, root: Path | None = None,
              counted: bool = False) -> ServerProcess:
        """A new process on a new, empty store, or on the store at root (a filesystem directory);
        our_config: settings merged into ours (the reference runs as always); counted: S3 calls go
        through the endpoint's counting proxy."""
        self.stop()
        self.our_config = our_config or {}
        self.counted = counted
        if self.s3 is not None and root is None:
            self.bucket = self.s3.new_bucket()
        self.server = self._process(redirect=False, root=root)
        return self.server.start()

    def start_timed(self, root: Path | None = None, poll: float = 0.005) -> float:
        """start(root), timed from exec to the first answer of GET /v2/, polled every `poll` seconds."""
        self.stop()
        self.server = self._process(redirect=False, root=root)
        self.server.port = free_port()
        log = open(self.server.log_path, "ab")
        started = time.perf_counter()
        self.server.proc = subprocess.Popen(self.server.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=self.server.env())
        log.close()
        while time.perf_counter() - started < 60:
            if self.server.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.server.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as sock:
                    sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(poll)
        raise RuntimeError(f"{self.name} did not answer within 60 s")

    def start_replica(self, redirect: bool) -> ServerProcess:
        """Another process of this server on the same store (S3: the same bucket); stopped with it."""
        if redirect and self.s3 is None:
            raise ValueError("only an S3 store redirects blob GETs")
        replica = self._process(redirect)
        self.replicas.append(replica)
        return replica.start()

    def _process(self, redirect: bool, root: Path | None = None) -> ServerProcess:
        self.generation += 1
        base = self.workdir / f"{self.name}-{self.generation}"
        base.mkdir(parents=True)
        data = root or (self.server.root if self.server is not None else base / "data")
        storage = None if self.s3 is None or self.bucket is None else self.s3.storage(self.bucket, redirect,
                                                                                      self.counted)
        if self.name == "reference":
            return BenchReference(data, base / "server.log", cache=self.cached_reference, storage=storage)
        config = {**OUR_CONFIG, **({} if storage is None else {"storage": storage}), **self.our_config}
        return RegistryServer(data, base / "server.log", config=config)

    def stop(self) -> None:
        for process in [*self.replicas, *([self.server] if self.server else [])]:
            process.stop()
            shutil.rmtree(process.log_path.parent, ignore_errors=True)
        self.replicas, self.server = [], None
        if self.s3 is not None and self.bucket is not None:
            self.s3.drop_bucket(self.bucket)
            self.bucket = None

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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) spent so far by pid and its descendants: the live processes' own,
    plus what each one's children that have already ended spent (cutime, cstime)."""
    ticks = 0
    for process in process_tree(pid):
        try:
            with open(f"/proc/{process}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / CLOCK_TICKS


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
