"""tracing.enabled: the registry sends its spans to an OpenTelemetry collector over OTLP/HTTP.

The collector is real (tests/otlp_collector.py decodes what the SDK's exporter sends); the registry
runs as a process. What an operator looks at in a trace: one server span per request with the
request id the client got back, under the client's own trace when it sent a traceparent; the
storage actions under it; for a mirror, the call to the upstream, and the upstream's own span under
that when it traces too.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Callable

import pytest

from .cli import REPO_ROOT, one_line_error, run_registry
from .client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryClient, digest_of, unique_repo
from .otlp_collector import CLIENT_KIND, SERVER_KIND, STATUS_ERROR, Collector, Span
from .servers import RegistryServer, free_port

MakeRegistry = Callable[..., RegistryServer]


def tracing(collector: Collector | str, service: str = "registry", **extra: object) -> dict:
    endpoint = collector.url if isinstance(collector, Collector) else collector
    return {"tracing": {"enabled": True, "endpoint": endpoint, "servicename": service, **extra}}


def server_span(collector: Collector, service: str, name: str, request_id: str) -> Span:
    return collector.wait_for(lambda s: s.service == service and s.kind == SERVER_KIND and s.name == name
                              and s.attributes.get("http.request.id") == request_id, f"{name} ({request_id})")


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_a_span_per_request_with_its_storage_actions_under_the_client_s_trace(
        make_registry: MakeRegistry, backend: str) -> None:
    with Collector() as collector:
        registry = make_registry(config=tracing(collector, "team-registry"), backend=backend)
        client = RegistryClient(registry.url)
        repo = unique_repo("traced")
        config = client.push_blob(repo, b"{}")
        layer = client.push_blob(repo, os.urandom(4096))
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 2},
                    "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": 4096}]}
        trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
        put = client.request("PUT", f"/v2/{repo}/manifests/v1", data=json.dumps(manifest).encode(),
                             headers={"Content-Type": OCI_MANIFEST, "traceparent": f"00-{trace_id}-{parent_id}-01"})
        assert put.status_code == 201, put.text
        got = client.request("GET", f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        missing = client.request("GET", f"/v2/{repo}/blobs/{digest_of(b'nothing')}")
        assert (got.status_code, missing.status_code) == (200, 404)

        span = server_span(collector, "team-registry", "PUT manifest", put.headers["X-Request-Id"])
        assert (span.trace_id, span.parent_id) == (trace_id, parent_id)
        assert span.attributes["http.response.status_code"] == 201
        assert span.attributes["oci.repository"] == repo
        assert span.attributes["url.path"] == f"/v2/{repo}/manifests/v1"
        driver = {"filesystem": "filesystem", "s3": "s3aws"}[backend]
        storage = [child for child in collector.children(span) if child.name.startswith("storage ")]
        assert storage, "no storage action under the manifest PUT"
        assert {child.attributes["registry.storage.driver"] for child in storage} == {driver}
        assert "storage PutContent" in {child.name for child in storage}
        assert all(span.start_ns <= child.start_ns <= child.end_ns <= span.end_ns for child in storage)

        pulled = server_span(collector, "team-registry", "GET manifest", got.headers["X-Request-Id"])
        assert pulled.parent_id == "" and pulled.trace_id != trace_id  # a trace of its own
        assert pulled.attributes["http.response.status_code"] == 200
        unknown = server_span(collector, "team-registry", "GET blob", missing.headers["X-Request-Id"])
        assert unknown.attributes["http.response.status_code"] == 404 and unknown.status != STATUS_ERROR


def test_a_mirror_s_upstream_call_and_the_upstream_s_span_are_in_the_pull_s_trace(
        make_registry: MakeRegistry) -> None:
    with Collector() as collector:
        upstream = make_registry(config=tracing(collector, "upstream"))
        mirror = make_registry(config={**tracing(collector, "mirror"),
                                       "proxy": {"upstreams": [{"prefix": "up", "remoteurl": upstream.url}]}})
        repo = unique_repo("traced")
        RegistryClient(upstream.url).push_image(repo, "v1")
        pull = RegistryClient(mirror.url).request("GET", f"/v2/up/{repo}/manifests/v1",
                                                  headers={"Accept": OCI_MANIFEST})
        assert pull.status_code == 200, pull.text

        served = server_span(collector, "mirror", "GET manifest", pull.headers["X-Request-Id"])
        collector.wait_for(lambda s: s.kind == CLIENT_KIND and s.trace_id == served.trace_id, "an upstream call")
        calls = [s for s in collector.children(served) if s.kind == CLIENT_KIND]
        assert calls, "the upstream calls are not under the request's span"
        for call in calls:
            method = call.attributes["http.request.method"]
            assert call.name == f"{method} upstream" and call.service == "mirror"
            assert call.attributes["url.full"] == f"{upstream.url}/v2/{repo}/manifests/v1"
            assert call.attributes["http.response.status_code"] == 200
            answered = collector.wait_for(lambda s: s.service == "upstream" and s.parent_id == call.span_id,
                                          f"the upstream's span under the {method}")
            assert answered.name == f"{method} manifest" and answered.trace_id == served.trace_id


def test_sampling_keeps_the_share_asked_for_and_follows_the_client_s_decision(make_registry: MakeRegistry) -> None:
    """samplingratio 0: no trace starts here, but a request whose traceparent says sampled is traced, storage
    actions and all; one that says not sampled is not."""
    with Collector() as collector:
        registry = make_registry(config=tracing(collector, samplingratio=0))
        client = RegistryClient(registry.url)
        repo = unique_repo("sampled")
        digest = client.push_blob(repo, b"sampled or not")
        unsampled = [client.request("HEAD", f"/v2/{repo}/blobs/{digest}"),
                     client.request("HEAD", f"/v2/{repo}/blobs/{digest}",
                                    headers={"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"})]
        trace_id = secrets.token_hex(16)
        sampled = client.request("HEAD", f"/v2/{repo}/blobs/{digest}",
                                 headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
        span = server_span(collector, "registry", "HEAD blob", sampled.headers["X-Request-Id"])
        assert span.trace_id == trace_id and collector.children(span)
        # spans are exported in the order they end: had the earlier requests been traced, they would be here
        ids = {s.attributes.get("http.request.id") for s in collector.spans}
        assert not ids & {r.headers["X-Request-Id"] for r in unsampled}
        assert all(s.trace_id == trace_id for s in collector.spans), "the push was traced"


def test_a_collector_that_is_down_costs_requests_nothing(make_registry: MakeRegistry) -> None:
    """Spans that cannot be sent are dropped by the export thread; pushes, pulls and the shutdown go on."""
    registry = make_registry(config=tracing(f"http://127.0.0.1:{free_port()}/v1/traces", timeout="1s"))
    client = RegistryClient(registry.url)
    repo = unique_repo("traced")
    data = os.urandom(64 * 1024)
    digest = client.push_blob(repo, data)
    assert client.request("GET", f"/v2/{repo}/blobs/{digest}").content == data
    process = registry.proc
    registry.stop()
    assert process is not None and process.returncode == 0
    log = registry.log_path.read_text()
    assert "Failed to export spans batch" in log and log.rstrip().endswith("registry: stopped")


def test_tracing_without_the_sdk_is_refused_saying_what_to_install(tmp_path: Path) -> None:
    hidden = tmp_path / "site" / "opentelemetry"  # found before the venv's copy, as if none were installed
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test', name='opentelemetry')\n")
    done = run_registry("serve", "--root", str(tmp_path / "data"), env={
        "REGISTRY_TRACING_ENABLED": "true", "REGISTRY_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "PYTHONPATH": f"{hidden.parent}{os.pathsep}{REPO_ROOT}"})
    assert one_line_error(done, 2) == ("registry: tracing.enabled needs the OpenTelemetry SDK, and opentelemetry is "
                                       "missing: pip install 'oci-registry[tracing]'")
