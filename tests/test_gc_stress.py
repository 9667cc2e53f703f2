"""Garbage collection under load: the background collector (every second, 2s grace) runs while
clients push, pull and delete images that share layers.

What must hold: every push succeeds (blobs, then the manifest), every pull gets every digest it
asks for and the bytes match, and what was deleted is reclaimed once the load stops. The
collector's documented limit is that content must be referenced within the grace period of its
upload: a push that takes longer than that (on a very busy machine) may lose its blobs and is
pushed again, as a client would; one that fails within the grace period fails the test.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .client import RegistryClient, digest_of
from .store_view import V2, blob_path
from .test_gc import Image, MakeRegistry, freed_by, pull

LOAD_SECONDS = 8.0
GRACE = 2.0
PUSHERS, PULLERS = 3, 3


class Load:
    """What the client threads share: images pushed (kept or to delete), and counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: list[tuple[str, str, Image]] = []  # (repository, tag, image), never deleted
        self.doomed: list[tuple[str, Image]] = []  # pushed, to be deleted
        self.deleted: list[Image] = []
        self.pulls = 0
        self.stop = threading.Event()


def random_bytes(size: int) -> bytes:
    return random.randbytes(size)


def pusher(url: str, load: Load, repos: list[str], shared: list[bytes], doomed_only: list[bytes],
           index: int) -> tuple[int, int]:
    """Push images, one in three to be deleted; each shares layers with others."""
    client = RegistryClient(url)
    pushed = 0
    while not load.stop.is_set():
        doomed = pushed % 3 == 2
        layers = random.sample(shared, 2) + [random_bytes(2048)]
        if doomed:
            layers.append(random.choice(doomed_only))  # content only deleted images share
        image = Image(layers)
        repo = random.choice(repos)
        tag = f"p{index}-{pushed}"
        started = time.monotonic()
        try:
            image.push(client, repo, tag)
        except AssertionError:
            if time.monotonic() - started < GRACE:
                raise  # content referenced within the grace period must never be lost
            continue  # the documented limit: slower than the grace period, so pushed again
        with load.lock:
            if doomed:
                load.doomed.append((repo, image))
            else:
                load.kept.append((repo, tag, image))
        pushed += 1
    return pushed, pushed // 3


def puller(url: str, load: Load) -> None:
    """Pull kept images, the newest as often as any other, checking every digest."""
    client = RegistryClient(url)
    while not load.stop.is_set():
        with load.lock:
            if not load.kept:
                choice = None
            else:
                choice = load.kept[-1] if random.random() < 0.5 else random.choice(load.kept)
        if choice is None:
            time.sleep(0.01)
            continue
        repo, tag, image = choice
        pull(client, repo, tag, image)
        with load.lock:
            load.pulls += 1


def delete_doomed(client: RegistryClient, load: Load) -> None:
    """Delete, by digest, the images meant to go that were pushed so far."""
    with load.lock:
        batch, load.doomed = load.doomed, []
    for repo, image in batch:
        r = client.request("DELETE", f"/v2/{repo}/manifests/{image.digest}")
        assert r.status_code == 202, r.text
        with load.lock:
            load.deleted.append(image)


def deleter(url: str, load: Load) -> None:
    client = RegistryClient(url)
    while not load.stop.is_set():
        delete_doomed(client, load)
        time.sleep(0.05)


def test_gc_under_concurrent_pushes_pulls_and_deletes(make_registry: MakeRegistry, tmp_path: Path) -> None:
    server = make_registry(config={"storage": {"gc": {"enabled": True, "interval": "1s", "grace": f"{GRACE:g}s"}}})
    ns = f"stress{uuid.uuid4().hex[:8]}"
    repos = [f"{ns}/a", f"{ns}/b"]
    shared = [random_bytes(4096) for _ in range(4)]
    doomed_only = [random_bytes(4096) for _ in range(2)]
    load = Load()

    with ThreadPoolExecutor(PUSHERS + PULLERS + 1) as pool:
        pushes = [pool.submit(pusher, server.url, load, repos, shared, doomed_only, i) for i in range(PUSHERS)]
        pulls = [pool.submit(puller, server.url, load) for _ in range(PULLERS)]
        deletes = pool.submit(deleter, server.url, load)
        time.sleep(LOAD_SECONDS)
        load.stop.set()
        freed_under_load = "garbage collection: freed" in server.log_path.read_text()
        counts = [f.result() for f in pushes]  # re-raises a failed push, pull or delete
        for f in pulls:
            f.result()
        deletes.result()
    delete_doomed(RegistryClient(server.url), load)  # those pushed as the load stopped

    pushed = sum(n for n, _ in counts)
    assert pushed > 30 and load.pulls > 30, (pushed, load.pulls)
    assert len(load.deleted) == sum(n for _, n in counts)
    kept = [image for _, _, image in load.kept]
    expected = freed_by(load.deleted, kept)
    assert all(digest_of(layer) not in expected for layer in shared)
    assert all(digest_of(layer) in expected for layer in doomed_only if any(
        digest_of(layer) in image.content for image in load.deleted))

    # reclaimed once the load stops: grace + a collection + its recheck pause, with room to spare
    # (data set aside is deleted at the end of the run that set it aside)
    def left() -> list[str]:
        return [d for d in expected if server.store.exists(blob_path(d))] + server.store.keys(f"{V2}/evicting")

    deadline = time.monotonic() + 15
    while left() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not left(), f"{len(left())} deleted or set-aside objects of {len(expected)} still stored"
    client = RegistryClient(server.url)
    for repo, tag, image in load.kept:
        pull(client, repo, tag, image)
    assert freed_under_load  # the collector did delete while clients pushed and pulled
