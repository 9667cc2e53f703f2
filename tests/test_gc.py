"""Garbage collection (`registry gc`, storage.gc): what it frees is exactly what nothing references.

Images are built here so that each test knows every digest and size it pushed; the bytes a
collection must free are computed from that (content of deleted manifests that no kept
manifest shares), and compared with what `registry gc` reports and with what is left in the
store. Age is tested by setting mtimes of the filesystem store back, since those are what the
grace period is measured against.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from .cli import run_registry, store_config
from .client import (
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    RegistryClient,
    descriptor,
    digest_of,
    unique_repo,
)
from .servers import MakeRegistry, RegistryServer
from .store_view import V2, blob_path, layer_link_path

HOURS_2 = 7200.0


class Index:
    def __init__(self, children: list[Image]) -> None:
        self.children = children
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, c.manifest) for c in children],
        }).encode()

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


def layer() -> bytes:
    return uuid.uuid4().bytes * 300


def freed_by(deleted: list[Image], kept: list[Image]) -> dict[str, int]:
    """What collecting must free: content of the deleted images that no kept image shares."""
    shared = {d for image in kept for d in image.content}
    return {d: size for image in deleted for d, size in image.content.items() if d not in shared}


def cli(server: RegistryServer, command: str, *flags: str) -> list[str]:
    """`registry <command>` on the server's store, as an operator runs it: its output lines."""
    done = run_registry(command, "--config", str(store_config(server)), *flags)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def gc(server: RegistryServer, *flags: str) -> tuple[dict[str, int], list[str], str]:
    """Run `registry gc` on the server's store: (blobs freed with sizes, untagged manifests removed, summary)."""
    freed, untagged = {}, []
    lines = cli(server, "gc", *flags)
    for line in lines:
        kind, *rest = line.split()
        if kind == "blob":
            freed[rest[0]] = int(rest[1])
        elif kind == "untagged":
            untagged.append(rest[1].split("@", 1)[1])
    summary = lines[-1]
    verb = "would free" if "--dry-run" in flags else "freed"
    assert summary.startswith(f"{verb} {len(freed)} object(s), {sum(freed.values())} bytes"), summary
    return freed, untagged, summary


RECLAIMABLE = re.compile(r"garbage collection would free (\d+) bytes in (\d+) object\(s\)")


def du_reclaimable(server: RegistryServer, *flags: str) -> tuple[int, int]:
    """What `registry du` says garbage collection would free: (bytes, objects)."""
    found = RECLAIMABLE.search(cli(server, "du", *flags)[-1])
    assert found, "no reclaimable figure in du's summary"
    return int(found[1]), int(found[2])


def pull(client: RegistryClient, repo: str, reference: str, image: Image) -> None:
    """Pull as a client does, checking every digest against what was pushed."""
    r = client.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, r.text
    assert digest_of(r.content) == r.headers["Docker-Content-Digest"] == image.digest
    for data in [image.config, *image.layers]:
        b = client.request("GET", f"/v2/{repo}/blobs/{digest_of(data)}", allow_redirects=True)
        assert b.status_code == 200, b.text
        assert digest_of(b.content) == digest_of(data)


def delete_manifest(client: RegistryClient, repo: str, digest: str) -> None:
    assert client.request("DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202


def backdate(server: RegistryServer, seconds: float) -> None:
    """Make every file of a filesystem store look written `seconds` ago."""
    then = time.time() - seconds
    for path in (server.root / V2).rglob("*"):
        os.utime(path, (then, then))


def test_delete_then_gc_frees_exactly_the_unshared_content(make_registry: MakeRegistry, backend_name: str) -> None:
    """Blobs only deleted manifests referenced are freed, in every repository that linked them;
    shared layers stay; a dry run reports what the real run then frees, and a second run frees nothing."""
    server = make_registry(backend=backend_name)
    client = RegistryClient(server.url)
    repo, other = unique_repo("gc"), unique_repo("gc")
    shared = layer()
    old = Image([shared, layer()])
    new = Image([shared, layer()])
    elsewhere = Image([layer()])
    old.push(client, repo, "old")
    new.push(client, repo, "new")
    old.push(client, other, "old")  # the same image in a second repository, deleted there as well
    elsewhere.push(client, other, "mine")
    delete_manifest(client, repo, old.digest)
    delete_manifest(client, other, old.digest)
    expected = freed_by([old], [new, elsewhere])
    assert shared not in expected and len(expected) == 3

    would, _, _ = gc(server, "--dry-run", "--grace", "0s")
    assert would == expected
    assert all(server.store.exists(blob_path(d)) for d in expected)  # a dry run deletes nothing
    freed, _, _ = gc(server, "--grace", "0s")
    assert freed == expected
    for digest in expected:
        assert not server.store.exists(blob_path(digest))
        assert not server.store.exists(layer_link_path(repo, digest))
        assert not server.store.exists(layer_link_path(other, digest))
    for digest in new.content | elsewhere.content:
        assert server.store.exists(blob_path(digest))
    assert gc(server, "--grace", "0s")[0] == {}

    pull(client, repo, "new", new)
    pull(client, other, "mine", elsewhere)
    assert client.request("GET", f"/v2/{repo}/manifests/{old.digest}").status_code == 404
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest_of(old.layers[1])}").status_code == 404
    # freed content can be pushed again and pulled
    old.push(client, repo, "again")
    pull(client, repo, "again", old)


def test_du_reports_exactly_what_gc_then_frees(make_registry: MakeRegistry, backend_name: str) -> None:
    """A manifest DELETE keeps the repository's links to the config and layers: du counts that
    content, and a blob no manifest references, as what gc would free, byte for byte what gc then
    frees; gc leaves neither the blobs' directories nor the links behind."""
    server = make_registry(backend=backend_name)
    client = RegistryClient(server.url)
    repo, other = unique_repo("gc"), unique_repo("gc")
    shared = layer()
    gone, kept, elsewhere = Image([shared, layer(), layer()]), Image([shared, layer()]), Image([layer()])
    gone.push(client, repo, "gone")
    kept.push(client, repo, "kept")
    elsewhere.push(client, other, "x")
    lone = layer()
    client.push_blob(other, lone)
    delete_manifest(client, repo, gone.digest)
    expected = {**freed_by([gone], [kept, elsewhere]), digest_of(lone): len(lone)}
    assert all(server.store.exists(layer_link_path(repo, d)) for d in gone.blobs)  # the DELETE kept them

    assert du_reclaimable(server) == (0, 0)  # everything is younger than the default grace period
    assert du_reclaimable(server, "--grace", "0s") == (sum(expected.values()), len(expected))
    freed, _, _ = gc(server, "--grace", "0s")
    assert freed == expected
    for digest in expected:
        algorithm, hex_ = digest.split(":")
        assert not server.store.is_dir(f"{V2}/blobs/{algorithm}/{hex_[:2]}/{hex_}")
        for name in (repo, other):
            assert not server.store.is_dir(f"{V2}/repositories/{name}/_layers/{algorithm}/{hex_}")
    assert server.store.keys(f"{V2}/evicting") == []
    assert du_reclaimable(server, "--grace", "0s") == (0, 0)
    pull(client, repo, "kept", kept)
    pull(client, other, "x", elsewhere)


def test_content_younger_than_grace_is_never_collected(make_registry: MakeRegistry) -> None:
    """A blob pushed without a manifest, and a deleted image, survive a gc with the default grace
    (1h) and go with --grace 0s; old data that a repository linked lately (a push that found it
    stored) is kept, while old data with only old links goes."""
    server = make_registry()
    client = RegistryClient(server.url)
    repo, pusher = unique_repo("gc"), unique_repo("gc")
    lone = layer()
    client.push_blob(repo, lone)
    deleted = Image([layer()])
    deleted.push(client, repo, "x")
    delete_manifest(client, repo, deleted.digest)

    freed, _, summary = gc(server)
    assert freed == {}
    assert "kept 4 unreferenced object(s) younger than the grace period" in summary
    assert server.store.exists(blob_path(digest_of(lone)))

    backdate(server, HOURS_2)
    relinked = deleted.layers[0]
    client.push_blob(pusher, relinked)  # stored already: only a new link is written
    freed, _, _ = gc(server, "--grace", "1h")
    expected = {digest_of(lone): len(lone), **freed_by([deleted], [])}
    del expected[digest_of(relinked)]
    assert freed == expected
    assert server.store.exists(blob_path(digest_of(relinked)))
    b = client.request("GET", f"/v2/{pusher}/blobs/{digest_of(relinked)}")
    assert b.status_code == 200 and b.content == relinked

    assert gc(server, "--grace", "0s")[0] == {digest_of(relinked): len(relinked)}
    assert client.request("HEAD", f"/v2/{pusher}/blobs/{digest_of(relinked)}").status_code == 404


def test_delete_untagged_removes_what_no_tag_reaches(make_registry: MakeRegistry) -> None:
    """With --delete-untagged a manifest a retag left behind goes with its unique blobs, and so does a
    referrer of it; children of a tagged index and referrers of a tagged image stay."""
    server = make_registry()
    client = RegistryClient(server.url)
    repo = unique_repo("gc")
    base = layer()
    first, second = Image([base, layer()]), Image([base, layer()])
    first.push(client, repo, "latest")
    second.push(client, repo, "latest")  # first is now untagged
    first_signature, second_signature = Image([layer()], subject=first), Image([layer()], subject=second)
    first_signature.push(client, repo)
    second_signature.push(client, repo)
    children = [Image([layer()]), Image([layer()])]
    for child in children:
        child.push(client, repo)
    index = Index(children)
    assert client.push_manifest(repo, "multi", index.manifest, OCI_INDEX).status_code == 201

    assert gc(server, "--grace", "0s")[0] == {}  # without the flag every manifest is kept
    kept = [second, second_signature, *children]
    expected = freed_by([first, first_signature], kept)
    would, would_untag, _ = gc(server, "--grace", "0s", "--delete-untagged", "--dry-run")
    assert would == expected
    assert sorted(would_untag) == sorted([first.digest, first_signature.digest])
    freed, untagged, _ = gc(server, "--grace", "0s", "--delete-untagged")
    assert (freed, sorted(untagged)) == (would, sorted(would_untag))

    assert client.request("GET", f"/v2/{repo}/manifests/{first.digest}").status_code == 404
    assert client.request("GET", f"/v2/{repo}/manifests/{first_signature.digest}").status_code == 404
    pull(client, repo, "latest", second)
    pull(client, repo, second_signature.digest, second_signature)
    r = client.request("GET", f"/v2/{repo}/referrers/{second.digest}")
    assert [m["digest"] for m in r.json()["manifests"]] == [second_signature.digest]
    r = client.request("GET", f"/v2/{repo}/manifests/multi", headers={"Accept": OCI_INDEX})
    assert r.status_code == 200 and digest_of(r.content) == index.digest
    for child in children:
        pull(client, repo, child.digest, child)


def test_referrers_of_a_deleted_subject_go_only_with_delete_untagged(make_registry: MakeRegistry,
                                                                      backend_name: str) -> None:
    server = make_registry(backend=backend_name)
    client = RegistryClient(server.url)
    repo = unique_repo("gc")
    subject = Image([layer()])
    subject.push(client, repo, "v1")
    signature = Image([layer()], subject=subject)
    signature.push(client, repo)
    delete_manifest(client, repo, subject.digest)

    freed, _, _ = gc(server, "--grace", "0s")
    assert freed == freed_by([subject], [signature])
    pull(client, repo, signature.digest, signature)

    freed, untagged, _ = gc(server, "--grace", "0s", "--delete-untagged")
    assert untagged == [signature.digest]
    assert freed == freed_by([signature], [])
    assert client.request("GET", f"/v2/{repo}/manifests/{signature.digest}").status_code == 404
    for digest in signature.content:
        assert not server.store.exists(blob_path(digest))


def test_gc_while_serving_keeps_tagged_images_pullable(make_registry: MakeRegistry, tmp_path: Path) -> None:
    """storage.gc.enabled collects in the background (1s interval, no grace), and pulls of a tagged
    image keep working, digest for digest, while it does. (The images are pushed before: with no
    grace at all, a push in progress is fair game.)"""
    root = tmp_path / "store"
    writer = make_registry(root=root)
    client = RegistryClient(writer.url)
    repo = unique_repo("gc")
    shared = layer()
    tagged, doomed = Image([shared, layer()]), Image([shared, layer()])
    tagged.push(client, repo, "stable")
    doomed.push(client, repo, "doomed")
    delete_manifest(client, repo, doomed.digest)
    expected = freed_by([doomed], [tagged])
    writer.stop()

    config = {"storage": {"gc": {"enabled": True, "interval": "1s", "grace": "0s"}}}
    server = make_registry(root=root, config=config)
    client = RegistryClient(server.url)

    deadline = time.monotonic() + 30
    pulls = 0
    while any(server.store.exists(blob_path(d)) for d in expected) and time.monotonic() < deadline:
        pull(client, repo, "stable", tagged)
        pulls += 1
    assert not any(server.store.exists(blob_path(d)) for d in expected)
    end = time.monotonic() + 3  # a few more collections while pulling
    while time.monotonic() < end:
        pull(client, repo, "stable", tagged)
        pulls += 1
    assert pulls > 3
    assert all(server.store.exists(blob_path(d)) for d in tagged.content)
    server.logged("garbage collection: freed 3 object(s)")


def test_two_replicas_collecting_one_bucket_at_once_lose_nothing(make_registry: MakeRegistry) -> None:
    """Several replicas on one S3 bucket may each run GC: two collections at the same moment
    free the deleted content between them, never what is still referenced."""
    server = make_registry(backend="s3")
    client = RegistryClient(server.url)
    repo = unique_repo("gc")
    shared = layer()
    gone, kept = Image([shared, layer(), layer()]), Image([shared, layer()])
    gone.push(client, repo, "gone")
    kept.push(client, repo, "kept")
    delete_manifest(client, repo, gone.digest)
    expected = freed_by([gone], [kept])

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: gc(server, "--grace", "0s")[0], range(2)))
    assert set(runs[0]) | set(runs[1]) == set(expected)
    for digest in expected:
        assert not server.store.exists(blob_path(digest))
    assert server.store.keys(f"{V2}/evicting") == []  # nothing left set aside
    pull(client, repo, "kept", kept)
    assert gc(server, "--grace", "0s")[0] == {}
