"""Health: /debug/health in Distribution's format, /livez, /readyz (the store reachable and writable),
Distribution's file, http, tcp and storagedriver checks, and what SIGTERM does to readiness."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import requests
from aiohttp import web

from .client import RegistryClient, assert_error, unique_repo
from .conftest import s3_registry_config
from .s3_proxy import S3FaultProxy
from .servers import MakeRegistry, MotoServer, RegistryServer, free_port

PROBES = "docker/registry/v2/health"


def get(server: RegistryServer, path: str) -> requests.Response:
    return requests.get(f"{server.url}{path}", timeout=30)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """condition's first result other than None or False (a response with an error status is one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result is not None and result is not False:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def health_is(server: RegistryServer, status: int) -> Callable[[], requests.Response | None]:
    def check() -> requests.Response | None:
        r = get(server, "/debug/health")
        return r if r.status_code == status else None
    return check


def test_healthy_registry(registry: RegistryServer) -> None:
    r = get(registry, "/debug/health")
    assert (r.status_code, r.json(), r.headers["Content-Type"]) == (200, {}, "application/json; charset=utf-8")
    assert get(registry, "/livez").json() == {"alive": True}
    r = get(registry, "/readyz")
    assert (r.status_code, r.json()) == (200, {"ready": True})
    assert registry.store.keys(PROBES) == []  # the probe writes, reads back and deletes its object


def test_file_check_takes_the_registry_out_of_rotation(make_registry: MakeRegistry, tmp_path: Path) -> None:
    flag = tmp_path / "maintenance"
    registry = make_registry(config={"health": {"file": [{"file": str(flag), "interval": "100ms"}]}})
    client = RegistryClient(registry.url)
    assert client.request("GET", "/v2/").status_code == 200
    flag.touch()
    r = wait_until(health_is(registry, 503), "the file check to fail")
    assert r.json() == {str(flag): "file exists"}
    assert_error(client.request("GET", "/v2/"), 503, "UNAVAILABLE")
    assert_error(client.request("HEAD", f"/v2/{unique_repo()}/manifests/v1"), 503, "UNAVAILABLE")
    r = get(registry, "/readyz")
    assert (r.status_code, r.json()) == (503, {"ready": False, "reasons": [f"health check {flag} failing"]})
    assert get(registry, "/livez").status_code == 200
    flag.unlink()
    wait_until(health_is(registry, 200), "the file check to pass again")
    assert client.request("GET", "/v2/").status_code == 200
    assert get(registry, "/readyz").status_code == 200


async def test_http_and_tcp_checks_with_thresholds(aiohttp_server: Any, make_registry: MakeRegistry) -> None:
    answer = {"status": 200}

    async def upstream(request: web.Request) -> web.Response:
        assert request.method == "HEAD" and request.headers["Authorization"] == "Basic dXNlcjpwYXNz"
        return web.Response(status=answer["status"])

    app = web.Application()
    app.router.add_route("HEAD", "/ping", upstream)
    server = await aiohttp_server(app)
    closed_port = free_port()
    config = {"health": {
        "http": [{"uri": str(server.make_url("/ping")), "headers": {"Authorization": ["Basic dXNlcjpwYXNz"]},
                  "interval": "100ms", "threshold": 3, "timeout": "2s"}],
        "tcp": [{"addr": f"127.0.0.1:{closed_port}", "interval": "100ms", "timeout": "1s"}],
    }}
    registry = await asyncio.to_thread(make_registry, config=config)
    tcp_error = {f"127.0.0.1:{closed_port}": f"connection to 127.0.0.1:{closed_port} failed"}
    r = await asyncio.to_thread(wait_until, health_is(registry, 503), "the tcp check to fail")
    assert r.json() == tcp_error  # the http check passes

    listener = socket.create_server(("127.0.0.1", closed_port))
    try:
        await asyncio.to_thread(wait_until, health_is(registry, 200), "the tcp check to pass")
        answer["status"] = 500
        r = await asyncio.to_thread(wait_until, health_is(registry, 503), "the http check to fail three times")
        assert r.json() == {str(server.make_url("/ping")): "downstream service returned unexpected status: 500"}
        await asyncio.to_thread(registry.logged, f"health check {server.make_url('/ping')} failed: downstream service "
                                "returned unexpected status")
        answer["status"] = 200
        await asyncio.to_thread(wait_until, health_is(registry, 200), "the http check to pass again")
    finally:
        listener.close()


def test_storage_check_and_readiness_on_the_filesystem(make_registry: MakeRegistry) -> None:
    registry = make_registry(config={"health": {"storagedriver": {"enabled": True, "interval": "100ms"}}})
    ready = get(registry, "/readyz")
    assert ready.status_code == 200, ready.text
    probes = registry.root / PROBES
    probes.mkdir(parents=True, exist_ok=True)
    probes.rmdir()
    probes.write_bytes(b"a file where the probes' directory belongs: no probe can be written")
    r = wait_until(health_is(registry, 503), "the storage check to fail")
    assert list(r.json()) == ["storagedriver_filesystem"]
    r = get(registry, "/readyz")
    assert r.status_code == 503 and r.json()["reasons"][0] == "health check storagedriver_filesystem failing"
    probes.unlink()
    wait_until(health_is(registry, 200), "the storage check to pass again")
    assert get(registry, "/readyz").status_code == 200


def test_storage_check_and_readiness_on_s3(make_registry: MakeRegistry, moto: MotoServer) -> None:
    with S3FaultProxy(moto.url, stall_seconds=30) as proxy:
        config = s3_registry_config(moto, {"health": {"storagedriver": {
            "enabled": True, "interval": "100ms", "threshold": 2, "timeout": "3s"}}})
        config["storage"]["s3"].update(regionendpoint=proxy.url, max_attempts=1, timeout="20s")
        registry = make_registry(config=config)
        wait_until(lambda: get(registry, "/readyz").status_code == 200 or None, "/readyz to answer 200")
        proxy.inject("PutObject", "internal-error", times=1000, key_contains="health")
        r = wait_until(health_is(registry, 503), "the storage check to fail twice")
        assert list(r.json()) == ["storagedriver_s3"]
        assert "InternalError" in r.json()["storagedriver_s3"]
        assert get(registry, "/readyz").status_code == 503
        proxy.clear_faults()
        wait_until(health_is(registry, 200), "the storage check to pass again")
        proxy.inject("PutObject", "stall", times=1000, key_contains="health")
        r = wait_until(health_is(registry, 503), "the storage check to time out")
        assert r.json() == {"storagedriver_s3": "storage did not answer within 3s"}
        proxy.clear_faults()
        wait_until(health_is(registry, 200), "the storage check to pass again")
        registry.stop()
        assert registry.store.keys(PROBES) == []


class SlowUpload:
    """A PATCH whose body the test holds back: a request in flight for as long as the test wants."""

    def __init__(self, registry: RegistryServer) -> None:
        self.client = RegistryClient(registry.url)
        self.location = self.client.start_upload(unique_repo("drain"))
        self.release = threading.Event()
        self.sent_first = threading.Event()
        self.response: requests.Response | None = None
        self.thread = threading.Thread(target=self._send)
        self.thread.start()
        assert self.sent_first.wait(30)

    def _body(self) -> Iterator[bytes]:
        yield b"first part, "
        self.sent_first.set()
        self.release.wait(60)
        yield b"and the rest"

    def _send(self) -> None:
        self.response = self.client.request("PATCH", self.location, data=self._body())

    def finish(self) -> requests.Response:
        self.release.set()
        self.thread.join(60)
        assert self.response is not None
        return self.response


def test_sigterm_turns_readiness_off_then_drains(make_registry: MakeRegistry) -> None:
    registry = make_registry(config={"http": {"shutdowndelay": "10s", "draintimeout": "60s"}})
    assert get(registry, "/readyz").status_code == 200
    upload = SlowUpload(registry)
    assert registry.proc is not None
    registry.proc.terminate()  # SIGTERM
    r = wait_until(lambda: r if (r := get(registry, "/readyz")).status_code == 503 else None, "/readyz to turn 503")
    assert r.json() == {"ready": False, "reasons": ["shutting down"]}
    assert get(registry, "/livez").status_code == 200
    assert RegistryClient(registry.url).request("GET", "/v2/").status_code == 200  # still served meanwhile

    def refused() -> bool:
        try:
            requests.get(f"{registry.url}/livez", timeout=5)
        except requests.ConnectionError:
            return True
        return False

    wait_until(refused, "the listener to close after http.shutdowndelay")
    assert registry.proc.poll() is None  # the PATCH is still in flight
    r = upload.finish()
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{len(b'first part, and the rest') - 1}"
    assert registry.proc.wait(30) == 0
    log = registry.log_path.read_text()
    assert "shutting down: /readyz answers 503; serving for 10s more (http.shutdowndelay)" in log
    assert log.index("serving for 10s more") < log.index('"PATCH ') < log.index("stopped")
