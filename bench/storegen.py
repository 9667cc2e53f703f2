"""Write a Distribution-layout store directly, fast: repositories, tags, manifests and layers
with realistic sharing, optionally with some manifests deleted the way the API deletes them.

    python -m bench.storegen DIR --manifests 100000 --repositories 100000 --deleted 0.1
    python -m bench.storegen --s3 http://127.0.0.1:PORT --bucket NAME --root /registry --manifests 10000

Every image has its own manifest and config, one of a few base layers (most images share the
first few of them), often one of a few hundred shared runtime layers, and one or two layers of
its own: about 3.5 blobs per manifest. Every manifest has a tag; the first repository also holds
`--many-tags` tags (the tags/list scenario). A deleted manifest is stored, and its repository
keeps its `_layers` links, but its revision link and its tags are gone, as after
`DELETE /v2/<name>/manifests/<digest>`. Both this registry and Distribution 2.8 read the result.

The generator knows what a garbage collection must free: every blob only deleted manifests
reference (`GeneratedStore.freed`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

V2 = "docker/registry/v2"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
#: repositories per organisation: names are `team<org>/app<n>`, nested as most registries' are
PER_ORG = 100


@dataclass(frozen=True)
class StoreSpec:
    manifests: int = 100_000
    repositories: int = 100_000
    deleted: float = 0.1  # fraction of manifests deleted through the API (their _layers links stay)
    many_tags: int = 10_000  # tags of the first repository, all on its first manifest
    base_layers: int = 20  # one per image; most images use the first few
    runtime_layers: int = 200  # one per image with probability RUNTIME_SHARE
    seed: int = 1

    def repository(self, index: int) -> str:
        return f"team{index // PER_ORG:04d}/app{index % PER_ORG:02d}"


RUNTIME_SHARE = 0.6


@dataclass
class GeneratedStore:
    spec: StoreSpec
    blobs: int = 0
    blob_bytes: int = 0
    tags: int = 0
    deleted_manifests: int = 0
    #: hex digests (sha256) of the blobs only deleted manifests reference: what gc must free
    freed: set[str] = field(default_factory=set)
    freed_bytes: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        s = self.spec
        return (f"{s.repositories:,} repositories, {s.manifests:,} manifests ({self.deleted_manifests:,} deleted), "
                f"{self.tags:,} tags, {self.blobs:,} blobs ({self.blob_bytes / 1e6:,.1f} MB); gc must free "
                f"{len(self.freed):,} blobs ({self.freed_bytes / 1e6:,.1f} MB); written in {self.seconds:.0f} s")


def _link(hex_: str) -> bytes:
    return f"sha256:{hex_}".encode()


def _descriptor(media_type: str, hex_: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{hex_}", "size": size}


class _Blob:
    __slots__ = ("hex", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.hex = hashlib.sha256(data).hexdigest()


def _filler(label: str, size: int) -> bytes:
    seed = hashlib.sha256(label.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def generate(spec: StoreSpec, put: Callable[[str, bytes], None],
             make_dir: Callable[[str], None] = lambda path: None, only: set[str] | None = None) -> GeneratedStore:
    """Call put(path, bytes) for every file of the store (each path once), and make_dir for the
    empty directories a filesystem store keeps after deletes; returns what was written.

    With `only` (hex digests), just the blob data and `_layers` links of those digests are
    written: after a collection, `only=generated.freed` puts back exactly what it deleted.
    """
    started = time.monotonic()
    if only is not None:
        inner = put
        put = lambda path, data: inner(path, data) if path.rsplit("/", 2)[-2] in only else None  # noqa: E731
        make_dir = lambda path: None  # noqa: E731
    rng = random.Random(spec.seed)
    out = GeneratedStore(spec)
    bases = [_Blob(_filler(f"{spec.seed}-base-{i}", 4096)) for i in range(spec.base_layers)]
    runtimes = [_Blob(_filler(f"{spec.seed}-runtime-{i}", 3072)) for i in range(spec.runtime_layers)]
    base_weights = [1 / (i + 1) for i in range(spec.base_layers)]
    shared_written: set[str] = set()
    #: shared layers and whether a kept image uses them (those only deleted images use are freed)
    shared_kept: dict[str, bool] = {}
    shared_size: dict[str, int] = {}

    def put_blob(blob: _Blob) -> None:
        put(f"{V2}/blobs/sha256/{blob.hex[:2]}/{blob.hex}/data", blob.data)
        out.blobs += 1
        out.blob_bytes += len(blob.data)

    for r in range(spec.repositories):
        name = spec.repository(r)
        repo = f"{V2}/repositories/{name}"
        linked: set[str] = set()
        holds_revision = False
        for j in range(r, spec.manifests, spec.repositories):
            deleted = rng.random() < spec.deleted and not (r == 0 and j == 0)
            shared = [bases[rng.choices(range(spec.base_layers), base_weights)[0]]]
            if rng.random() < RUNTIME_SHARE:
                shared.append(runtimes[rng.randrange(spec.runtime_layers)])
            own = [_Blob(_filler(f"{spec.seed}-layer-{j}-{k}", rng.randrange(512, 4096)))
                   for k in range(rng.choice((1, 2)))]
            config = _Blob(json.dumps({"architecture": "amd64", "os": "linux",
                                       "config": {"Labels": {"image": str(j)}}}).encode())
            manifest = _Blob(json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": _descriptor(OCI_CONFIG, config.hex, len(config.data)),
                "layers": [_descriptor(OCI_LAYER, b.hex, len(b.data)) for b in shared + own],
            }).encode())
            for blob in shared:
                if blob.hex not in shared_written:
                    shared_written.add(blob.hex)
                    shared_size[blob.hex] = len(blob.data)
                    put_blob(blob)
                shared_kept[blob.hex] = shared_kept.get(blob.hex, False) or not deleted
            for blob in [config, *own, manifest]:
                put_blob(blob)
            for blob in [config, *shared, *own]:
                if blob.hex not in linked:
                    linked.add(blob.hex)
                    put(f"{repo}/_layers/sha256/{blob.hex}/link", _link(blob.hex))
            if deleted:
                out.deleted_manifests += 1
                for blob in [config, *own, manifest]:
                    out.freed.add(blob.hex)
                    out.freed_bytes += len(blob.data)
                continue
            holds_revision = True
            put(f"{repo}/_manifests/revisions/sha256/{manifest.hex}/link", _link(manifest.hex))
            tags = [f"v{j // spec.repositories + 1}"]
            if j == 0:
                tags += [f"t{k:05d}" for k in range(spec.many_tags)]
            for tag in tags:
                put(f"{repo}/_manifests/tags/{tag}/current/link", _link(manifest.hex))
                put(f"{repo}/_manifests/tags/{tag}/index/sha256/{manifest.hex}/link", _link(manifest.hex))
            out.tags += len(tags)
        if not holds_revision:  # what deletes leave on a filesystem: the repository stays listed
            make_dir(f"{repo}/_manifests/revisions/sha256")
            make_dir(f"{repo}/_manifests/tags")
    for hex_, kept in shared_kept.items():
        if not kept:
            out.freed.add(hex_)
            out.freed_bytes += shared_size[hex_]
    out.seconds = time.monotonic() - started
    return out


class FilesystemSink:
    """Writes files under root; a directory is made only when opening a file in it fails. A file
    that exists is left alone (the content is the same for the same spec)."""

    FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL

    def __init__(self, root: str) -> None:
        self.root = root

    def put(self, path: str, data: bytes) -> None:
        full = f"{self.root}/{path}"
        try:
            fd = os.open(full, self.FLAGS, 0o644)
        except FileExistsError:
            return
        except FileNotFoundError:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            fd = os.open(full, self.FLAGS, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def make_dir(self, path: str) -> None:
        os.makedirs(f"{self.root}/{path}", exist_ok=True)


class S3Sink:
    """PUTs each file as an object under root, many at a time; close() waits for all of them."""

    def __init__(self, client: Any, bucket: str, root: str, threads: int = 16) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = f"{root.strip('/')}/" if root.strip("/") else ""
        self.pool = ThreadPoolExecutor(threads)
        self.slots = threading.Semaphore(threads * 4)
        self.errors: list[BaseException] = []

    def put(self, path: str, data: bytes) -> None:
        if self.errors:
            raise self.errors[0]
        self.slots.acquire()
        future: Future[Any] = self.pool.submit(self.client.put_object, Bucket=self.bucket,
                                               Key=self.prefix + path, Body=data)
        future.add_done_callback(self._done)

    def _done(self, future: Future[Any]) -> None:
        self.slots.release()
        if future.exception() is not None:
            self.errors.append(future.exception())  # type: ignore[arg-type]

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.errors:
            raise self.errors[0]


def generate_filesystem(spec: StoreSpec, root: str, only: set[str] | None = None) -> GeneratedStore:
    sink = FilesystemSink(root)
    return generate(spec, sink.put, sink.make_dir, only)


def generate_s3(spec: StoreSpec, client: Any, bucket: str, root: str, only: set[str] | None = None) -> GeneratedStore:
    sink = S3Sink(client, bucket, root)
    try:
        return generate(spec, sink.put, only=only)
    finally:
        sink.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storegen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", help="the store's root directory (filesystem)")
    parser.add_argument("--manifests", type=int, default=StoreSpec.manifests)
    parser.add_argument("--repositories", type=int, default=StoreSpec.repositories)
    parser.add_argument("--deleted", type=float, default=StoreSpec.deleted)
    parser.add_argument("--many-tags", type=int, default=StoreSpec.many_tags)
    parser.add_argument("--seed", type=int, default=StoreSpec.seed)
    parser.add_argument("--put-back", action="store_true",
                        help="write only what a collection of the generated store deletes (after a gc)")
    parser.add_argument("--s3", metavar="ENDPOINT", help="write to this S3 endpoint instead (path-style, test keys)")
    parser.add_argument("--bucket", help="the bucket (created when missing), with --s3")
    parser.add_argument("--root-directory", default="/registry", help="the bucket's rootdirectory, with --s3")
    args = parser.parse_args(argv)
    spec = StoreSpec(args.manifests, min(args.repositories, args.manifests), args.deleted, args.many_tags,
                     seed=args.seed)
    only = generate(spec, lambda path, data: None).freed if args.put_back else None
    if args.s3:
        import boto3

        if not args.bucket:
            parser.error("--s3 needs --bucket")
        client = boto3.client("s3", endpoint_url=args.s3, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        try:
            client.create_bucket(Bucket=args.bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        result = generate_s3(spec, client, args.bucket, args.root_directory, only)
    elif args.root:
        result = generate_filesystem(spec, args.root, only)
    else:
        parser.error("give a root directory or --s3")
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
