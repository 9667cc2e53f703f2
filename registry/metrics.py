"""Prometheus metrics, served at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
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

MIRROR_CACHE_BYTES = Gauge(
    "registry_mirror_cache_bytes",
    "Bytes of the blobs and manifests mirrored repositories link (each stored blob counted once), "
    "as of the last cache eviction run",
    registry=REGISTRY,
)
MIRROR_EVICTED = Counter(
    "registry_mirror_evicted",
    "Cached tags with their manifests, untagged manifests and blob links evicted from mirrored repositories, "
    "by reason (age: fetched longer than proxy.cache.maxage ago; size: the cache was over proxy.cache.maxsize)",
    ["reason"],
    registry=REGISTRY,
)
MIRROR_EVICTED_BYTES = Counter(
    "registry_mirror_evicted_bytes",
    "Bytes that left the mirror's cache (content no mirrored repository links any more), by reason",
    ["reason"],
    registry=REGISTRY,
)
MIRROR_DELETED_BYTES = Counter(
    "registry_mirror_deleted_bytes",
    "Bytes of blob data eviction deleted from the store because no repository at all linked it",
    registry=REGISTRY,
)
MIRROR_EVICTION_RUNS = Counter(
    "registry_mirror_eviction_runs",
    "Completed cache eviction runs",
    registry=REGISTRY,
)
for _reason in ("age", "size"):
    MIRROR_EVICTED.labels(_reason)
    MIRROR_EVICTED_BYTES.labels(_reason)


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
