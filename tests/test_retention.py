"""Retention policies (`registry retention`, storage.retention): which tags go, and what gc then frees.

A tag's age is the mtime of its current link, so ages are set by backdating those files on the
filesystem store. Each tag gets an image of its own (all sharing one layer), so what a
garbage collection must free after the untagging is known from what was pushed.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any


from .cli import run_registry, store_config
from .client import RegistryClient, digest_of
from .servers import RegistryServer
from .store_view import V2, blob_path
from .test_gc import Image, MakeRegistry, freed_by, gc, layer, pull

DAY = 86400.0


def set_tag_age(server: RegistryServer, repo: str, tag: str, days: float) -> None:
    """Make the tag look pushed `days` ago (its current link's mtime)."""
    link = server.root / V2 / "repositories" / repo / "_manifests" / "tags" / tag / "current" / "link"
    assert link.is_file(), link
    then = time.time() - days * DAY
    os.utime(link, (then, then))


def retention(server: RegistryServer, rules: list[dict[str, Any]], *flags: str,
              expect_status: int = 0) -> subprocess.CompletedProcess[str]:
    """Run `registry retention` with these rules on the server's store."""
    done = run_registry("retention", "--config", str(store_config(server, retention=rules)), *flags)
    assert done.returncode == expect_status, done.stdout + done.stderr
    return done


def deleted_tags(done: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], str]:
    """{(repository, tag): digest} from the `tag <repo>:<tag> <digest>` lines."""
    found = {}
    for line in done.stdout.splitlines()[:-1]:
        kind, reference, digest = line.split()
        assert kind == "tag", line
        repo, tag = reference.rsplit(":", 1)
        found[(repo, tag)] = digest
    return found


def tags(client: RegistryClient, repo: str) -> set[str]:
    r = client.request("GET", f"/v2/{repo}/tags/list")
    assert r.status_code == 200, r.text
    return set(r.json()["tags"] or [])


def test_tags_no_rule_keeps_are_deleted_then_gc_frees_their_content(make_registry: MakeRegistry) -> None:
    """keeplast counts every tag by push time, keeptags is a searched regex, keepdays an age; a tag any
    matching rule keeps stays; a repository no rule matches keeps old tags; the dry run lists what
    the real run deletes; the untagged manifests stay pullable until gc --delete-untagged frees
    exactly their unshared content."""
    server = make_registry()
    client = RegistryClient(server.url)
    ns = f"ret{uuid.uuid4().hex[:8]}"
    app, svc, both, other = f"{ns}/app", f"{ns}/svc", f"{ns}/both", f"keep{uuid.uuid4().hex[:8]}/app"
    rules = [
        {"repositories": [app, f"{ns}/b*"], "keeplast": 2, "keeptags": [r"^v\d+", "^latest$"]},
        {"repositories": [f"{ns}/s*", both], "keepdays": 30},
    ]
    ages = {  # repository -> tag -> age in days
        app: {"v1.0": 5, "latest": 250, "latest-rc": 200, "b1": 100, "b2": 90, "b3": 80},
        svc: {"a": 31, "b": 29, "c": 0, "d": 400},
        both: {"v2": 400, "x": 300, "y": 200, "z": 100, "w": 10},
        other: {"ancient": 1000, "older": 2000},
    }
    expected_deleted = {
        (app, "latest-rc"), (app, "b1"), (app, "b2"),  # kept: v1.0 (newest and v\d), b3 (2nd newest), latest
        (svc, "a"), (svc, "d"),  # kept: b and c, younger than 30 days
        (both, "x"), (both, "y"),  # kept: v2 (regex), w and z (newest two), w (days)
    }
    shared = layer()
    images: dict[tuple[str, str], Image] = {}
    for repo, tag_ages in ages.items():
        for tag in tag_ages:
            images[(repo, tag)] = Image([shared, layer()])
            images[(repo, tag)].push(client, repo, tag)
    for repo, tag_ages in ages.items():
        for tag, days in tag_ages.items():
            set_tag_age(server, repo, tag, days)

    dry = retention(server, rules, "--dry-run")
    would = deleted_tags(dry)
    assert set(would) == expected_deleted
    assert all(would[key] == images[key].digest for key in would)
    assert dry.stdout.splitlines()[-1] == "would delete 7 tag(s) in 3 repositories"
    for repo, tag_ages in ages.items():
        assert tags(client, repo) == set(tag_ages)  # a dry run deletes nothing

    done = retention(server, rules)
    assert deleted_tags(done) == would
    assert done.stdout.splitlines()[-1] == "deleted 7 tag(s) in 3 repositories"
    for repo, tag_ages in ages.items():
        assert tags(client, repo) == {t for t in tag_ages if (repo, t) not in expected_deleted}
    for repo, tag in expected_deleted:  # untagged, not deleted: still there by digest
        assert client.request("GET", f"/v2/{repo}/manifests/{tag}").status_code == 404
        pull(client, repo, images[(repo, tag)].digest, images[(repo, tag)])
    assert deleted_tags(retention(server, rules)) == {}  # nothing more to do

    kept_images = [image for key, image in images.items() if key not in expected_deleted]
    expected_freed = freed_by([images[key] for key in expected_deleted], kept_images)
    assert digest_of(shared) not in expected_freed
    freed, untagged, _ = gc(server, "--grace", "0s", "--delete-untagged")
    assert sorted(untagged) == sorted(images[key].digest for key in expected_deleted)
    assert freed == expected_freed
    for digest in expected_freed:
        assert not server.store.exists(blob_path(digest))
    for (repo, tag), image in images.items():
        if (repo, tag) in expected_deleted:
            assert client.request("GET", f"/v2/{repo}/manifests/{image.digest}").status_code == 404
        else:
            pull(client, repo, tag, image)


def test_a_tag_pushed_again_is_newest(make_registry: MakeRegistry) -> None:
    """Pushing a tag again makes it the newest for keeplast, even with the same manifest."""
    server = make_registry()
    client = RegistryClient(server.url)
    repo = f"ret{uuid.uuid4().hex[:8]}/app"
    images = {tag: Image([layer()]) for tag in ("one", "two", "three")}
    for tag, image in images.items():
        image.push(client, repo, tag)
    for days, tag in enumerate(["three", "two", "one"], start=1):
        set_tag_age(server, repo, tag, days)
    rules = [{"repositories": [repo], "keeplast": 1}]
    assert set(deleted_tags(retention(server, rules, "--dry-run"))) == {(repo, "two"), (repo, "one")}
    images["one"].push(client, repo, "one")  # pushed again: now the newest
    assert set(deleted_tags(retention(server, rules))) == {(repo, "two"), (repo, "three")}
    assert tags(client, repo) == {"one"}
    pull(client, repo, "one", images["one"])


def test_background_gc_applies_retention_first(make_registry: MakeRegistry, tmp_path: Path) -> None:
    """With storage.gc enabled (and deleteuntagged), each background run applies storage.retention
    first: the old tags go, then their images' content; kept tags stay pullable."""
    root = tmp_path / "store"
    writer = make_registry(root=root)
    client = RegistryClient(writer.url)
    repo, untouched = f"ret{uuid.uuid4().hex[:8]}/app", f"keep{uuid.uuid4().hex[:8]}/app"
    shared = layer()
    recent, old, elsewhere = Image([shared, layer()]), Image([shared, layer()]), Image([layer()])
    recent.push(client, repo, "recent")
    old.push(client, repo, "old")
    elsewhere.push(client, untouched, "old")
    set_tag_age(writer, repo, "old", 60)
    set_tag_age(writer, untouched, "old", 60)
    writer.stop()

    config = {"storage": {"gc": {"enabled": True, "interval": "1s", "grace": "0s", "deleteuntagged": True},
                          "retention": [{"repositories": [repo], "keepdays": 30}]}}
    server = make_registry(root=root, config=config)
    client = RegistryClient(server.url)
    expected = freed_by([old], [recent, elsewhere])
    deadline = time.monotonic() + 20
    while any(server.store.exists(blob_path(d)) for d in expected) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(server.store.exists(blob_path(d)) for d in expected)
    assert tags(client, repo) == {"recent"}
    pull(client, repo, "recent", recent)
    pull(client, untouched, "old", elsewhere)
    server.logged("retention: deleted 1 tag(s) in 1 repository")
