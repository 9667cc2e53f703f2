"""Prometheus metrics, served at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()

MIRROR_REQUESTS = Counter(
    "registry_mirror_requests",
    "Mirrored manifest and blob requests by upstream, kind and result "
    "(hit: served from the cache; miss: fetched; revalidated: tag confirmed upstream; stale: cache served "
    "because the upstream failed; error: upstream failed and nothing was cached)",
    ["upstream", "kind", "result"],
    registry=REGISTRY,
)


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
