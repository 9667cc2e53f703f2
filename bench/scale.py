"""The scale scenarios (opt-in: `python -m bench --scale`): garbage collection, listings, startup
and memory on a generated store of 100,000 manifests (bench/storegen.py), and memory under
sustained mixed traffic. Distribution runs beside ours wherever it has the same operation.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import yaml

from . import ops
from .httpclient import expect
from .procs import REPO_ROOT, RssSampler, S3Endpoint, Side
from .scenarios import Context, Metric, Scenario, connect, in_threads
from .storegen import V2, GeneratedStore, StoreSpec, generate_filesystem, generate_s3

from tests.s3 import s3_client  # noqa: E402  (bench/procs.py puts the repository on sys.path)
from tests.s3_proxy import S3FaultProxy  # noqa: E402
from tests.servers import reference_binary  # noqa: E402

RECLAIMABLE = re.compile(r"garbage collection would free (\d+) bytes")


class ScaleStores:
    """The generated stores, made once per run: one for each side, since collecting changes a
    store. Afterwards only what a collection deleted (the freed blobs and their links) is
    written again, which takes seconds where copying the whole store takes minutes."""

    def __init__(self, workdir: Path, spec: StoreSpec) -> None:
        self.workdir = workdir
        self.spec = spec
        self.generated: dict[str, GeneratedStore] = {}

    def root(self, side: str) -> Path:
        return self.workdir / f"store-{side}"

    def fresh(self, side: str) -> GeneratedStore:
        """The side's store as generated, whatever a collection did to it since."""
        done = self.generated.get(side)
        started = time.monotonic()
        generated = generate_filesystem(self.spec, str(self.root(side)), None if done is None else done.freed)
        if done is None:
            self.generated[side] = generated
            log(f"  {side} store generated in {time.monotonic() - started:.0f} s: {generated.summary()}")
        elif len(blob_directories(self.root(side))) != generated.blobs:
            raise RuntimeError(f"the {side} store was not put back as generated")
        return self.generated[side]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stores(ctx: Context) -> ScaleStores:
    if not hasattr(ctx, "scale_stores"):
        ctx.scale_stores = ScaleStores(ctx.workdir, ctx.sizes.scale_store)  # type: ignore[attr-defined]
    return ctx.scale_stores  # type: ignore[attr-defined]


def measured(cmd: list[str], output: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run cmd to completion: (wall seconds, peak RSS in MiB from the kernel's accounting)."""
    with open(output, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {output.read_text()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def registry_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "registry", *args]


def write_config(path: Path, storage: dict[str, Any], reference: bool) -> Path:
    config: dict[str, Any] = {"storage": storage}
    if reference:
        config = {"version": 0.1, "log": {"level": "error"},
                  "storage": {**storage, "delete": {"enabled": True}}}
    path.write_text(yaml.safe_dump(config))
    return path


def blob_directories(root: Path) -> set[str]:
    """The blobs of a filesystem store, by their directories (both collectors remove a freed blob's)."""
    base = root / V2 / "blobs" / "sha256"
    return {entry.name for prefix in os.scandir(base) for entry in os.scandir(prefix.path)}


class GarbageCollection(Scenario):
    """`registry gc --grace 0s` against `docker-registry garbage-collect`, each on its own copy of
    the same generated store, with `registry du` checked against what gc then frees."""

    name = "gc"
    description = "garbage collection on the generated store (10% of manifests deleted), both collectors"
    needs_servers = False
    opt_in = True

    def __init__(self, sizes: Any) -> None:
        spec = sizes.scale_store
        what = f"{spec.manifests:,} manifests"
        self.metrics = (
            Metric("gc_seconds", f"gc wall time, {what}", "s", higher_is_better=False, max_ours=40),
            Metric("gc_rss", f"gc peak RSS, {what}", "MiB", higher_is_better=False, max_ours=300,
                   aggregate="max"),
            Metric("du_seconds", f"du wall time (ours: gc's dry run), {what}", "s", higher_is_better=False),
        )

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        scale = stores(ctx)
        generated = scale.fresh(side.name)
        root = scale.root(side.name)
        logs = ctx.workdir / f"gc-{side.name}-{round_index}"
        logs.mkdir(exist_ok=True)
        storage = {"filesystem": {"rootdirectory": str(root)}}
        config = write_config(logs / "config.yml", storage, side.name == "reference")
        before = blob_directories(root)
        if side.name == "reference":
            seconds, rss = measured([reference_binary(), "garbage-collect", str(config)], logs / "gc.log")
            du_seconds = None
        else:
            du_seconds, _ = measured(registry_command("du", "--config", str(config), "--grace", "0s"),
                                     logs / "du.log")
            found = RECLAIMABLE.search((logs / "du.log").read_text().splitlines()[-1])
            if not found or int(found[1]) != generated.freed_bytes:
                raise RuntimeError(f"du says gc would free {found and found[1]} bytes, "
                                   f"the store has {generated.freed_bytes} to free")
            seconds, rss = measured(registry_command("gc", "--config", str(config), "--grace", "0s"),
                                    logs / "gc.log")
        freed = before - blob_directories(root)
        if freed != generated.freed:
            raise RuntimeError(f"{side.name} freed {len(freed)} blobs: {len(freed - generated.freed)} it should "
                               f"have kept, {len(generated.freed - freed)} missed or left as directories")
        log(f"  {side.name}: freed exactly the {len(freed):,} unreferenced blobs and their directories")
        results = {"gc_seconds": seconds, "gc_rss": rss}
        if du_seconds is not None:
            results["du_seconds"] = du_seconds
        return results


class S3GarbageCollection(Scenario):
    """Both collectors on S3 (moto), each on its own bucket of the same generated store, every S3
    call counted by a proxy in front of moto."""

    name = "gc-s3"
    description = "garbage collection on S3 (moto) through a call-counting proxy, both collectors"
    needs_servers = False
    opt_in = True
    backend = "s3"

    def __init__(self, sizes: Any) -> None:
        self.spec = sizes.s3_scale_store
        what = f"{self.spec.manifests:,} manifests"
        self.metrics = (
            Metric("gc_s3_seconds", f"S3: gc wall time, {what}", "s", higher_is_better=False),
            Metric("gc_s3_calls", f"S3: gc calls to S3, {what}", "calls", higher_is_better=False),
            Metric("gc_s3_lists", f"S3: gc listing calls, {what}", "calls", higher_is_better=False),
        )

    def prepare(self, ctx: Context) -> None:
        self.proxy: S3FaultProxy | None = None
        self.buckets: dict[str, str] = {}
        self.generated: dict[str, GeneratedStore] = {}

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        endpoint: S3Endpoint = side.s3  # type: ignore[assignment]
        if self.proxy is None:
            self.proxy = S3FaultProxy(endpoint.moto.url).start()
        client = s3_client(endpoint.moto)
        bucket = self.buckets.get(side.name) or endpoint.new_bucket()
        self.buckets[side.name] = bucket
        started = time.monotonic()
        done = self.generated.get(side.name)
        generated = generate_s3(self.spec, client, bucket, "/registry", None if done is None else done.freed)
        self.generated[side.name] = generated
        log(f"  {side.name} bucket ready in {time.monotonic() - started:.0f} s: {generated.summary()}")
        before = _blobs_in(client, bucket)
        logs = ctx.workdir / f"gc-s3-{side.name}-{round_index}"
        logs.mkdir(exist_ok=True)
        storage = endpoint.storage(bucket, redirect=False)
        storage["s3"]["regionendpoint"] = self.proxy.url
        config = write_config(logs / "config.yml", {"s3": storage["s3"]}, side.name == "reference")
        self.proxy.reset_counts()
        if side.name == "reference":
            env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
            seconds, _ = measured([reference_binary(), "garbage-collect", str(config)], logs / "gc.log", env)
        else:
            seconds, _ = measured(registry_command("gc", "--config", str(config), "--grace", "0s"), logs / "gc.log")
        counts = self.proxy.counts()
        freed = before - _blobs_in(client, bucket)
        if freed != generated.freed:
            raise RuntimeError(f"{side.name} freed {len(freed)} blobs on S3, {len(generated.freed)} expected")
        log(f"  {side.name}: {sum(counts.values())} S3 calls: {dict(counts.most_common())}")
        lists = sum(n for op, n in counts.items() if op.startswith("List"))
        return {"gc_s3_seconds": seconds, "gc_s3_calls": sum(counts.values()), "gc_s3_lists": lists}

    def finish(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()


def _keys(client: Any, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def _blobs_in(client: Any, bucket: str) -> set[str]:
    return {key.split("/")[-2] for key in _keys(client, bucket) if "/blobs/" in key and key.endswith("/data")}


class ScaleListing(Scenario):
    """Catalog pages of 100 (first, middle, last) at 100k repositories, and tags/list pages of 100
    at 10k tags, one request at a time; both servers on the same generated store (read only)."""

    name = "scale-listing"
    description = "catalog and tags/list pages on the generated store, one request at a time"
    opt_in = True
    REQUESTS = 20

    def __init__(self, sizes: Any) -> None:
        spec = sizes.scale_store
        repos, tags = f"{spec.repositories:,} repositories", f"{spec.many_tags:,} tags"
        self.metrics = tuple(
            Metric(f"{kind}_{where}", f"{label}, {where} page of 100, {count}", "ms", higher_is_better=False,
                   max_ours=50)
            for kind, label, count in (("catalog", "_catalog", repos), ("tags", "tags/list", tags))
            for where in ("first", "middle", "last"))

    def setup(self, side: Side, ctx: Context) -> Any:
        scale = stores(ctx)
        if side.name == "reference":
            scale.fresh("ours")  # both serve the one store: listings write nothing
        side.start(root=scale.root("ours"))
        spec = scale.spec
        names = sorted(spec.repository(i) for i in range(spec.repositories))
        tags_path = f"/v2/{spec.repository(0)}/tags/list"
        with connect(side) as conn:
            tags = sorted(ops.get_json(conn, tags_path)["tags"])  # type: ignore[index]
        if len(tags) < spec.many_tags:
            raise RuntimeError(f"{side.name} lists {len(tags)} tags of {spec.repository(0)}")
        paths = {}
        for kind, items, base in (("catalog", names, "/v2/_catalog?n=100"), ("tags", tags, f"{tags_path}?n=100")):
            middle = len(items) // 2
            paths[f"{kind}_first"] = (base, items[:100])
            paths[f"{kind}_middle"] = (f"{base}&last={items[middle - 1]}", items[middle:middle + 100])
            paths[f"{kind}_last"] = (f"{base}&last={items[-101]}", items[-100:])
        with connect(side) as conn:
            for key, (path, expected) in paths.items():
                body = ops.get_json(conn, path)
                got = body.get("repositories") or body.get("tags")  # type: ignore[union-attr]
                if key.startswith("tags") and side.name == "reference":
                    # Distribution 2.8 does not page tags/list: it answers every tag, in directory order
                    got, expected = sorted(got or []), tags
                if got != expected:
                    raise RuntimeError(f"{side.name}: {path} listed {got[:3] if got else got}..., not {expected[:3]}...")
        return {key: path for key, (path, _) in paths.items()}

    def measure(self, side: Side, paths: dict[str, str], round_index: int, ctx: Context) -> dict[str, float]:
        results = {}
        with connect(side) as conn:
            for key, path in paths.items():
                samples = []
                for _ in range(self.REQUESTS):
                    started = time.perf_counter()
                    expect(conn.request("GET", path), 200)
                    samples.append((time.perf_counter() - started) * 1000)
                results[key] = median(samples)
        return results


class Startup(Scenario):
    """Seconds from exec to the first answer of GET /v2/, and resident memory then, on an empty
    store and on the generated one."""

    name = "startup"
    description = "server startup time and memory, empty store and generated store"
    opt_in = True
    needs_servers = False

    def __init__(self, sizes: Any) -> None:
        what = f"{sizes.scale_store.manifests:,} manifests"
        self.metrics = (
            Metric("start_empty", "startup to first answer, empty store", "s", higher_is_better=False),
            Metric("start_full", f"startup to first answer, {what}", "s", higher_is_better=False),
            Metric("start_rss_empty", "RSS after startup, empty store", "MiB", higher_is_better=False,
                   aggregate="max"),
            Metric("start_rss_full", f"RSS after startup, {what}", "MiB", higher_is_better=False,
                   aggregate="max"),
        )

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        scale = stores(ctx)
        if side.name == "reference" and round_index == 0:
            scale.fresh("ours")
        results = {}
        for which, root in (("empty", None), ("full", scale.root("ours"))):
            results[f"start_{which}"] = side.start_timed(root)
            with connect(side) as conn:
                expect(conn.request("GET", "/v2/_catalog?n=1"), 200)
            results[f"start_rss_{which}"] = RssSampler(side.pid).sample() / 1024
            side.stop()
        return results


class SustainedLoad(Scenario):
    """Mixed traffic from 64 connections for a while (10 minutes in the full run): small pushes,
    manifest pushes and tags, pulls of blobs and manifests, on ever new digests so that every
    cache fills. The figure is the server's resident memory at the end, and how much it grew
    after the first tenth of the run."""

    name = "soak"
    description = "resident memory under sustained mixed traffic (push, pull, manifests) at 64 connections"
    opt_in = True
    fresh_per_round = True
    max_rounds = 1

    def __init__(self, sizes: Any) -> None:
        self.seconds = sizes.soak_seconds
        self.connections = sizes.soak_connections
        what = f"after {self.seconds / 60:g} min at {self.connections} connections"
        self.metrics = (
            Metric("soak_rss", f"RSS {what}", "MiB", higher_is_better=False, aggregate="max"),
            Metric("soak_growth", f"RSS growth after the first tenth, {what}", "MiB", higher_is_better=False,
                   max_ours=32, aggregate="max"),
            Metric("soak_rate", f"requests/s during the run, {self.connections} connections", "req/s"),
        )

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        deadline = time.monotonic() + self.seconds
        warm = time.monotonic() + self.seconds / 10
        counts = [0] * self.connections
        errors: list[BaseException] = []
        sampler = RssSampler(side.pid, interval=1.0)
        warm_rss: list[float] = []

        def traffic(index: int) -> None:
            rng = random.Random(f"{round_index}-{index}")
            repo = f"soak/r{index % 16}"
            pushed: list[tuple[str, int]] = []
            manifests: list[str] = []
            with connect(side) as conn:
                while time.monotonic() < deadline:
                    if not warm_rss and time.monotonic() >= warm and index == 0:
                        warm_rss.append(sampler.sample() / 1024)
                    roll = rng.random()
                    if roll < 0.25 or not pushed:
                        data = rng.randbytes(rng.randrange(256, 64 << 10))
                        digest = ops.digest_of(data)
                        ops.push_small(conn, repo, data, digest, single_post=False)
                        pushed = (pushed + [(digest, len(data))])[-32:]
                    elif roll < 0.35:
                        config = rng.randbytes(64)
                        ops.push_small(conn, repo, config, ops.digest_of(config), single_post=False)
                        layers = rng.sample(pushed, min(3, len(pushed)))
                        manifest = _manifest((ops.digest_of(config), len(config)), layers)
                        tag = f"t{index}-{counts[index]}"
                        ops.put_manifest(conn, repo, tag, manifest)
                        manifests = (manifests + [tag])[-32:]
                    elif roll < 0.7 or not manifests:
                        digest, size = rng.choice(pushed)
                        ops.pull(conn, repo, digest, size)
                    else:
                        expect(conn.request("GET", f"/v2/{repo}/manifests/{rng.choice(manifests)}",
                                            {"Accept": ops.OCI_MANIFEST}), 200)
                    counts[index] += 1

        with sampler:
            started = time.monotonic()
            try:
                in_threads(self.connections, traffic)
            except BaseException as exc:
                errors.append(exc)
            elapsed = time.monotonic() - started
            end_rss = sampler.sample() / 1024
        if errors:
            raise errors[0]
        return {"soak_rss": end_rss, "soak_growth": end_rss - (warm_rss[0] if warm_rss else end_rss),
                "soak_rate": sum(counts) / elapsed}


def _manifest(config: tuple[str, int], layers: list[tuple[str, int]]) -> bytes:
    def descriptor(media_type: str, blob: tuple[str, int]) -> dict[str, object]:
        return {"mediaType": media_type, "digest": blob[0], "size": blob[1]}

    return json.dumps({"schemaVersion": 2, "mediaType": ops.OCI_MANIFEST,
                       "config": descriptor(ops.OCI_CONFIG, config),
                       "layers": [descriptor(ops.OCI_LAYER, layer) for layer in layers]}).encode()


def scale_scenarios(sizes: Any) -> list[Scenario]:
    return [GarbageCollection(sizes), S3GarbageCollection(sizes), ScaleListing(sizes), Startup(sizes),
            SustainedLoad(sizes)]
