"""Webhook notifications end to end: skopeo pushes, pulls and deletes through the registry, and a real
receiver (an aiohttp server in the test) checks every event and field it is sent, the durable queue
across a SIGKILL, retries against a failing or hanging receiver, the queue bound and the filters."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import re
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from .client import OCI_MANIFEST, RegistryClient, digest_of, unique_repo
from .oci_layout import copy, small_image
from .receiver import Receiver
from .scrape import scrape, scrape_after
from .servers import MakeRegistry, RegistryServer, free_port

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB = "application/octet-stream"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def endpoint(url: Any, name: str = "hook", **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": str(url), "timeout": "5s", "backoff": "100ms", "threshold": 3, **extra}


def notifications(tmp_path: Path, *endpoints: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A notifications section queueing in a spool of the test's own (on S3 the default is the working directory)."""
    return {"notifications": {"spool": str(tmp_path / "spool"), "endpoints": list(endpoints), **extra}}


async def start(make_registry: MakeRegistry, config: dict[str, Any], backend: str = "filesystem",
                root: Path | None = None) -> RegistryServer:
    """make_registry in a thread: the receiver shares this test's event loop and must keep answering."""
    return await asyncio.to_thread(make_registry, root=root, config=config, backend=backend)


async def push_image(registry: RegistryServer, tmp_path: Path, repo: str, tag: str) -> tuple[str, bytes, dict]:
    """skopeo copies a fresh one-layer image to repo:tag; the manifest's digest, bytes and document."""
    layout = small_image(tmp_path / f"image-{uuid.uuid4().hex[:8]}", tag)
    await asyncio.to_thread(copy, layout.ref(tag), f"docker://{registry.host}/{repo}:{tag}")
    digest, body = layout.manifest(tag)
    return digest, body, json.loads(body)


def pending(registry: RegistryServer, name: str = "hook") -> float:
    return scrape(registry.url).value("registry_notifications_pending_total", endpoint=name)


def blob_target(registry: RegistryServer, repo: str, descriptor: dict[str, Any]) -> dict[str, Any]:
    return {"mediaType": BLOB, "digest": descriptor["digest"], "size": descriptor["size"],
            "length": descriptor["size"], "repository": repo,
            "url": f"{registry.url}/v2/{repo}/blobs/{descriptor['digest']}"}


def logged_request(registry: RegistryServer, request_id: str) -> str:
    """The access line the registry logged for the request with this id."""
    lines = [line for line in registry.logged(f"request_id={request_id}").splitlines()
             if "registry.access" in line and f"request_id={request_id}" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
async def test_push_pull_mount_and_delete_events(aiohttp_server: Any, make_registry: MakeRegistry, tmp_path: Path,
                                                 backend: str) -> None:
    everything, pushes = Receiver(), Receiver()
    hook = await aiohttp_server(everything.app())
    push_hook = await aiohttp_server(pushes.app())
    config = notifications(
        tmp_path,
        endpoint(hook.make_url("/events"), headers={"Authorization": ["Bearer hook-token"]}, secret="hmac-key"),
        endpoint(push_hook.make_url("/events"), name="manifest pushes",
                 ignore={"actions": ["pull", "delete"]}, ignoredmediatypes=[BLOB]),
        events={"includereferences": True},
    )
    registry = await start(make_registry, config, backend)
    repo, other = unique_repo("events"), unique_repo("events")
    started = datetime.datetime.now(datetime.timezone.utc)

    digest, body, manifest = await push_image(registry, tmp_path, repo, "v1")
    config_blob, [layer] = manifest["config"], manifest["layers"]
    manifest_target = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body), "length": len(body),
                       "repository": repo, "url": f"{registry.url}/v2/{repo}/manifests/{digest}", "tag": "v1",
                       "references": [config_blob, layer]}
    pushed = await everything.wait_for(3)
    assert [e["action"] for e in pushed] == ["push"] * 3
    assert sorted((e["target"] for e in pushed[:2]), key=lambda t: t["digest"]) == sorted(
        [blob_target(registry, repo, config_blob), blob_target(registry, repo, layer)], key=lambda t: t["digest"])
    assert pushed[2]["target"] == manifest_target
    put = pushed[2]["request"]
    assert put["method"] == "PUT" and put["host"] == registry.host and put["useragent"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", put["addr"])
    assert f'"PUT /v2/{repo}/manifests/v1 HTTP/1.1" 201' in logged_request(registry, put["id"])

    await asyncio.to_thread(copy, f"docker://{registry.host}/{repo}:v1", f"oci:{tmp_path / 'pulled'}:v1")
    pulled = (await everything.wait_for(6))[3:]
    assert [e["action"] for e in pulled] == ["pull"] * 3
    assert pulled[0]["target"] == manifest_target
    assert sorted((e["target"] for e in pulled[1:]), key=lambda t: t["digest"]) == sorted(
        [blob_target(registry, repo, config_blob), blob_target(registry, repo, layer)], key=lambda t: t["digest"])

    client = RegistryClient(registry.url)
    for blob in (config_blob, layer):
        r = client.request("POST", f"/v2/{other}/blobs/uploads/", params={"mount": blob["digest"], "from": repo})
        assert r.status_code == 201, r.text
    assert client.push_manifest(other, "v2", body).status_code == 201
    r = client.request("DELETE", f"/v2/{other}/manifests/v2", headers={"X-Request-Id": "ci-run-42.delete-tag"})
    assert r.status_code == 202 and r.headers["X-Request-Id"] == "ci-run-42.delete-tag"
    assert client.push_manifest(other, "v3", body).status_code == 201
    assert client.request("DELETE", f"/v2/{other}/manifests/{digest}").status_code == 202
    assert client.request("DELETE", f"/v2/{other}/blobs/{layer['digest']}").status_code == 202
    later = (await everything.wait_for(14))[6:]
    assert [(e["action"], e["target"]) for e in later] == [
        ("mount", {**blob_target(registry, other, config_blob), "fromRepository": repo}),
        ("mount", {**blob_target(registry, other, layer), "fromRepository": repo}),
        ("push", {**manifest_target, "repository": other, "tag": "v2",
                  "url": f"{registry.url}/v2/{other}/manifests/{digest}"}),
        ("delete", {"repository": other, "tag": "v2"}),
        ("push", {**manifest_target, "repository": other, "tag": "v3",
                  "url": f"{registry.url}/v2/{other}/manifests/{digest}"}),
        ("delete", {"repository": other, "digest": digest}),
        ("delete", {"repository": other, "tag": "v3"}),
        ("delete", {"repository": other, "digest": layer["digest"]}),
    ]
    assert later[3]["request"] == {"id": "ci-run-42.delete-tag", "addr": later[3]["request"]["addr"],
                                   "host": registry.host, "method": "DELETE",
                                   "useragent": client.session.headers["User-Agent"]}

    events = everything.events
    assert len(events) == 14
    assert len({e["id"] for e in events}) == 14 and all(UUID.fullmatch(e["id"]) for e in events)
    instance = events[0]["source"]["instanceID"]
    for event in events:
        assert set(event) == {"id", "timestamp", "action", "target", "request", "actor", "source"}
        assert event["actor"] == {}
        assert event["source"] == {"addr": f"{socket.gethostname()}:{registry.port}", "instanceID": instance}
        when = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        assert started <= when <= datetime.datetime.now(datetime.timezone.utc)
    for delivery in everything.deliveries:
        assert delivery.headers["Content-Type"] == EVENTS_MEDIA_TYPE
        assert delivery.headers["Authorization"] == "Bearer hook-token"
        expected = hmac.new(b"hmac-key", delivery.body, hashlib.sha256).hexdigest()
        assert delivery.headers["X-Registry-Signature-256"] == f"sha256={expected}"

    only_pushes = await pushes.wait_for(3)
    assert [(e["action"], e["target"]["repository"], e["target"]["tag"]) for e in only_pushes] == [
        ("push", repo, "v1"), ("push", other, "v2"), ("push", other, "v3")]
    assert all("X-Registry-Signature-256" not in d.headers for d in pushes.deliveries)
    samples = scrape_after(registry.url, "registry_notifications_events_total", 14, type="Successes", endpoint="hook")
    assert samples.value("registry_notifications_events_total", type="Successes", endpoint="hook") == 14
    assert samples.value("registry_notifications_status_total", code="202 Accepted", endpoint="hook") == 14
    assert samples.value("registry_notifications_pending_total", endpoint="manifest pushes") == 0


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
async def test_queued_events_survive_sigkill_and_arrive_once_in_order(
        aiohttp_server: Any, make_registry: MakeRegistry, tmp_path: Path, backend: str) -> None:
    receiver = Receiver()
    port = free_port()  # nothing listens there yet: the receiver is down
    registry = await start(make_registry, notifications(tmp_path, endpoint(f"http://127.0.0.1:{port}/events")),
                           backend)
    client = RegistryClient(registry.url)
    repo = unique_repo("durable")
    operations = []
    for n in range(4):
        blob = f"blob {n} {uuid.uuid4()}".encode()
        client.push_blob(repo, blob)
        operations.append(("push", digest_of(blob)))
    r = client.request("DELETE", f"/v2/{repo}/blobs/{operations[0][1]}")
    assert r.status_code == 202
    operations.append(("delete", operations[0][1]))
    assert pending(registry) == len(operations)  # each write returned once its event was on disk

    registry.kill()
    await aiohttp_server(receiver.app(), port=port)
    restarted = await start(make_registry, registry.config, root=registry.root)
    events = await receiver.wait_for(len(operations))
    assert [(e["action"], e["target"]["digest"]) for e in events] == operations
    assert len({e["id"] for e in events}) == len(operations)
    await asyncio.to_thread(restarted.stop)  # SIGTERM: the cursor is on disk
    again = await start(make_registry, registry.config, root=registry.root)
    client = RegistryClient(again.url)
    extra = client.push_blob(repo, b"after the second restart")
    events = await receiver.wait_for(len(operations) + 1)
    assert [(e["action"], e["target"]["digest"]) for e in events] == [*operations, ("push", extra)]


async def test_failing_or_hanging_receiver_never_holds_pushes_up(aiohttp_server: Any, make_registry: MakeRegistry,
                                                                  tmp_path: Path) -> None:
    failing, hanging = Receiver(mode="fail"), Receiver(mode="hang")
    failing_server, hanging_server = await aiohttp_server(failing.app()), await aiohttp_server(hanging.app())
    registry = await start(make_registry, notifications(
        tmp_path,
        endpoint(failing_server.make_url("/events"), name="failing"),
        endpoint(hanging_server.make_url("/events"), name="hanging", timeout="1h"),
    ))
    repo = unique_repo("slow-hooks")
    digests = []
    for n in range(3):  # every push completes while one endpoint hangs on the first event and the other fails
        digest, _, _ = await push_image(registry, tmp_path, repo, f"v{n}")
        digests.append(digest)
    assert hanging.hanging.is_set() and hanging.deliveries == []
    assert failing.deliveries == [] and failing.refused > 0
    samples = scrape_after(registry.url, "registry_notifications_events_total", 1, type="Failures", endpoint="failing")
    assert samples.value("registry_notifications_pending_total", endpoint="hanging") == 9
    assert samples.value("registry_notifications_status_total", code="500 Internal Server Error",
                         endpoint="failing") > 0
    registry.logged("notifications: endpoint failing")

    failing.mode = "accept"
    hanging.release()
    for receiver in (failing, hanging):
        events = await receiver.wait_for(9)
        manifests = [e["target"]["digest"] for e in events if e["target"]["mediaType"] == OCI_MANIFEST]
        assert manifests == digests
        assert len(events) == 9


async def test_full_queue_drops_the_oldest_events(aiohttp_server: Any, make_registry: MakeRegistry,
                                                  tmp_path: Path) -> None:
    receiver = Receiver()
    port = free_port()
    registry = await start(make_registry, notifications(tmp_path, endpoint(f"http://127.0.0.1:{port}/events"),
                                                        queuelimit=3))
    client = RegistryClient(registry.url)
    repo = unique_repo("bounded")
    pushed = [client.push_blob(repo, f"blob {n} {uuid.uuid4()}".encode()) for n in range(5)]
    samples = scrape(registry.url)
    assert samples.value("registry_notifications_dropped_total", endpoint="hook") == 2
    assert samples.value("registry_notifications_pending_total", endpoint="hook") == 3
    registry.logged("queue full (notifications.queuelimit 3): dropped the 1 oldest")

    await aiohttp_server(receiver.app(), port=port)
    events = await receiver.wait_for(3)
    assert [e["target"]["digest"] for e in events] == pushed[2:]
