"""Every Prometheus metric the registry exports, in one collector registry.

Names and labels are Distribution's where it has the metric (registry_http_*, registry_storage_action_seconds,
registry_notifications_*), so its dashboards and alert rules keep working; the rest are ours. HTTP metrics are
labelled by route name (`manifest`, `blob`, `blob_upload_chunk`, ...), never by path, so that cardinality stays
bounded whatever names clients send.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from .stats import Counters, Gauges, Histograms, Stats, Sums

disable_created_metrics()  # Distribution's metrics have no *_created series, and they double the output
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

#: Distribution's (docker/go-metrics) buckets
DURATION_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 25, 60)
SIZE_BUCKETS = tuple(1024.0 * 2 ** i for i in range(22))  # 1 KiB to 2 GiB
STORAGE_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)  # prometheus' defaults, as Distribution's

# -- HTTP (Distribution's names and labels), storage and uploads: updated by every request, so kept in
# stats.py's lock-free families; label order is the order the values are given in

HTTP_REQUESTS = Counters("registry_http_requests", "Total number of HTTP requests made.",
                         ["handler", "method", "code"])
HTTP_DURATION = Histograms("registry_http_request_duration_seconds", "The HTTP request latencies in seconds.",
                           ["handler", "method"], DURATION_BUCKETS)
HTTP_IN_FLIGHT = Gauges("registry_http_in_flight_requests", "The in-flight HTTP requests", ["handler"])
HTTP_REQUEST_SIZE = Histograms("registry_http_request_size_bytes", "The HTTP request sizes in bytes.",
                               ["handler"], SIZE_BUCKETS)
HTTP_RESPONSE_SIZE = Histograms("registry_http_response_size_bytes", "The HTTP response sizes in bytes.",
                                ["handler"], SIZE_BUCKETS)
RECEIVED_BYTES = Sums("registry_http_received_bytes", "Request body bytes received, by route", HTTP_REQUEST_SIZE)
SENT_BYTES = Sums("registry_http_sent_bytes", "Response body bytes sent (sendfile included), by route",
                  HTTP_RESPONSE_SIZE)
#: Distribution's
STORAGE_ACTION = Histograms("registry_storage_action_seconds", "The number of seconds that the storage action takes",
                            ["driver", "action"], STORAGE_BUCKETS)
UPLOADS_IN_PROGRESS = Gauges("registry_uploads_in_progress",
                             "Requests streaming upload data into this process right now (PATCH, PUT, POST with "
                             "a body)")
UPLOADS_FINISHED = Counters("registry_uploads_finished",
                            "Blob uploads finished, by result (completed: the blob is stored; cancelled: DELETE "
                            "of the upload; failed: the finishing request was refused, e.g. a digest mismatch)",
                            ["result"])
REGISTRY.register(Stats(HTTP_REQUESTS, HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUEST_SIZE, HTTP_RESPONSE_SIZE,
                        RECEIVED_BYTES, SENT_BYTES, STORAGE_ACTION, UPLOADS_IN_PROGRESS, UPLOADS_FINISHED))

# -- garbage collection and upload purging --------------------------------------------------------

GC_RUNS = Counter("registry_gc_runs", "Background garbage collection runs, by result (success, error)",
                  ["result"], registry=REGISTRY)
GC_FREED_OBJECTS = Counter("registry_gc_freed_objects", "Blobs and manifests garbage collection deleted",
                           registry=REGISTRY)
GC_FREED_BYTES = Counter("registry_gc_freed_bytes", "Bytes garbage collection freed", registry=REGISTRY)
GC_LAST_SUCCESS = Gauge("registry_gc_last_success_timestamp_seconds",
                        "When the last successful garbage collection ended (Unix time; 0: never)", registry=REGISTRY)
PURGE_RUNS = Counter("registry_upload_purge_runs", "Upload purging runs, by result (success, error)",
                     ["result"], registry=REGISTRY)
PURGED_UPLOADS = Counter("registry_upload_purged", "Abandoned uploads (and S3 multipart uploads) removed",
                         registry=REGISTRY)
PURGE_LAST_SUCCESS = Gauge("registry_upload_purge_last_success_timestamp_seconds",
                           "When the last successful upload purging ended (Unix time; 0: never)", registry=REGISTRY)
for _result in ("success", "error"):
    GC_RUNS.labels(_result)
    PURGE_RUNS.labels(_result)

# -- authentication ------------------------------------------------------------------------------

AUTH_ATTEMPTS = Counter("registry_auth_attempts",
                        "Requests carrying credentials (API and token service), by result (success, failure, "
                        "ratelimited: refused with 429 after too many failures)", ["result"], registry=REGISTRY)
for _result in ("success", "failure", "ratelimited"):
    AUTH_ATTEMPTS.labels(_result)

# -- notifications (Distribution's names, plus dropped) ------------------------------------------

NOTIFICATION_EVENTS = Counter("registry_notifications_events",
                              "The number of total events, by type (Events: queued; Successes: delivered; "
                              "Failures: refused by the endpoint; Errors: not delivered, no answer)",
                              ["type", "endpoint"], registry=REGISTRY)
NOTIFICATION_PENDING = Gauge("registry_notifications_pending_total", "The gauge of pending events in queue",
                             ["endpoint"], registry=REGISTRY)
NOTIFICATION_STATUS = Counter("registry_notifications_status", "The number of status code",
                              ["code", "endpoint"], registry=REGISTRY)
NOTIFICATION_DROPPED = Counter("registry_notifications_dropped",
                               "Events dropped without delivery: the oldest of a full queue (notifications."
                               "queuelimit), or events the spool could not store", ["endpoint"], registry=REGISTRY)

# -- mirror --------------------------------------------------------------------------------------

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
MIRROR_EVICTION_RUNS = Counter("registry_mirror_eviction_runs", "Completed cache eviction runs", registry=REGISTRY)
for _reason in ("age", "size"):
    MIRROR_EVICTED.labels(_reason)
    MIRROR_EVICTED_BYTES.labels(_reason)


def record_run(runs: Counter, last_success: Gauge, ok: bool) -> None:
    """A background job's run: counted by result, and the time of the last success."""
    runs.labels("success" if ok else "error").inc()
    if ok:
        last_success.set(time.time())


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
