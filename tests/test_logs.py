"""Logs: JSON lines with Distribution's keys and log.fields, text lines with the request id, the request
id in every line of its request, and no password, token or Authorization header in any line."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

import requests

from .auth_helpers import client_for, fresh_address, write_htpasswd
from .client import Image, RegistryClient, digest_of, unique_repo
from .servers import MakeRegistry, RegistryServer

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def json_lines(server: RegistryServer, last_request_id: str) -> list[dict[str, Any]]:
    """Every line the server logged up to the access line of the last request, each parsed as one JSON
    object (a line that is not one fails)."""
    log = server.logged(f'"http.request.id": "{last_request_id}", "http.request.method"')
    return [json.loads(line) for line in log.splitlines() if line.strip()]


def access_line(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    found = [line for line in lines if line.get("http.request.id") == request_id and line["msg"] == "response completed"]
    assert len(found) == 1, found
    return found[0]


def test_json_lines_and_no_secrets_in_them(make_registry: MakeRegistry, tmp_path: Path) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    write_htpasswd(tmp_path / "htpasswd", {"alice": password})
    registry = make_registry(config={
        "log": {"level": "debug", "formatter": "json", "fields": {"service": "registry", "environment": "test"}},
        "auth": {"htpasswd": {"path": str(tmp_path / "htpasswd")}, "token": {"builtin": True}},
    })
    repo = unique_repo("logs")
    alice = client_for(registry.url, auth=("alice", password))
    image = Image([uuid.uuid4().bytes * 50])
    for blob in image.blobs.values():
        alice.push_blob(repo, blob)
    r = alice.request("PUT", f"/v2/{repo}/manifests/v1", data=image.manifest,
                      headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                               "X-Request-Id": "build-7/push", "User-Agent": "log-test/1.0"})
    assert r.status_code == 201 and r.headers["X-Request-Id"] == "build-7/push"

    # tokens: Basic at the token service (with a refresh token), the OAuth2 password and refresh grants
    got = requests.get(f"{registry.url}/auth/token", auth=("alice", password), timeout=30,
                       params={"service": "registry", "scope": f"repository:{repo}:pull", "offline_token": "true"})
    assert got.status_code == 200
    token, refresh = got.json()["token"], got.json()["refresh_token"]
    form = requests.post(f"{registry.url}/auth/token", timeout=30, data={
        "grant_type": "password", "username": "alice", "password": password, "service": "registry",
        "scope": f"repository:{repo}:pull"})
    refreshed = requests.post(f"{registry.url}/auth/token", timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": refresh, "service": "registry"})
    assert form.status_code == refreshed.status_code == 200
    tokens = [token, refresh, form.json()["token"], refreshed.json()["token"]]
    bearer = client_for(registry.url, token=token)
    r = bearer.request("GET", f"/v2/{repo}/manifests/v1?token=query-secret&n=1")
    assert r.status_code == 200
    wrong = client_for(registry.url, auth=("alice", "not-" + password), address=fresh_address())
    r = wrong.request("GET", "/v2/", headers={"X-Request-Id": "failed-login-1"})
    assert r.status_code == 401

    lines = json_lines(registry, "failed-login-1")
    for line in lines:
        assert line["service"] == "registry" and line["environment"] == "test"
        assert {"time", "level", "msg", "logger"} <= set(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    text = registry.log_path.read_text()
    basic = base64.b64encode(f"alice:{password}".encode()).decode()
    for secret in [password, basic, "query-secret", *tokens]:
        assert secret not in text
    assert "authorization" not in text.lower()

    push = access_line(lines, "build-7/push")
    assert push == {
        "service": "registry", "environment": "test", "time": push["time"], "level": "info",
        "msg": "response completed", "logger": "registry.access", "http.request.id": "build-7/push",
        "http.request.method": "PUT", "http.request.uri": f"/v2/{repo}/manifests/v1",
        "http.request.route": "manifest", "http.request.host": registry.host, "http.request.remoteaddr": "127.0.0.1",
        "http.request.useragent": "log-test/1.0", "http.request.read": len(image.manifest),
        "http.response.status": 201, "http.response.written": 0,
        "http.response.duration": push["http.response.duration"],
        "http.response.duration_seconds": push["http.response.duration_seconds"],
        "vars.name": repo, "vars.reference": "v1", "auth.user.name": "alice",
    }
    assert re.fullmatch(r"[\d.]+(ns|µs|ms|s)", push["http.response.duration"])
    assert 0 < push["http.response.duration_seconds"] < 60
    pulls = [line for line in lines if line.get("http.request.route") == "manifest"
             and line.get("http.request.method") == "GET"]
    assert [line["http.request.uri"] for line in pulls] == [f"/v2/{repo}/manifests/v1?token=***&n=1"]
    assert pulls[0]["http.response.written"] == len(image.manifest)
    assert UUID.fullmatch(pulls[0]["http.request.id"])
    failed = [line for line in lines if line.get("http.request.id") == "failed-login-1"]
    assert [(line["logger"], line["level"]) for line in failed] == [("registry.auth", "warning"),
                                                                    ("registry.access", "info")]
    assert "authentication failed" in failed[0]["msg"] and failed[1]["http.response.status"] == 401
    assert all(line["msg"] == "response completed" for line in lines if line["logger"] == "registry.access")


def test_text_lines_request_ids_and_trust(make_registry: MakeRegistry) -> None:
    registry = make_registry(config={"log": {"fields": {"service": "registry"}},
                                     "http": {"requestid": {"trustfrom": ["10.0.0.0/8"]}}})
    client = RegistryClient(registry.url)
    r = client.request("GET", "/v2/", headers={"X-Request-Id": "from-an-untrusted-client"})
    given = r.headers["X-Request-Id"]
    assert UUID.fullmatch(given)  # 127.0.0.1 is not in trustfrom: the header is not taken
    trusting = make_registry()
    client = RegistryClient(trusting.url)
    assert client.request("GET", "/v2/", headers={"X-Request-Id": "lb-1234"}).headers["X-Request-Id"] == "lb-1234"
    odd = client.request("GET", "/v2/", headers={"X-Request-Id": "two words"}).headers["X-Request-Id"]
    assert UUID.fullmatch(odd)  # not an id's shape: replaced
    r = client.request("HEAD", f"/v2/{unique_repo()}/blobs/{digest_of(b'x')}", headers={"X-Request-Id": "lb-5678"})
    assert r.status_code == 404 and r.headers["X-Request-Id"] == "lb-5678"

    line = next(line for line in registry.logged(f"request_id={given}").splitlines() if f"request_id={given}" in line)
    assert re.fullmatch(rf'.* INFO registry\.access: 127\.0\.0\.1 "GET /v2/ HTTP/1\.1" 200 2 [\d.]+s '
                        rf'"python-requests/[\d.]+" request_id={given} service=registry', line)
    assert '"HEAD /v2/' in trusting.logged("request_id=lb-5678")


def test_logstash_formatter(make_registry: MakeRegistry) -> None:
    registry = make_registry(config={"log": {"formatter": "logstash"}})
    RegistryClient(registry.url).request("GET", "/v2/", headers={"X-Request-Id": "stash-1"})
    line = access_line(json_lines(registry, "stash-1"), "stash-1")
    assert line["@version"] == "1" and line["@timestamp"] == line["time"]
