"""What is running: the package version and the git revision it was built from.

The revision comes from `registry/REVISION`, written by the image build (which has no .git), or else from git
when running from a checkout.
"""

from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "oci-registry"
_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


@cache
def revision() -> str | None:
    """The full commit id, or None when neither the build nor git says."""
    stamp = _PACKAGE_DIR / "REVISION"
    if stamp.is_file():
        return stamp.read_text().strip() or None
    try:
        result = subprocess.run(["git", "-C", str(_PACKAGE_DIR), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def describe() -> str:
    """`0.1.0 (revision 0123456789ab)`, as `registry --version` and the startup line show it."""
    rev = revision()
    return f"{version()} (revision {rev[:12]})" if rev else version()
