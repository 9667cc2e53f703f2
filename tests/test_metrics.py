"""Prometheus metrics, scraped with prometheus-client's parser: counters move as requests are made, on
both backends; the debug server and the main-port switch; and every metric the shipped Grafana
dashboard and alert rules use exists on a live server."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import requests
import yaml

from .auth_helpers import client_for, fresh_address, write_htpasswd
from .client import Image, RegistryClient, digest_of, fetch_blob, unique_repo
from .scrape import Samples, scrape, scrape_after
from .servers import MakeRegistry, RegistryServer, free_port

MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"
DRIVERS = {"filesystem": "filesystem", "s3": "s3aws"}


def poll(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def test_counters_move_as_requests_are_made(registry: RegistryServer) -> None:
    client = RegistryClient(registry.url)
    repo = unique_repo("metrics")
    image = Image([uuid.uuid4().bytes * 300])
    before = scrape(registry.url)
    image.push(client, repo, "v1")
    for _ in range(3):
        assert client.request("GET", f"/v2/{repo}/manifests/v1").status_code == 200
    missing = client.request("GET", f"/v2/{repo}/manifests/no-such-tag")
    assert missing.status_code == 404
    layer = image.layers[0]
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest_of(layer)}").status_code == 200
    assert fetch_blob(client, repo, digest_of(layer)).content == layer
    requests_total = "registry_http_requests_total"
    blob_get = "307" if registry.redirects else "200"
    after = scrape_after(registry.url, requests_total, before.value(requests_total, handler="blob", code=blob_get) + 1,
                         handler="blob", code=blob_get)

    assert moved(before, after, requests_total, handler="manifest", method="GET", code="200") == 3
    assert moved(before, after, requests_total, handler="manifest", method="GET", code="404") == 1
    assert moved(before, after, requests_total, handler="manifest", method="PUT", code="201") == 1
    assert moved(before, after, requests_total, handler="blob_upload", method="POST", code="202") == 2
    assert moved(before, after, requests_total, handler="blob_upload_chunk", method="PUT", code="201") == 2
    assert moved(before, after, requests_total, handler="blob", method="HEAD", code="200") == 1
    assert moved(before, after, requests_total, handler="blob", method="GET", code=blob_get) == 1
    assert moved(before, after, "registry_http_request_duration_seconds_count", handler="manifest", method="GET") == 4
    blob_bytes = sum(len(b) for b in image.blobs.values())
    assert moved(before, after, "registry_http_request_size_bytes_sum", handler="blob_upload_chunk") == blob_bytes
    assert moved(before, after, "registry_http_received_bytes_total", handler="blob_upload_chunk") == blob_bytes
    assert moved(before, after, "registry_http_received_bytes_total", handler="manifest") == len(image.manifest)
    sent = 3 * len(image.manifest) + len(missing.content)
    assert moved(before, after, "registry_http_sent_bytes_total", handler="manifest") == sent
    assert moved(before, after, "registry_http_response_size_bytes_sum", handler="manifest") == sent
    assert moved(before, after, "registry_http_sent_bytes_total", handler="blob") == (
        0 if registry.redirects else len(layer))
    assert after.value("registry_http_in_flight_requests", handler="manifest") == 0
    assert after.value("registry_http_in_flight_requests", handler="/metrics") == 1  # the scrape itself
    assert moved(before, after, "registry_uploads_finished_total", result="completed") == 2
    driver = DRIVERS[registry.backend]
    # an upload's size is a Walk of its directory; on S3 a push writes each blob straight to its place (no Move)
    for action in ("PutContent", "GetContent", "Walk", "Move" if registry.backend == "filesystem" else "Commit"):
        assert moved(before, after, "registry_storage_action_seconds_count", driver=driver, action=action) > 0, action


def test_uploads_in_progress_and_cancelled(registry: RegistryServer) -> None:
    client = RegistryClient(registry.url)
    repo = unique_repo("metrics")
    before = scrape(registry.url)
    location = client.start_upload(repo)
    assert client.request("DELETE", location).status_code == 204
    location = client.start_upload(repo)
    r = client.request("PUT", location, params={"digest": digest_of(b"other bytes")}, data=b"these bytes")
    assert r.status_code == 400
    failed = before.value("registry_uploads_finished_total", result="failed")
    after = scrape_after(registry.url, "registry_uploads_finished_total", failed + 1, result="failed")
    assert moved(before, after, "registry_uploads_finished_total", result="cancelled") == 1
    assert moved(before, after, "registry_uploads_finished_total", result="failed") == 1
    assert after.value("registry_uploads_in_progress") == 0


def test_gc_and_upload_purging_runs_are_counted(make_registry: MakeRegistry) -> None:
    registry = make_registry(config={"storage": {
        "gc": {"enabled": True, "interval": "1s", "grace": "5s", "deleteuntagged": True},
        "maintenance": {"uploadpurging": {"enabled": True, "interval": "1s", "age": "1s"}}}})
    client = RegistryClient(registry.url)
    repo = unique_repo("gc")
    image = Image([uuid.uuid4().bytes * 100])
    image.push(client, repo, "v1")
    client.start_upload(repo)
    assert client.request("DELETE", f"/v2/{repo}/manifests/{image.digest}").status_code == 202
    samples = poll(lambda: (s := scrape(registry.url)).value("registry_gc_freed_objects_total") >= 3
                   and s.value("registry_upload_purged_total") >= 1 and s, "gc and purging to free what they may")
    assert samples.value("registry_gc_freed_bytes_total") >= image.size
    assert samples.value("registry_gc_runs_total", result="success") >= 1
    assert samples.value("registry_gc_runs_total", result="error") == 0
    assert abs(samples.value("registry_gc_last_success_timestamp_seconds") - time.time()) < 600
    assert samples.value("registry_upload_purge_runs_total", result="success") >= 1
    assert samples.value("registry_upload_purge_last_success_timestamp_seconds") > 0


def test_debug_server_and_the_main_port_switch(make_registry: MakeRegistry, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {"alice": "wonderland"})
    auth = {"htpasswd": {"path": str(htpasswd)}}
    debug_port = free_port()
    registry = make_registry(config={"auth": auth, "http": {"debug": {
        "addr": f"127.0.0.1:{debug_port}", "prometheus": {"enabled": True, "path": "/prom"}}}})
    debug = f"http://127.0.0.1:{debug_port}"
    assert requests.get(f"{registry.url}/metrics", timeout=10).status_code == 404  # auth on: not on the main port
    assert requests.get(f"{registry.url}/prom", timeout=10).status_code == 404
    for path in ("/debug/health", "/livez", "/readyz"):
        assert requests.get(f"{debug}{path}", timeout=10).status_code == 200, path

    before = scrape(debug, "/prom")
    good = client_for(registry.url, auth=("alice", "wonderland"))
    assert good.request("GET", "/v2/").status_code == 200
    bad = client_for(registry.url, auth=("alice", "wrong"), address=fresh_address())
    statuses = [bad.request("GET", "/v2/").status_code for _ in range(11)]
    assert statuses == [401] * 10 + [429]
    limited = before.value("registry_auth_attempts_total", result="ratelimited")
    after = scrape_after(debug, "registry_auth_attempts_total", limited + 1, path="/prom", result="ratelimited")
    assert moved(before, after, "registry_auth_attempts_total", result="success") == 1
    assert moved(before, after, "registry_auth_attempts_total", result="failure") == 10
    assert moved(before, after, "registry_auth_attempts_total", result="ratelimited") == 1

    switched = make_registry(config={"auth": auth, "http": {"debug": {"prometheus": {"mainport": True}}}})
    assert "registry_http_requests_total" in scrape(switched.url)  # on the main port, without credentials
    plain = make_registry(config={"http": {"debug": {"prometheus": {"mainport": False}}}})
    assert requests.get(f"{plain.url}/metrics", timeout=10).status_code == 404


def referenced_metrics() -> dict[str, set[str]]:
    """Metric names in the shipped dashboard's and alert rules' PromQL, by file."""
    exprs: dict[str, list[str]] = {}
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    exprs.setdefault("grafana-dashboard.json", []).append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    rules = yaml.safe_load((MONITORING / "prometheus-alerts.yml").read_text())
    exprs["prometheus-alerts.yml"] = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    names = re.compile(r"\b((?:registry|process)_[a-z0-9_]+)\b")
    return {file: {name for expr in found for name in names.findall(expr)} for file, found in exprs.items()}


def test_monitoring_uses_only_metrics_that_exist(make_registry: MakeRegistry, tmp_path: Path) -> None:
    registry = make_registry(config={"notifications": {"spool": str(tmp_path / "spool"), "endpoints": [
        {"name": "hook", "url": f"http://127.0.0.1:{free_port()}/events"}]}})
    client = RegistryClient(registry.url)
    repo = unique_repo("monitoring")
    client.push_blob(repo, b"an event for the endpoint's metrics")
    samples = scrape(registry.url)
    referenced = referenced_metrics()
    assert all(referenced.values()) and len(referenced) == 2
    for file, names in referenced.items():
        for name in names:
            family = re.sub(r"_(bucket|sum|count|total)$", "", name)
            assert name in samples or family in samples.families or name in samples.families, (
                f"{file} uses {name}, which the registry does not export")


def test_metered_storage_passes_every_backend_method_through() -> None:
    """The storage timings wrap the backend: a method the wrapper lacks would fall to StorageBackend's
    generic version instead of the backend's own (S3's batched listings and deletes, say), and a
    signature it lacks (a new keyword) would fail every call."""
    import inspect

    from registry.observability.storage import MeteredBackend
    from storage_backends import StorageBackend

    for name, method in inspect.getmembers(StorageBackend, inspect.isfunction):
        if name.startswith("_"):
            continue
        wrapped = MeteredBackend.__dict__.get(name)
        assert wrapped is not None, f"MeteredBackend does not pass {name} through"
        shape = [(p.name, p.kind) for p in inspect.signature(method).parameters.values()]
        assert [(p.name, p.kind) for p in inspect.signature(wrapped).parameters.values()] == shape, name
