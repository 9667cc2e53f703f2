"""The figures behind deploy/kubernetes' requests and limits: one registry process on S3, blobs streamed through it.

`.venv/bin/python -m bench.resources [MiB]` (default 256) starts moto and this registry with
`storage.redirect.disable` (the most it ever holds: every byte passes through it), then prints its resident memory
idle, its peak and CPU time during a monolithic push, a chunked push (16 MiB PATCHes) and 8 parallel pulls of the
blob, and its memory afterwards. The S3 endpoint is moto on the same cores, so throughput is moto's; memory and CPU
per byte are the registry's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from tests.s3 import new_bucket, s3_config
from tests.servers import MotoServer, RegistryServer

from .httpclient import Connection
from .ops import BlobFile, pull, push_file_chunked, push_file_monolithic
from .procs import RssSampler

MiB = 1 << 20


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    return RssSampler(pid).sample() / 1024


def write_blob(path: Path, size: int) -> BlobFile:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for start in range(0, size, 4 * MiB):
            chunk = os.urandom(min(4 * MiB, size - start))
            f.write(chunk)
            digest.update(chunk)
    return BlobFile(str(path), size, "sha256:" + digest.hexdigest())


def measure(label: str, pid: int, work: Callable[[], None]) -> None:
    cpu, started = cpu_seconds(pid), time.monotonic()
    with RssSampler(pid) as sampler:
        work()
    print(f"{label}: peak RSS {sampler.peak_mib:.0f} MiB, CPU {cpu_seconds(pid) - cpu:.2f} s, "
          f"{time.monotonic() - started:.1f} s")


def main() -> None:
    size = int(sys.argv[1]) * MiB if len(sys.argv) > 1 else 256 * MiB
    workdir = Path(tempfile.mkdtemp(prefix="registry-resources-"))
    moto = server = None
    try:
        blob = write_blob(workdir / "blob", size)
        moto = MotoServer(workdir, workdir / "moto.log").start()
        config = {"log": {"level": "warning", "accesslog": {"disabled": True}},
                  "storage": {"s3": s3_config(moto, new_bucket(moto), rootdirectory="/registry"),
                              "redirect": {"disable": True}}}
        server = RegistryServer(workdir / "data", workdir / "registry.log", config).start()
        pid = server.proc.pid  # type: ignore[union-attr]
        time.sleep(2)
        print(f"idle after start: RSS {rss_mib(pid):.0f} MiB")
        mib = size // MiB
        measure(f"monolithic push of {mib} MiB", pid,
                lambda: push_file_monolithic(Connection("127.0.0.1", server.port), "measure/one", blob))
        measure(f"chunked push of {mib} MiB", pid,
                lambda: push_file_chunked(Connection("127.0.0.1", server.port), "measure/two", blob, 16 * MiB))

        def pulls() -> None:
            threads = [threading.Thread(target=pull, args=(Connection("127.0.0.1", server.port), "measure/one",
                                                           blob.digest, size)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        measure(f"8 parallel pulls of {mib} MiB", pid, pulls)
        time.sleep(3)
        print(f"idle after the load: RSS {rss_mib(pid):.0f} MiB")
    finally:
        if server is not None:
            server.stop()
        if moto is not None:
            moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
