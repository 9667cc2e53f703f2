"""Requests/s from `wrk`, the load generator; a run with any error or non-2xx answer is refused."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_BAD = re.compile(r"^\s*(Non-2xx or 3xx responses|Socket errors):\s*(.+)$", re.M)


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: `make system-deps` installs it")
    return path


def lua_script(method: str, headers: dict[str, str]) -> str:
    lines = [f'wrk.method = "{method}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def requests_per_second(url: str, method: str = "GET", headers: dict[str, str] | None = None,
                        connections: int = 64, threads: int = 1, seconds: float = 10) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "request.lua"
        script.write_text(lua_script(method, headers or {}))
        cmd = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
               "-s", str(script), url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    bad = _BAD.findall(out.stdout)
    if bad:
        raise RuntimeError(f"wrk saw failures against {url}: {bad}\n{out.stdout}")
    match = _RATE.search(out.stdout)
    if match is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out.stdout}")
    rate = float(match.group(1))
    if rate == 0:
        raise RuntimeError(f"wrk completed no request against {url}:\n{out.stdout}")
    return rate
