"""The `registry` command run as an operator runs it: a process, its exit status and its output."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from .servers import RegistryServer

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_registry(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`registry <args>` with this checkout's code, in a clean environment (no REGISTRY_* of the
    caller's) plus env; stdin None gives the command no input at all, as under cron or CI."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    environment["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    environment.update(env or {})
    feed: dict[str, Any] = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
    return subprocess.run([sys.executable, "-m", "registry", *args], capture_output=True, text=True,
                          env=environment, cwd=cwd or REPO_ROOT, timeout=timeout, **feed)


def store_config(server: RegistryServer, **sections: Any) -> Path:
    """A config file naming the server's store (its directory, or its S3 bucket), plus sections
    merged into `storage` (retention, gc, ...); for the maintenance commands."""
    if server.backend == "s3":
        storage: dict[str, Any] = {"s3": server.config["storage"]["s3"]}  # type: ignore[index]
    else:
        storage = {"filesystem": {"rootdirectory": str(server.root)}}
    storage.update(sections)
    path = server.log_path.with_name(f"cli-{uuid.uuid4().hex[:8]}.yml")
    path.write_text(yaml.safe_dump({"storage": storage}))
    return path


def one_line_error(done: subprocess.CompletedProcess[str], status: int) -> str:
    """The single `registry: ...` line a refused command must print, and nothing else (no traceback)."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("registry: "), done.stderr
    return lines[0]
