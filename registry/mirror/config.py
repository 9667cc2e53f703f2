"""The `proxy` section: Distribution's single `remoteurl`, or several upstreams by name prefix.

    proxy:
      remoteurl: https://registry-1.docker.io     # Distribution: every name mirrors this upstream
      username: ...; password: ...; ttl: 168h
    proxy:
      upstreams:                                  # ours: one endpoint, several upstreams, local names too
        - prefix: docker.io                       # docker.io/library/alpine, or alpine with ?ns=docker.io
          remoteurl: https://registry-1.docker.io
          ttl: 10m
        - prefix: ghcr.io
          remoteurl: https://ghcr.io
"""

from __future__ import annotations

from typing import Any

from ..durations import parse_duration
from ..references import check_name
from .upstream import Upstream

DEFAULT_TTL = "168h"  # Distribution's default for cached tags
DOCKER_HUB_HOSTS = ("docker.io", "registry-1.docker.io", "index.docker.io")


def _upstream(raw: dict[str, Any], prefix: str, where: str) -> Upstream:
    url = raw.get("remoteurl")
    if not url or "://" not in str(url):
        raise ValueError(f"{where}.remoteurl must be a URL such as https://registry-1.docker.io")
    if prefix:
        check_name(prefix)
    dockerhub = raw.get("dockerhub")
    if dockerhub is None:
        dockerhub = any(host in str(url) for host in DOCKER_HUB_HOSTS) or prefix == "docker.io"
    return Upstream(
        url=str(url).rstrip("/"),
        prefix=prefix,
        username=str(raw["username"]) if raw.get("username") else None,
        password=str(raw["password"]) if raw.get("password") is not None else None,
        ttl=parse_duration(raw.get("ttl", DEFAULT_TTL)),
        dockerhub=bool(dockerhub),
    )


def upstreams_from_config(proxy: dict[str, Any] | None) -> list[Upstream]:
    if not proxy:
        return []
    found = []
    if proxy.get("remoteurl"):
        found.append(_upstream(proxy, "", "proxy"))
    for i, raw in enumerate(proxy.get("upstreams") or []):
        prefix = str(raw.get("prefix") or "").strip("/")
        if not prefix:
            raise ValueError(f"proxy.upstreams[{i}].prefix is required")
        found.append(_upstream(raw, prefix, f"proxy.upstreams[{i}]"))
    prefixes = [u.prefix for u in found]
    if len(set(prefixes)) != len(prefixes):
        raise ValueError("proxy: two upstreams share a prefix")
    return found
