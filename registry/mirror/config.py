"""The mirror's upstreams, from the checked `proxy` section: Distribution's single `remoteurl`, or
several upstreams by name prefix.

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

from ..config import schema
from .upstream import Upstream

DOCKER_HUB_HOSTS = ("docker.io", "registry-1.docker.io", "index.docker.io")


def _upstream(url: str, prefix: str, username: str | None, password: str | None, ttl: float,
              dockerhub: bool | None) -> Upstream:
    if dockerhub is None:
        dockerhub = any(host in url for host in DOCKER_HUB_HOSTS) or prefix == "docker.io"
    return Upstream(url=url, prefix=prefix, username=username, password=password, ttl=ttl, dockerhub=dockerhub)


def upstreams_from_settings(proxy: schema.Proxy | None) -> list[Upstream]:
    if proxy is None:
        return []
    found = []
    if proxy.remoteurl:
        password = proxy.password.get_secret_value() if proxy.password else None
        found.append(_upstream(proxy.remoteurl, "", proxy.username, password, proxy.ttl, None))
    for upstream in proxy.upstreams:
        password = upstream.password.get_secret_value() if upstream.password else None
        found.append(_upstream(upstream.remoteurl, upstream.prefix, upstream.username, password, upstream.ttl,
                               upstream.dockerhub))
    return found
