"""The scenarios: what each one sets up on a server, what it times, and the target for our figure."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import ops, wrk
from .httpclient import Connection
from .ops import BlobFile
from .procs import RssSampler, Side, cpu_seconds
from .storegen import StoreSpec

MB = 1_000_000
MiB = 1 << 20
WARMUP_PUSHES = 200


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool = True
    target_ratio: float | None = None  # ours / reference must reach this
    max_ours: float | None = None  # or: our figure must stay under this
    max_ratio: float | None = None  # and/or: ours / reference must not exceed this (counts, lower is better)
    aggregate: str = "median"  # how rounds combine: "median", or "max" for peaks


@dataclass(frozen=True)
class Sizes:
    big: int = 512 * MiB
    chunk: int = 16 * MiB
    pull_clients: int = 8
    small_count: int = 2000
    small_size: int = 1024
    small_threads: int = 8
    tags: int = 1000
    repos: int = 1000
    rss_size: int = 2048 * MiB
    rss_limit_mib: float = 150
    wrk_seconds: float = 10
    wrk_connections: int = 64
    list_seconds: float = 5
    list_connections: int = 8
    #: the blob of the S3 rows: moto (Python) is the bottleneck there, and holds what it is sent
    s3_big: int = 128 * MiB
    #: repositories behind the web UI's pages, and how often each page is fetched per round
    ui_repos: int = 10_000
    ui_requests: int = 20
    #: the generated stores of the scale scenarios (bench/scale.py)
    scale_store: StoreSpec = StoreSpec(manifests=100_000, repositories=100_000, many_tags=10_000)
    s3_scale_store: StoreSpec = StoreSpec(manifests=10_000, repositories=10_000, many_tags=100)
    soak_seconds: float = 600
    soak_connections: int = 64

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(big=64 * MiB, small_count=200, tags=100, repos=100, rss_size=256 * MiB,
                   wrk_seconds=2, list_seconds=2, s3_big=32 * MiB, ui_repos=500, ui_requests=5,
                   scale_store=StoreSpec(manifests=2_000, repositories=1_000, many_tags=300),
                   s3_scale_store=StoreSpec(manifests=500, repositories=250, many_tags=10), soak_seconds=20)


class Context:
    """What scenarios share: sizes, and blob files generated once in a temp dir."""

    def __init__(self, workdir: Path, sizes: Sizes) -> None:
        self.workdir = workdir
        self.sizes = sizes
        self._blobs: dict[int, BlobFile] = {}

    @property
    def generated(self) -> list[int]:
        return sorted(self._blobs)

    def blob(self, size: int) -> BlobFile:
        """A file of `size` incompressible bytes (a 64 MiB random pool, each copy numbered),
        written and hashed on first use only."""
        if size not in self._blobs:
            path = self.workdir / f"blob-{size}.bin"
            sha = hashlib.sha256()
            pool = os.urandom(64 * MiB)
            with open(path, "wb") as f:
                written = 0
                while written < size:
                    block = (written // len(pool)).to_bytes(8, "big") + pool[8:min(len(pool), size - written)]
                    block = block[:size - written]
                    f.write(block)
                    sha.update(block)
                    written += len(block)
            self._blobs[size] = BlobFile(str(path), size, "sha256:" + sha.hexdigest())
        return self._blobs[size]


def connect(side: Side) -> Connection:
    return Connection("127.0.0.1", side.port)


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def timed_on(side: Side, action: Callable[[], Any]) -> tuple[float, float]:
    """Seconds that action takes, and the CPU seconds side's server (its process tree) spent meanwhile."""
    before = cpu_seconds(side.pid)
    seconds = timed(action)
    return seconds, cpu_seconds(side.pid) - before


def transfer_metrics(key: str, label: str, target_ratio: float | None = None,
                     max_cpu: float | None = None) -> tuple[Metric, Metric]:
    """A transfer's MB/s row and, beside it, its server's CPU milliseconds per MB moved: steadier than
    throughput on a shared machine, since a busy neighbour slows a server more than it makes it work."""
    return (Metric(key, label, "MB/s", target_ratio=target_ratio),
            Metric(f"{key}-cpu", f"{label}, server CPU", "ms/MB", higher_is_better=False, max_ours=max_cpu))


def transfer_figures(key: str, size: int, seconds: float, cpu: float) -> dict[str, float]:
    """The figures of transfer_metrics(key) for size bytes moved in seconds, with cpu seconds of the server's."""
    return {key: size / MB / seconds, f"{key}-cpu": cpu * 1000 / (size / MB)}


def in_threads(count: int, work: Callable[[int], None]) -> float:
    """Run work(0..count-1) in threads released together; seconds until the last one ends."""
    barrier = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


class Scenario:
    name = ""
    description = ""
    metrics: tuple[Metric, ...] = ()
    #: where both servers store: "filesystem" (a fresh directory) or "s3" (a fresh bucket on moto)
    backend = "filesystem"
    #: start each server anew for every round (pushes land on an empty store; VmHWM is this round's)
    fresh_per_round = False
    #: which servers it measures ("ours" alone for what Distribution does not have)
    sides: tuple[str, ...] = ("reference", "ours")
    #: settings for our server beyond the bench's own (the reference always runs as shipped)
    our_config: dict[str, Any] | None = None
    #: False: the scenario runs its own processes (a collector, say), the harness starts no server
    needs_servers = True
    #: run only when asked for by name or with --scale (long, or needing a large generated store)
    opt_in = False
    #: at most this many rounds, whatever --rounds says (a scenario whose one round takes many minutes)
    max_rounds: int | None = None
    #: both servers reach S3 through the endpoint's call-counting proxy
    counts_s3_calls = False

    def prepare(self, ctx: Context) -> None:
        """Untimed work done once before any server starts (generating files)."""

    def setup(self, side: Side, ctx: Context) -> Any:
        """Untimed work on a freshly started server; returns what measure() needs."""
        return None

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        raise NotImplementedError

    def finish(self) -> None:
        """Stop what the scenario started itself, after its last round (also on error)."""

    def details(self) -> str | None:
        """More than the table's one figure per row, printed below it (None: nothing)."""
        return None


class MonolithicPush(Scenario):
    name = "push"
    description = "monolithic push of the big blob: POST, then one PUT streaming the file"
    fresh_per_round = True
    #: ours over the reference (issue 14: 3x; the hashing limit is the moonshot)
    target: float | None = 3.0
    #: server CPU milliseconds per pushed MB
    max_cpu: float | None = 2.0

    def __init__(self, sizes: Sizes) -> None:
        self.size = sizes.big
        self.metrics = transfer_metrics(self.name, f"monolithic push {self.size // MiB} MiB", self.target,
                                        self.max_cpu)

    def prepare(self, ctx: Context) -> None:
        ctx.blob(self.size)

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        blob = ctx.blob(self.size)
        os.sync()
        with connect(side) as conn:
            seconds, cpu = timed_on(side, lambda: ops.push_file_monolithic(conn, "bench/big", blob))
        return transfer_figures(self.name, blob.size, seconds, cpu)


class ChunkedPush(Scenario):
    name = "chunked"
    description = "chunked push of the big blob: POST, PATCHes with Content-Range, PUT"
    fresh_per_round = True
    #: ours over the reference (issue 14: 3x; the hashing limit is the moonshot)
    target: float | None = 3.0
    max_cpu: float | None = 2.0

    def __init__(self, sizes: Sizes) -> None:
        self.size = sizes.big
        label = f"chunked push {self.size // MiB} MiB ({sizes.chunk // MiB} MiB PATCHes)"
        self.metrics = transfer_metrics(self.name, label, self.target, self.max_cpu)

    def prepare(self, ctx: Context) -> None:
        ctx.blob(self.size)

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        blob = ctx.blob(self.size)
        os.sync()
        with connect(side) as conn:
            seconds, cpu = timed_on(side, lambda: ops.push_file_chunked(conn, "bench/big", blob, ctx.sizes.chunk))
        return transfer_figures(self.name, blob.size, seconds, cpu)


def push_and_verify(side: Side, blob: BlobFile) -> None:
    with connect(side) as conn:
        ops.push_file_monolithic(conn, "bench/big", blob)
        ops.pull_verified(conn, "bench/big", blob)


class Pull(Scenario):
    name = "pull"
    description = "GET of the big blob by 1 client, then by N concurrent clients; bytes discarded"
    REPEAT_ONE = 4
    REPEAT_MANY = 2

    def __init__(self, sizes: Sizes) -> None:
        mib = sizes.big // MiB
        self.metrics = (*transfer_metrics("pull1", f"pull {mib} MiB, 1 client", 1.0),
                        *transfer_metrics("pullN", f"pull {mib} MiB, {sizes.pull_clients} clients (aggregate)", 1.0))

    def prepare(self, ctx: Context) -> None:
        ctx.blob(ctx.sizes.big)

    def setup(self, side: Side, ctx: Context) -> Any:
        blob = ctx.blob(ctx.sizes.big)
        push_and_verify(side, blob)
        return blob

    def measure(self, side: Side, blob: BlobFile, round_index: int, ctx: Context) -> dict[str, float]:
        clients = ctx.sizes.pull_clients
        conns = [connect(side) for _ in range(clients)]

        def pulls(index: int, times: int) -> None:
            for _ in range(times):
                ops.pull(conns[index], "bench/big", blob.digest, blob.size)

        try:  # several pulls per figure: one pull of a cached blob is too short to time steadily
            one = timed_on(side, lambda: in_threads(1, lambda i: pulls(i, self.REPEAT_ONE)))
            many = timed_on(side, lambda: in_threads(clients, lambda i: pulls(i, self.REPEAT_MANY)))
        finally:
            for conn in conns:
                conn.close()
        return {**transfer_figures("pull1", self.REPEAT_ONE * blob.size, *one),
                **transfer_figures("pullN", self.REPEAT_MANY * clients * blob.size, *many)}


class S3MonolithicPush(MonolithicPush):
    name = "s3-push"
    description = "S3 (moto): monolithic push of the S3 blob, POST then one PUT"
    backend = "s3"
    target = None
    max_cpu = None

    def __init__(self, sizes: Sizes) -> None:
        self.size = sizes.s3_big
        self.metrics = transfer_metrics(self.name, f"S3: monolithic push {self.size // MiB} MiB")


class S3ChunkedPush(ChunkedPush):
    name = "s3-chunked"
    description = "S3 (moto): chunked push of the S3 blob, PATCHes with Content-Range, PUT"
    backend = "s3"
    target = None
    max_cpu = None

    def __init__(self, sizes: Sizes) -> None:
        self.size = sizes.s3_big
        label = f"S3: chunked push {self.size // MiB} MiB ({sizes.chunk // MiB} MiB PATCHes)"
        self.metrics = transfer_metrics(self.name, label)


class S3Pull(Scenario):
    """Blob GETs from an S3 store. Streaming: both servers run with storage.redirect.disable
    and relay the bytes from moto. Redirected: a second process of each on the same bucket,
    with redirects on, answers 307 to a presigned moto URL that the client then GETs."""

    name = "s3-pull"
    description = "S3 (moto): GET of the S3 blob by 1 client, streamed by the server, then by redirect to moto"
    backend = "s3"
    REPEAT = 8  # 1 GiB per figure: moto serves reads fast, one 128 MiB GET is too short to time

    def __init__(self, sizes: Sizes) -> None:
        mib = sizes.s3_big // MiB
        self.metrics = (
            *transfer_metrics("s3-pull", f"S3: pull {mib} MiB, 1 client, streamed (redirect off)"),
            Metric("s3-pull-307", f"S3: pull {mib} MiB, 1 client, 307 to moto (info)", "MB/s"),
        )

    def prepare(self, ctx: Context) -> None:
        ctx.blob(ctx.sizes.s3_big)

    def setup(self, side: Side, ctx: Context) -> Any:
        blob = ctx.blob(ctx.sizes.s3_big)
        push_and_verify(side, blob)
        redirecting = side.start_replica(redirect=True)
        with Connection("127.0.0.1", redirecting.port) as conn, ops.Redirects() as storage:
            ops.pull_redirected_verified(conn, storage, "bench/big", blob)
        return blob, redirecting.port

    def measure(self, side: Side, state: tuple[BlobFile, int], round_index: int, ctx: Context) -> dict[str, float]:
        blob, redirect_port = state
        with connect(side) as conn:
            streamed = timed_on(side, lambda: [ops.pull(conn, "bench/big", blob.digest, blob.size)
                                               for _ in range(self.REPEAT)])
        with Connection("127.0.0.1", redirect_port) as conn, ops.Redirects() as storage:
            redirected = timed(lambda: [ops.pull_redirected(conn, storage, "bench/big", blob.digest, blob.size)
                                        for _ in range(self.REPEAT)])
        total = self.REPEAT * blob.size
        return {**transfer_figures("s3-pull", total, *streamed), "s3-pull-307": total / MB / redirected}


class S3Calls(Scenario):
    """S3 calls per registry operation, counted by a proxy in front of moto (tests/s3_proxy.py), on a
    fresh bucket each round: counts, not times, so one round says it all (more rounds check it is steady)."""

    name = "s3-calls"
    description = "S3 (moto): S3 calls per operation, counted by a proxy in front of moto"
    backend = "s3"
    fresh_per_round = True
    counts_s3_calls = True
    #: the issue's budget for a monolithic push (POST and PUT together)
    MONOLITHIC_BUDGET = 8

    def __init__(self, sizes: Sizes) -> None:
        mib, chunk = sizes.s3_big // MiB, sizes.chunk // MiB
        self.operations = {
            "monolithic": f"monolithic push {mib} MiB (POST, PUT)",
            "chunked": f"chunked push {mib} MiB ({chunk} MiB PATCHes)",
            "manifest": "manifest PUT (by tag, 2 layers)",
            "tag": "tag PUT (known manifest, new tag)",
            "pull": "pull by tag (manifest + 3 blobs)",
            "pull-cold": "the pull again from a new replica (caches empty)",
            "catalog": "catalog page (_catalog?n=100)",
        }
        self.metrics = tuple(
            Metric(f"s3calls-{op}", f"S3 calls: {label}", "calls", higher_is_better=False, max_ratio=1.0,
                   max_ours=self.MONOLITHIC_BUDGET + 0.5 if op == "monolithic" else None)
            for op, label in self.operations.items())
        self.by_operation: dict[str, dict[str, Counter[str]]] = {}

    def prepare(self, ctx: Context) -> None:
        ctx.blob(ctx.sizes.s3_big)
        ctx.blob(ctx.sizes.s3_big - 1)  # another blob for the chunked push (else it is stored already)

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        proxy = side.s3.proxy  # type: ignore[union-attr]
        big, other = ctx.blob(ctx.sizes.s3_big), ctx.blob(ctx.sizes.s3_big - 1)
        config = b'{"architecture":"amd64","os":"linux"}'
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": ops.OCI_MANIFEST,
            "config": {"mediaType": ops.OCI_CONFIG, "digest": ops.digest_of(config), "size": len(config)},
            "layers": [{"mediaType": ops.OCI_LAYER, "digest": blob.digest, "size": blob.size}
                       for blob in (big, other)],
        }).encode()
        counted: dict[str, Counter[str]] = {}

        def count(op: str, action: Callable[[], None]) -> None:
            """The calls action costs; not those of our replicas' start-up sweep of incoming/, their
            own business, which may still be under way as the action begins."""
            proxy.reset_counts()
            action()
            counted[op] = Counter(c.operation for c in proxy.calls if "/incoming/" not in c.key)

        def pull(conn: Connection) -> None:
            got = ops.expect(conn.request("GET", "/v2/bench/app/manifests/v1", {"Accept": ops.OCI_MANIFEST}), 200)
            if got.body != manifest:
                raise RuntimeError(f"{side.name} served a different manifest")
            ops.expect(conn.request("GET", f"/v2/bench/app/blobs/{ops.digest_of(config)}"), 200)
            for blob in (big, other):
                ops.pull(conn, "bench/app", blob.digest, blob.size)

        with connect(side) as conn:

            ops.push_small(conn, "bench/app", config, ops.digest_of(config), single_post=False)
            count("monolithic", lambda: ops.push_file_monolithic(conn, "bench/app", big))
            count("chunked", lambda: ops.push_file_chunked(conn, "bench/app", other, ctx.sizes.chunk))
            count("manifest", lambda: ops.put_manifest(conn, "bench/app", "v1", manifest))
            count("tag", lambda: ops.put_manifest(conn, "bench/app", "v2", manifest))
            count("pull", lambda: pull(conn))
            count("catalog", lambda: ops.get_json(conn, "/v2/_catalog?n=100"))
        replica = side.start_replica(redirect=False)
        with Connection("127.0.0.1", replica.port) as conn:
            count("pull-cold", lambda: pull(conn))
        self.by_operation[side.name] = counted
        for op, calls in counted.items():
            log_line = ", ".join(f"{name} {n}" for name, n in sorted(calls.items()))
            print(f"    {side.name} {op}: {sum(calls.values())} ({log_line})", file=sys.stderr, flush=True)
        return {f"s3calls-{op}": float(sum(calls.values())) for op, calls in counted.items()}

    def details(self) -> str | None:
        """The last round's calls by S3 operation, per registry operation, for both servers."""
        if not self.by_operation:
            return None
        lines = ["S3 calls by S3 operation (last round):"]
        for op, label in self.operations.items():
            lines.append(f"  {label}")
            for side in ("reference", "ours"):
                calls = self.by_operation.get(side, {}).get(op)
                if calls is not None:
                    listed = ", ".join(f"{name} {n}" for name, n in sorted(calls.items()))
                    lines.append(f"    {side:>9}: {sum(calls.values()):>3}  {listed}")
        return "\n".join(lines)


def push_image(side: Side, repo: str, tag: str) -> tuple[bytes, str]:
    """A small image (config, one 1 KiB layer, manifest); returns the manifest and the layer's digest."""
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = os.urandom(1024)
    manifest = ops.image_manifest(config, [layer])
    with connect(side) as conn:
        for data in (config, layer):
            ops.push_small(conn, repo, data, ops.digest_of(data), single_post=False)
        ops.put_manifest(conn, repo, tag, manifest)
    return manifest, ops.digest_of(layer)


class ManifestGet(Scenario):
    name = "manifest"
    description = "GET of a manifest by tag, OCI Accept header, wrk at high concurrency"

    def __init__(self, sizes: Sizes) -> None:
        label = f"manifest GET, wrk -c{sizes.wrk_connections}"
        self.metrics = (Metric("manifest", label, "req/s", target_ratio=3.0),)

    def setup(self, side: Side, ctx: Context) -> Any:
        manifest, _ = push_image(side, "bench/app", "latest")
        with connect(side) as conn:
            got = conn.request("GET", "/v2/bench/app/manifests/latest", {"Accept": ops.OCI_MANIFEST})
        if got.body != manifest:
            raise RuntimeError(f"{side.name} served a different manifest")
        return None

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        rate = wrk.requests_per_second(f"{side.url}/v2/bench/app/manifests/latest", "GET",
                                       {"Accept": ops.OCI_MANIFEST}, ctx.sizes.wrk_connections,
                                       seconds=ctx.sizes.wrk_seconds)
        return {"manifest": rate}


class BlobHead(Scenario):
    name = "head"
    description = "HEAD of the empty blob, wrk at high concurrency (wrk 4.1 hangs on a HEAD with a body length)"
    #: wrk 4.1 waits for a body after a HEAD reply whose Content-Length is not 0 and so completes
    #: no request; the empty blob (Content-Length: 0) costs the servers the same lookups
    EMPTY = b""

    def __init__(self, sizes: Sizes) -> None:
        self.metrics = (Metric("head", f"blob HEAD (empty blob), wrk -c{sizes.wrk_connections}", "req/s"),)

    def setup(self, side: Side, ctx: Context) -> Any:
        digest = ops.digest_of(self.EMPTY)
        with connect(side) as conn:
            ops.push_small(conn, "bench/app", self.EMPTY, digest, single_post=False)
            r = ops.expect(conn.request("HEAD", f"/v2/bench/app/blobs/{digest}"), 200)
        if r.header("docker-content-digest") != digest:
            raise RuntimeError(f"{side.name} answered HEAD without the blob's digest")
        return digest

    def measure(self, side: Side, digest: str, round_index: int, ctx: Context) -> dict[str, float]:
        rate = wrk.requests_per_second(f"{side.url}/v2/bench/app/blobs/{digest}", "HEAD", {},
                                       ctx.sizes.wrk_connections, seconds=ctx.sizes.wrk_seconds)
        return {"head": rate}


class SmallPushes(Scenario):
    name = "small"
    description = "many small blob pushes from concurrent clients"

    def __init__(self, sizes: Sizes) -> None:
        what = f"{sizes.small_count} x {sizes.small_size} B blob pushes, {sizes.small_threads} clients"
        self.metrics = (
            Metric("small", f"{what}, best protocol", "pushes/s", target_ratio=2.0),
            Metric("small2", f"{what}, POST+PUT on both", "pushes/s"),
        )

    def setup(self, side: Side, ctx: Context) -> Any:
        with connect(side) as conn:
            single_post = ops.supports_single_post(conn, "bench/small")
        # warm up (thread pools, allocator, Go's GC pacing) so round 1 is not the cold one
        warmup = self.blobs(ctx, -1, "warmup")[:WARMUP_PUSHES]
        self.push_all(side, warmup, single_post, ctx.sizes.small_threads)
        self.push_all(side, warmup[::-1], False, ctx.sizes.small_threads)  # already stored: still a full push
        return single_post

    def blobs(self, ctx: Context, round_index: int, kind: str) -> list[tuple[bytes, str]]:
        """The same fresh set for both servers in a round; never pushed before to either."""
        rng = hashlib.sha256(f"{round_index}-{kind}".encode()).digest()
        out = []
        for i in range(ctx.sizes.small_count):
            data = (rng + i.to_bytes(8, "big")) * (ctx.sizes.small_size // 40 + 1)
            data = data[:ctx.sizes.small_size]
            out.append((data, ops.digest_of(data)))
        return out

    def push_all(self, side: Side, blobs: list[tuple[bytes, str]], single_post: bool, threads: int) -> float:
        conns = [connect(side) for _ in range(threads)]

        def work(index: int) -> None:
            for data, digest in blobs[index::threads]:
                ops.push_small(conns[index], "bench/small", data, digest, single_post)

        try:
            seconds = in_threads(threads, work)
        finally:
            for conn in conns:
                conn.close()
        return len(blobs) / seconds

    def measure(self, side: Side, single_post: bool, round_index: int, ctx: Context) -> dict[str, float]:
        threads = ctx.sizes.small_threads
        best = self.push_all(side, self.blobs(ctx, round_index, "best"), single_post, threads)
        two_step = self.push_all(side, self.blobs(ctx, round_index, "two-step"), False, threads)
        return {"small": best, "small2": two_step}


class Listing(Scenario):
    name = "listing"
    description = "tags/list of a repository with many tags, and the catalog of many repositories"

    def __init__(self, sizes: Sizes) -> None:
        c = sizes.list_connections
        self.metrics = (
            Metric("tags", f"tags/list, {sizes.tags} tags, no n, wrk -c{c}", "req/s"),
            Metric("tags_n", f"tags/list?n={sizes.tags}, wrk -c{c}", "req/s"),
            Metric("catalog", f"_catalog?n={sizes.repos}, {sizes.repos} repos, wrk -c{c}", "req/s"),
        )

    def setup(self, side: Side, ctx: Context) -> Any:
        s = ctx.sizes
        repos = [f"bench/r{i:04d}" for i in range(s.repos)]
        manifest, layer = push_image(side, repos[0], "t0000")
        config = b'{"architecture":"amd64","os":"linux"}'
        threads = 8

        def tag(index: int) -> None:
            with connect(side) as conn:
                for i in range(index, s.tags, threads):
                    ops.put_manifest(conn, repos[0], f"t{i:04d}", manifest)

        def fill(index: int) -> None:
            with connect(side) as conn:
                for repo in repos[1 + index::threads]:
                    ops.mount(conn, repo, ops.digest_of(config), repos[0])
                    ops.mount(conn, repo, layer, repos[0])
                    ops.put_manifest(conn, repo, "latest", manifest)

        in_threads(threads, tag)
        in_threads(threads, fill)
        with connect(side) as conn:
            tags = ops.get_json(conn, f"/v2/{repos[0]}/tags/list")["tags"]  # type: ignore[index]
            tags_n = ops.get_json(conn, f"/v2/{repos[0]}/tags/list?n={s.tags}")["tags"]  # type: ignore[index]
            catalog = ops.get_json(conn, f"/v2/_catalog?n={s.repos}")["repositories"]  # type: ignore[index]
        if len(tags) != s.tags or len(tags_n) != s.tags or sorted(catalog) != repos:
            raise RuntimeError(f"{side.name} lists {len(tags)}/{len(tags_n)} tags and {len(catalog)} repositories")
        return repos[0]

    def measure(self, side: Side, repo: str, round_index: int, ctx: Context) -> dict[str, float]:
        s = ctx.sizes

        def rate(path: str) -> float:
            return wrk.requests_per_second(side.url + path, "GET", {}, s.list_connections, seconds=s.list_seconds)

        return {
            "tags": rate(f"/v2/{repo}/tags/list"),
            "tags_n": rate(f"/v2/{repo}/tags/list?n={s.tags}"),
            "catalog": rate(f"/v2/_catalog?n={s.repos}"),
        }


class PushMemory(Scenario):
    name = "rss"
    description = "peak resident memory of the server process tree while it takes a huge blob"
    fresh_per_round = True

    def __init__(self, sizes: Sizes) -> None:
        gib = sizes.rss_size / (1 << 30)
        self.metrics = (
            Metric("rss", f"peak RSS, {gib:g} GiB monolithic push", "MiB", higher_is_better=False,
                   max_ours=sizes.rss_limit_mib, aggregate="max"),
            Metric("rss_chunked", f"peak RSS, {gib:g} GiB chunked push", "MiB", higher_is_better=False,
                   max_ours=sizes.rss_limit_mib, aggregate="max"),
        )

    def prepare(self, ctx: Context) -> None:
        ctx.blob(ctx.sizes.rss_size)

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        blob = ctx.blob(ctx.sizes.rss_size)
        os.sync()
        with RssSampler(side.pid) as mono, connect(side) as conn:
            ops.push_file_monolithic(conn, "bench/huge", blob)
        side.start()  # a new process, so that its high-water mark is the chunked push's alone
        os.sync()
        with RssSampler(side.pid) as chunked, connect(side) as conn:
            ops.push_file_chunked(conn, "bench/huge", blob, ctx.sizes.chunk)
        return {"rss": mono.peak_mib, "rss_chunked": chunked.peak_mib}


class UIPages(Scenario):
    name = "ui"
    description = "web UI pages: server-side time (Server-Timing) at many repositories and 1,000 tags; ours only"
    sides = ("ours",)
    TAGGED = "bench/tags"
    LIMIT_MS = 200.0

    def __init__(self, sizes: Sizes) -> None:
        repos, tags = sizes.ui_repos, sizes.tags
        self.pages = {
            "ui-catalog": ("/", f"UI catalog, first page, {repos} repos"),
            "ui-catalog-mid": (f"/?last=bench/ui{repos // 2:05d}", "UI catalog, a page in the middle"),
            "ui-search": ("/?q=no-such-name", "UI catalog search, no match (scan budget spent)"),
            "ui-tags": (f"/ui/r/{self.TAGGED}", f"UI repository, {tags} tags, by name"),
            "ui-tags-time": (f"/ui/r/{self.TAGGED}?sort=time", f"UI repository, {tags} tags, by time"),
            "ui-tags-filter": (f"/ui/r/{self.TAGGED}?q=t00", f"UI repository, {tags} tags, filtered"),
            "ui-image": (f"/ui/r/{self.TAGGED}/-/manifest/t0001", "UI image manifest page"),
            "ui-index": (f"/ui/r/{self.TAGGED}/-/manifest/multi", "UI index manifest page"),
            "ui-blob": ("", "UI layer page"),
            "ui-storage": ("/ui/storage", f"UI storage page (snapshot of {repos} repos)"),
        }
        self.metrics = tuple(Metric(key, f"{label}, worst of {sizes.ui_requests}", "ms server",
                                    higher_is_better=False, max_ours=self.LIMIT_MS, aggregate="max")
                             for key, (_, label) in self.pages.items()) + (
            Metric("ui-snapshot", f"UI storage snapshot walk (background), {repos} repos", "s",
                   higher_is_better=False, aggregate="max"),)

    def setup(self, side: Side, ctx: Context) -> Any:
        s = ctx.sizes
        manifest, layer = push_image(side, self.TAGGED, "t0000")
        config = b'{"architecture":"amd64","os":"linux"}'
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [{"mediaType": ops.OCI_MANIFEST, "digest": ops.digest_of(manifest),
                                           "size": len(manifest), "platform": {"os": "linux",
                                                                               "architecture": "amd64"}}]})
        repos = [f"bench/ui{i:05d}" for i in range(s.ui_repos)]
        threads = 8

        def tag(index_: int) -> None:
            with connect(side) as conn:
                for i in range(1 + index_, s.tags, threads):
                    ops.put_manifest(conn, self.TAGGED, f"t{i:04d}", manifest)

        def fill(index_: int) -> None:
            with connect(side) as conn:
                for repo in repos[index_::threads]:
                    ops.mount(conn, repo, ops.digest_of(config), self.TAGGED)
                    ops.mount(conn, repo, layer, self.TAGGED)
                    ops.put_manifest(conn, repo, "latest", manifest)

        in_threads(threads, tag)
        in_threads(threads, fill)
        with connect(side) as conn:
            ops.expect(conn.request("PUT", f"/v2/{self.TAGGED}/manifests/multi",
                                    {"Content-Type": "application/vnd.oci.image.index.v1+json"},
                                    index.encode()), 201)
            deadline = time.monotonic() + 600
            while b"being computed" in ops.expect(conn.request("GET", "/ui/storage"), 200).body:
                if time.monotonic() > deadline:
                    raise RuntimeError("the UI's storage snapshot took more than 10 minutes")
                time.sleep(0.5)
        self.pages["ui-blob"] = (f"/ui/r/{self.TAGGED}/-/blob/{layer}", self.pages["ui-blob"][1])
        return None

    def measure(self, side: Side, state: Any, round_index: int, ctx: Context) -> dict[str, float]:
        figures: dict[str, float] = {}
        with connect(side) as conn:
            for key, (path, _) in self.pages.items():
                worst = 0.0
                for _ in range(ctx.sizes.ui_requests):
                    r = ops.expect(conn.request("GET", path), 200)
                    worst = max(worst, float(r.header("server-timing").split("dur=")[1]))
                figures[key] = worst
            storage = conn.request("GET", "/ui/storage").body.decode()
        figures["ui-snapshot"] = float(storage.split("computed in ")[1].split(" s")[0])
        return figures


#: what durability costs: ours with storage.filesystem.fsync off (Distribution syncs as always)
NO_FSYNC = {"storage": {"filesystem": {"fsync": False}}}


class MonolithicPushNoFsync(MonolithicPush):
    name = "push-nofsync"
    description = "the monolithic push, ours with storage.filesystem.fsync: false (what fsync costs)"
    target = None
    max_cpu = None
    our_config = NO_FSYNC

    def __init__(self, sizes: Sizes) -> None:
        super().__init__(sizes)
        self.metrics = transfer_metrics(self.name, f"monolithic push {self.size // MiB} MiB, ours with fsync off")


class SmallPushesNoFsync(SmallPushes):
    name = "small-nofsync"
    description = "the small blob pushes, ours with storage.filesystem.fsync: false (what fsync costs)"
    our_config = NO_FSYNC

    def __init__(self, sizes: Sizes) -> None:
        super().__init__(sizes)
        self.metrics = tuple(Metric(f"{m.key}-nofsync", f"{m.label}, ours with fsync off", m.unit)
                             for m in self.metrics)

    def measure(self, side: Side, single_post: bool, round_index: int, ctx: Context) -> dict[str, float]:
        return {f"{key}-nofsync": value for key, value in super().measure(side, single_post, round_index, ctx).items()}


def all_scenarios(sizes: Sizes) -> list[Scenario]:
    return [MonolithicPush(sizes), ChunkedPush(sizes), Pull(sizes),
            S3MonolithicPush(sizes), S3ChunkedPush(sizes), S3Pull(sizes), S3Calls(sizes),
            ManifestGet(sizes), BlobHead(sizes), SmallPushes(sizes), Listing(sizes), PushMemory(sizes),
            UIPages(sizes), MonolithicPushNoFsync(sizes), SmallPushesNoFsync(sizes)]
