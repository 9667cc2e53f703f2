"""schemathesis against live registries, from openapi.yaml: every operation with examples, boundary
values and random data, valid and invalid, then stateful runs that follow the spec's links (an upload
POST → PATCH → PUT, a blob pushed then pulled and deleted, a manifest pushed then pulled, listed and
deleted) with the values the registry answered.

Checks (tests/schemathesis.toml): no server error; status codes, content types, response headers
and bodies as documented; invalid input refused with a documented 4xx and the error envelope; a
method a route lacks answered 405 with Allow; what was deleted is gone. Each run is bounded by its
example count, and the seed is fixed so that a failure repeats: SCHEMATHESIS_SEED=<n> explores others.
The command line each run prints repeats it by hand against a server of your own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .auth_helpers import write_htpasswd
from .servers import MakeRegistry, RegistryServer

ROOT = Path(__file__).resolve().parent.parent
ST = Path(sys.executable).with_name("st")
SEED = os.environ.get("SCHEMATHESIS_SEED", "13")
USER, PASSWORD = "alice", "wonderland"


def run_schemathesis(server: RegistryServer, *args: str) -> None:
    command = [str(ST), "--no-color", "--config-file", "tests/schemathesis.toml", "run", "openapi.yaml",
               "--url", server.url, "--seed", SEED,
               "--workers", "1",  # CPython 3.11's ast is not thread-safe, and hypothesis parses with it
               *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=570)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-40000:]}\n{result.stderr[-5000:]}"


def auth_config(tmp_path: Path, token: bool = False) -> dict[str, Any]:
    """htpasswd with one user, who may do everything in repositories a-m and pull the others,
    and who is an admin; anonymous clients may pull public/*."""
    write_htpasswd(tmp_path / "htpasswd", {USER: PASSWORD})
    auth: dict[str, Any] = {
        "htpasswd": {"path": str(tmp_path / "htpasswd")},
        "access": {
            "groups": {"admins": [USER]},
            "rules": [
                {"repositories": ["[a-m]*"], "users": [USER], "actions": ["*"]},
                {"repositories": ["[n-z0-9]*"], "users": [USER], "actions": ["pull"]},
                {"repositories": ["public/*"], "anonymous": True, "actions": ["pull"]},
            ],
        },
    }
    if token:
        auth["token"] = {"builtin": True}
    # the metrics the spec documents on the main port are off there by default once auth is on
    return {"auth": auth, "http": {"debug": {"prometheus": {"mainport": True}}}}


@pytest.mark.slow
def test_open_registry(make_registry: MakeRegistry) -> None:
    """The filesystem store without auth: every /v2/ operation, the admin API, metrics and this spec."""
    run_schemathesis(make_registry(), "--exclude-path", "/auth/token")


@pytest.mark.slow
def test_htpasswd_and_access_rules(make_registry: MakeRegistry, tmp_path: Path) -> None:
    """With Basic credentials for one user: what the rules allow succeeds, the rest is 403 DENIED."""
    server = make_registry(config=auth_config(tmp_path))
    run_schemathesis(server, "--exclude-path", "/auth/token", "--auth", f"{USER}:{PASSWORD}")


def test_token_service(make_registry: MakeRegistry, tmp_path: Path) -> None:
    """The built-in token service with the user's credentials, and with whatever the generator sends
    (its wrong passwords end in 429 from the failed-login limit, which is documented too)."""
    server = make_registry(config=auth_config(tmp_path, token=True))
    run_schemathesis(server, "--include-path", "/auth/token", "--auth", f"{USER}:{PASSWORD}",
                     "--phases", "examples,coverage,fuzzing")  # it links to nothing: no stateful phase
