"""S3 backend (AWS S3, MinIO, Ceph RGW, ...), on boto3 in a bounded thread pool.

S3 objects cannot be appended to, and an unfinished multipart upload cannot be
read back, yet an upload must stay readable (to hash it again after a restart or
on another replica). So an append writer stores each piece it receives as its
own object, a *segment*, under a hidden sibling prefix:

    <dir>/<name>                      optional base object (written whole)
    <dir>/.seg.<name>/<start:020d>    segments, in order of their start offset

The logical file is the base followed by the segments. Moving it to its final
key composes the pieces with one multipart upload, copying server-side every
range of at least the part size and re-assembling only the small pieces, so any
client chunking works within S3's rules (parts of 5 MiB or more, at most 10,000).
The destination appears whole when the multipart upload completes, or not at all.

A whole object whose size is known up front (a blob pushed in one request) is
not buffered in parts: it streams into a multipart upload at its final key, one
part per 5 GiB, sent to S3 as the bytes arrive, and appears only when commit()
completes it (cancel() aborts it). That costs three calls whatever the size,
where parts of `chunksize` cost one each.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator, Callable, TypeVar

import boto3
import botocore.auth
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from .base import FileInfo, PathNotFound, StorageBackend, StorageError, StorageFull, Writer, check_path, in_range

MIN_PART = 5 << 20
MAX_PART = 5 << 30
MAX_PARTS = 10_000
DEFAULT_CHUNK_SIZE = 10 << 20
READ_CHUNK = 1 << 20
SEGMENT_PREFIX = ".seg."
#: server-side copies in flight in move_files
MOVE_COPIES = 16
REDIRECT_SECONDS = 20 * 60
#: pieces of a streamed part waiting for the thread that sends them: the back-pressure on the request body
STREAM_QUEUE = 4
T = TypeVar("T")


@dataclass(frozen=True)
class S3Settings:
    """Distribution's `storage.s3` keys (checked by the config schema), plus ours."""

    bucket: str
    region: str | None = None
    regionendpoint: str | None = None
    forcepathstyle: bool = False
    accesskey: str | None = None
    secretkey: str | None = None
    sessiontoken: str | None = None
    rootdirectory: str = ""
    chunksize: int = DEFAULT_CHUNK_SIZE
    secure: bool = True
    skipverify: bool = False
    encrypt: bool = False
    keyid: str | None = None
    storageclass: str | None = None
    redirect: bool = True
    max_threads: int = 32
    max_attempts: int = 8
    #: seconds; a stalled connection is retried rather than waited on forever
    timeout: float = 60.0


@dataclass(frozen=True)
class _Piece:
    key: str
    size: int


class S3Backend(StorageBackend):
    name = "s3"
    reclaims_unfinished_writes = True

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._root = settings.rootdirectory
        self._pool = ThreadPoolExecutor(settings.max_threads, thread_name_prefix="s3")
        #: threads that send streamed parts, each for as long as its part's bytes take to arrive: kept apart
        #: so that they never hold up the short calls (nor the hashing a stream waits for)
        self._streams = ThreadPoolExecutor(settings.max_threads, thread_name_prefix="s3-stream")
        endpoint = settings.regionendpoint
        if endpoint and "://" not in endpoint:
            endpoint = f"{'https' if settings.secure else 'http'}://{endpoint}"
        self._client = self._new_client(endpoint)
        #: for streamed parts only: without the default CRC32, which botocore computes by reading the body
        #: before sending it, and signed without hashing the payload (see _StreamedPartAuth)
        self._stream_client = self._new_client(endpoint, request_checksum_calculation="when_required")
        self._stream_client.meta.events.register("choose-signer.s3.UploadPart", _sign_streamed_parts_unsigned)
        #: this process's multipart uploads begun and not yet completed or aborted: upload id -> key
        self._multipart: dict[str, str] = {}

    def _new_client(self, endpoint: str | None, **config: Any) -> Any:
        settings = self.settings
        return boto3.session.Session().client(
            "s3",
            region_name=settings.region,
            endpoint_url=endpoint,
            aws_access_key_id=settings.accesskey,
            aws_secret_access_key=settings.secretkey,
            aws_session_token=settings.sessiontoken,
            use_ssl=settings.secure,
            verify=not settings.skipverify,
            config=BotoConfig(
                # botocore's "max_attempts" counts retries only; ours counts tries, as the README says
                retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
                s3={"addressing_style": "path" if settings.forcepathstyle else "auto"},
                max_pool_connections=settings.max_threads,
                connect_timeout=settings.timeout,
                read_timeout=settings.timeout,
                signature_version="s3v4",
                **config,
            ),
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        check_path(path)
        return f"{self._root}/{path}" if self._root else path

    def _dir_prefix(self, path: str) -> str:
        if path == "":
            return f"{self._root}/" if self._root else ""
        return self._key(path) + "/"

    @staticmethod
    def _segments_prefix(key: str) -> str:
        head, _, name = key.rpartition("/")
        return f"{head}/{SEGMENT_PREFIX}{name}/" if head else f"{SEGMENT_PREFIX}{name}/"

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._call_in(self._pool, partial(fn, *args, **kwargs))

    async def _call_in(self, pool: ThreadPoolExecutor, call: "partial[T]") -> T:
        loop = asyncio.get_running_loop()
        fn, kwargs = call.func, call.keywords
        try:
            return await loop.run_in_executor(pool, call)
        except ClientError as exc:
            if _is_missing(exc):  # also an object another process deleted between two calls of ours
                raise PathNotFound(str(kwargs.get("Key", ""))) from None
            if _is_full(exc):
                raise StorageFull(str(kwargs.get("Key", self.bucket)), f"S3 {fn.__name__}: {exc}") from None
            raise StorageError(f"S3 {fn.__name__} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {fn.__name__} failed: {exc}") from exc

    def _put_args(self) -> dict[str, Any]:
        # what a client downloading a blob through a presigned URL is told, as Distribution does
        args: dict[str, Any] = {"ContentType": "application/octet-stream"}
        if self.settings.encrypt and self.settings.keyid:
            args["ServerSideEncryption"] = "aws:kms"
            args["SSEKMSKeyId"] = self.settings.keyid
        elif self.settings.encrypt:
            args["ServerSideEncryption"] = "AES256"
        if self.settings.storageclass and self.settings.storageclass.upper() != "NONE":
            args["StorageClass"] = self.settings.storageclass
        return args

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return await self._call(self._client.head_object, Bucket=self.bucket, Key=key)
        except PathNotFound:
            return None

    async def _list_all(self, prefix: str, delimiter: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """Every object and common prefix under prefix, following continuation tokens."""
        objects: list[dict[str, Any]] = []
        prefixes: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            page = await self._call(self._client.list_objects_v2, **kwargs)
            objects.extend(page.get("Contents", []))
            prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
            if not page.get("IsTruncated"):
                return objects, prefixes
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    async def _pieces(self, path: str) -> tuple[list[_Piece], float]:
        """The objects making up path, in order, and the newest mtime; PathNotFound if none.

        A path is either one plain object or segments only (see the module docstring).
        """
        key = self._key(path)
        head = await self._head(key)
        if head:
            return [_Piece(key, head["ContentLength"])], head["LastModified"].timestamp()
        segments = await self._segments(key)
        if not segments:
            raise PathNotFound(path)
        pieces = [_Piece(s["Key"], s["Size"]) for s in segments]
        return pieces, max(s["LastModified"].timestamp() for s in segments)

    async def _segments(self, key: str) -> list[dict[str, Any]]:
        objects, _ = await self._list_all(self._segments_prefix(key))
        return sorted(objects, key=lambda s: s["Key"])

    async def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            await self._call(self._client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    # -- the interface -------------------------------------------------------------------------

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """A plain object (every blob) is read with one GET, no HEAD first; an appended file piece by piece."""
        if length != 0:
            try:
                response = await self._get(self._key(path), offset, length)
            except PathNotFound:
                pass  # segments, or nothing
            else:
                async for chunk in self._relay(self._key(path), response, offset, length):
                    yield chunk
                return
        pieces, _ = await self._pieces(path)
        if length == 0:
            return
        end = sum(p.size for p in pieces) if length is None else offset + length
        position = 0
        for piece in pieces:
            first, last = max(offset, position), min(end, position + piece.size)
            if first < last:
                async for chunk in self._read_range(piece.key, first - position, last - first):
                    yield chunk
            position += piece.size
            if position >= end:
                break

    async def _get(self, key: str, offset: int, length: int | None) -> dict[str, Any]:
        """GetObject from offset, length bytes (None: to the end); an offset past the end is an empty body."""
        if offset == 0 and length is None:
            return await self._call(self._client.get_object, Bucket=self.bucket, Key=key)
        last = "" if length is None else offset + length - 1
        try:
            return await self._call(self._client.get_object, Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{last}")
        except StorageError as exc:
            if "InvalidRange" not in str(exc):
                raise
            return {"Body": io.BytesIO(b""), "ContentLength": 0}

    async def _relay(self, key: str, response: dict[str, Any], offset: int, length: int | None) -> AsyncIterator[bytes]:
        """The body of a GET the caller made, resumed as _read_range does if it is cut off."""
        count = response["ContentLength"] if length is None else min(length, response["ContentLength"])
        async for chunk in self._read_range(key, offset, count, response):
            yield chunk

    async def _read_range(self, key: str, start: int, count: int,
                          response: dict[str, Any] | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, start + count) of one object (response: the GET for them, when made already).
        botocore retries a GET that fails, not a body cut off halfway: that is asked for again from the
        byte reached (max_attempts tries in all)."""
        position, end, attempt = start, start + count, 1
        while position < end:
            if response is None:
                response = await self._call(
                    self._client.get_object, Bucket=self.bucket, Key=key, Range=f"bytes={position}-{end - 1}"
                )
            body, response = response["Body"], None
            try:
                while position < end:
                    try:
                        chunk = await self._call(body.read, READ_CHUNK)
                    except StorageError:
                        if attempt >= self.settings.max_attempts:
                            raise
                        attempt += 1
                        break
                    if not chunk:
                        raise StorageError(f"S3 object {key} ended at byte {position}, not {end}")
                    position += len(chunk)
                    yield chunk
            finally:
                body.close()

    async def read_bytes(self, path: str) -> bytes:
        key = self._key(path)
        try:
            response = await self._call(self._client.get_object, Bucket=self.bucket, Key=key)
        except PathNotFound:
            return b"".join([chunk async for chunk in self.read(path)])  # segments, or PathNotFound
        try:
            return await self._call(response["Body"].read)
        except StorageError:  # cut off mid-body: read() resumes where it stops
            return b"".join([chunk async for chunk in self.read(path)])

    async def write_bytes(self, path: str, data: bytes, durable: bool = True) -> None:
        """One PutObject. Segments an appended file at path may have are not looked for (a listing per
        link written): the plain object is what path holds from now on (see _pieces), and they go when
        path is appended to or deleted."""
        await self._call(self._client.put_object, Bucket=self.bucket, Key=self._key(path), Body=data,
                         **self._put_args())

    async def writer(self, path: str, append: bool = False, size: int | None = None) -> Writer:
        key = self._key(path)
        if not append:
            if size is not None and size > self.settings.chunksize:
                return _StreamWriter(self, key, size)
            return _ObjectWriter(self, key)
        try:
            pieces, _ = await self._pieces(path)
        except PathNotFound:
            return _SegmentWriter(self, key, 0)
        if pieces[0].key == key:  # a plain object becomes the first segment, replacing any left behind
            await self._delete_keys([s["Key"] for s in await self._segments(key)])
            first = f"{self._segments_prefix(key)}{0:020d}"
            await self._call(self._client.copy_object, Bucket=self.bucket, Key=first,
                             CopySource={"Bucket": self.bucket, "Key": key}, **self._put_args())
            await self._delete_keys([key])
        return _SegmentWriter(self, key, sum(p.size for p in pieces))

    async def stat(self, path: str) -> FileInfo:
        try:
            pieces, mtime = await self._pieces(path)
        except PathNotFound:
            page = await self._call(self._client.list_objects_v2, Bucket=self.bucket,
                                    Prefix=self._dir_prefix(path), MaxKeys=1)
            if page.get("KeyCount", 0) == 0:
                raise
            return FileInfo(path, 0, 0.0, True)
        return FileInfo(path, sum(p.size for p in pieces), mtime, False)

    async def holds_files(self, path: str) -> bool:
        page = await self._call(self._client.list_objects_v2, Bucket=self.bucket, Prefix=self._dir_prefix(path),
                                MaxKeys=1)
        return page.get("KeyCount", 0) > 0

    async def list(self, path: str) -> list[str]:
        prefix = self._dir_prefix(path)
        objects, prefixes = await self._list_all(prefix, "/")
        names = {o["Key"][len(prefix):] for o in objects}
        for p in prefixes:
            name = p[len(prefix):].rstrip("/")
            names.add(name[len(SEGMENT_PREFIX):] if name.startswith(SEGMENT_PREFIX) else name)
        if not names and path != "":
            raise PathNotFound(path)
        return sorted(names)

    async def list_after(self, path: str, start_after: str | None, limit: int) -> list[str]:
        """StartAfter and MaxKeys do the paging, in the keys' order, where a directory `v1` sorts
        as `v1/`, after `v1-rc/` and `v1.1/`. Lexically `v1` comes first: a name that the listing
        reached too late can only be such a prefix of a name it did return, so those few are
        looked up one by one."""
        prefix = self._dir_prefix(path)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/",
                                  "MaxKeys": min(1000, limit + 1)}
        if start_after is not None:
            kwargs["StartAfter"] = prefix + start_after
        names: set[str] = set()
        while True:
            page = await self._call(self._client.list_objects_v2, **kwargs)
            listed = [o["Key"][len(prefix):] for o in page.get("Contents", [])]
            listed += [p["Prefix"][len(prefix):-1] for p in page.get("CommonPrefixes", [])]
            names.update(n for n in listed
                         if not n.startswith(SEGMENT_PREFIX) and (start_after is None or n > start_after))
            if len(names) >= limit or not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        if not names:
            await self.stat(path)  # PathNotFound for a missing directory, [] past the end of one
            return []
        late = {name[:i] for name in names for i, c in enumerate(name) if c in "-."}
        for candidate in sorted(late - names):
            if (start_after is None or candidate > start_after) and candidate < max(names):
                probe = await self._call(self._client.list_objects_v2, Bucket=self.bucket,
                                         Prefix=f"{prefix}{candidate}/", MaxKeys=1)
                if probe.get("KeyCount", 0):
                    names.add(candidate)
        return sorted(names)[:limit]

    async def find_dirs_containing(
        self,
        path: str,
        marker: str,
        start_after: str | None = None,
        limit: int | None = None,
        skip: Callable[[str], bool] = lambda name: False,
    ) -> list[str]:
        """One delimiter listing: with `/<marker>/` as the delimiter, S3 rolls every key below a
        marker into one common prefix, so a page costs calls in proportion to the keys outside
        markers in that page's directories, never a walk of the whole tree."""
        prefix = self._dir_prefix(path)
        delimiter = f"/{marker}/"
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": delimiter}
        if start_after is not None:
            kwargs["StartAfter"] = f"{prefix}{start_after}{delimiter}\U0010ffff"
        found: list[str] = []
        while limit is None or len(found) < limit:
            page = await self._call(self._client.list_objects_v2, **kwargs)
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(prefix):-len(delimiter)]
                if name and not any(skip(part) for part in name.split("/")):
                    found.append(name)
            if not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        return found[:limit] if limit is not None else found

    async def walk(self, path: str, after: str | None = None, until: str | None = None,
                   leaf: Callable[[str], bool] | None = None) -> AsyncIterator[FileInfo]:
        """One flat listing (no delimiter): 1,000 keys a call at any depth. An appended file is
        listed once, where its segments are, with their total size and newest mtime."""
        prefix = self._dir_prefix(path)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if after is not None:
            kwargs["StartAfter"] = prefix + after
        pending: FileInfo | None = None  # the appended file whose segments are being added up
        while True:
            page = await self._call(self._client.list_objects_v2, **kwargs)
            for obj in page.get("Contents", []):
                relative = obj["Key"][len(prefix):]
                if not in_range(relative, after, until):
                    if until is not None and relative > until:
                        break
                    continue
                logical = _segmented_file(relative)
                size, mtime = obj["Size"], obj["LastModified"].timestamp()
                if pending is not None and pending.path == logical:
                    pending = FileInfo(logical, pending.size + size, max(pending.mtime, mtime), False)
                    continue
                if pending is not None:
                    yield pending
                    pending = None
                if logical is not None:
                    pending = FileInfo(logical, size, mtime, False)
                elif not relative.endswith("/"):
                    yield FileInfo(relative, size, mtime, False)
            else:
                if page.get("IsTruncated"):
                    kwargs["ContinuationToken"] = page["NextContinuationToken"]
                    continue
            break
        if pending is not None:
            yield pending

    async def move_files(self, moves: list[tuple[str, str]]) -> list[bool]:
        """A CopyObject per file, MOVE_COPIES at a time, then the sources deleted in batches: two
        calls fewer per file than move(), which reads back what it cannot copy. A file too big for
        one CopyObject, or stored as segments, goes through move()."""
        gate = asyncio.Semaphore(MOVE_COPIES)

        async def copy(src: str, dst: str) -> bool:
            async with gate:
                source = {"Bucket": self.bucket, "Key": self._key(src)}
                try:
                    await self._call(self._client.copy_object, Bucket=self.bucket, Key=self._key(dst),
                                     CopySource=source, **self._put_args())
                    return True
                except (PathNotFound, StorageError):  # missing, segmented, or over CopyObject's 5 GiB
                    pass
                try:
                    await self.move(src, dst)
                except PathNotFound:
                    return False
                return True

        moved: list[bool] = []
        for start in range(0, len(moves), 1000):
            batch = moves[start:start + 1000]
            done = await asyncio.gather(*(copy(src, dst) for src, dst in batch))
            await self._delete_keys([self._key(src) for (src, _), ok in zip(batch, done) if ok])
            moved += done
        return moved

    async def delete_files(self, paths: list[str]) -> None:
        await self._delete_keys([self._key(path) for path in paths])

    async def move(self, src: str, dst: str) -> None:
        pieces, _ = await self._pieces(src)
        dst_key = self._key(dst)
        if dst_key == pieces[0].key and len(pieces) == 1:
            return
        await self._compose(pieces, dst_key)
        await self._delete_keys([p.key for p in pieces if p.key != dst_key])

    async def delete(self, path: str) -> None:
        """A directory (what the registry deletes most: an upload, a link's, a tag's) costs one listing and
        one DeleteObjects per 1,000 keys; a file a HeadObject and a listing of its segments more."""
        key = self._key(path)
        keys = [o["Key"] for o in (await self._list_all(key + "/"))[0]]
        if not keys:  # a file: plain (perhaps with stale segments, see write_bytes), or segments only
            keys = ([key] if await self._head(key) else []) + [o["Key"] for o in await self._segments(key)]
        if not keys:
            raise PathNotFound(path)
        await self._delete_keys(keys)

    async def purge_incomplete(self, older_than: float, dry_run: bool = False) -> int:
        cutoff = time.time() - older_than
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._dir_prefix("")}
        stale = []
        while True:
            page = await self._call(self._client.list_multipart_uploads, **kwargs)
            stale += [u for u in page.get("Uploads", []) if u["Initiated"].timestamp() < cutoff]
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page["NextKeyMarker"]
            kwargs["UploadIdMarker"] = page["NextUploadIdMarker"]
        if not dry_run:
            for upload in stale:
                await self._abort(upload["Key"], upload["UploadId"])
        return len(stale)

    def unfinished_writes(self) -> list[str]:
        return [f"{upload_id} {key}" for upload_id, key in self._multipart.items()]

    async def abort_writes(self, tokens: list[str]) -> None:
        root = self._dir_prefix("")
        for token in tokens:
            upload_id, _, key = token.partition(" ")
            if upload_id and key.startswith(root):  # never a key outside the registry's root
                await self._abort(key, upload_id)

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        if not self.settings.redirect:
            return None
        operation = {"GET": "get_object", "HEAD": "head_object"}[method]
        return await self._call(self._client.generate_presigned_url, operation,
                                Params={"Bucket": self.bucket, "Key": self._key(path)}, ExpiresIn=REDIRECT_SECONDS)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._streams.shutdown(wait=False, cancel_futures=True)

    # -- composing pieces into one object ------------------------------------------------------

    async def _compose(self, pieces: list[_Piece], dst_key: str) -> None:
        total = sum(p.size for p in pieces)
        if total <= self.settings.chunksize:
            data = b"".join([await self._read_piece(p, 0, p.size) for p in pieces])
            await self._call(self._client.put_object, Bucket=self.bucket, Key=dst_key, Body=data, **self._put_args())
            return
        if len(pieces) == 1 and total <= MAX_PART:
            source = {"Bucket": self.bucket, "Key": pieces[0].key}
            await self._call(self._client.copy_object, Bucket=self.bucket, Key=dst_key, CopySource=source,
                             **self._put_args())
            return
        upload_id = await self._begin_multipart(dst_key)
        # every part but the last is at least this big, so no blob needs more than MAX_PARTS
        part_size = max(MIN_PART, math.ceil(total / (MAX_PARTS - 1)))
        try:
            parts = await self._upload_parts(pieces, dst_key, upload_id, part_size)
            await self._complete_multipart(dst_key, upload_id, parts, total)
        except BaseException:
            await asyncio.shield(self._abort(dst_key, upload_id))
            raise

    async def _begin_multipart(self, key: str) -> str:
        upload = await self._call(self._client.create_multipart_upload, Bucket=self.bucket, Key=key, **self._put_args())
        self._multipart[upload["UploadId"]] = key
        return upload["UploadId"]

    async def _complete_multipart(self, key: str, upload_id: str, parts: list[dict[str, Any]], size: int) -> None:
        try:
            await self._call(self._client.complete_multipart_upload, Bucket=self.bucket, Key=key,
                             UploadId=upload_id, MultipartUpload={"Parts": parts})
        except StorageError:
            # A completion whose answer was lost is retried and then fails (NoSuchUpload)
            # although the object is there: what counts is what the bucket holds.
            head = await self._head(key)
            if head is None or head["ContentLength"] != size:
                raise
        self._multipart.pop(upload_id, None)

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._call(self._client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StorageError:
            pass  # upload purging aborts what is left behind
        self._multipart.pop(upload_id, None)

    async def _upload_parts(self, pieces: list[_Piece], key: str, upload_id: str,
                            part_size: int) -> list[dict[str, Any]]:
        """Copy server-side every stretch of at least part_size; buffer the rest into parts of that size.

        A small piece is joined with the start of the next one, so only up to part_size of each
        following piece passes through the registry; the rest of it is still copied server-side."""
        parts: list[dict[str, Any]] = []
        buffer = bytearray()

        async def flush() -> None:
            number = len(parts) + 1
            result = await self._call(self._client.upload_part, Bucket=self.bucket, Key=key, UploadId=upload_id,
                                      PartNumber=number, Body=bytes(buffer))
            parts.append({"PartNumber": number, "ETag": result["ETag"]})
            buffer.clear()

        for piece in pieces:
            position = 0
            while position < piece.size:
                remaining = piece.size - position
                if buffer or remaining < part_size:
                    take = min(part_size - len(buffer), remaining)
                    buffer += await self._read_piece(piece, position, take)
                    position += take
                    if len(buffer) >= part_size:
                        await flush()
                    continue
                take = min(remaining, MAX_PART)
                if 0 < remaining - take < MIN_PART:
                    take = remaining - MIN_PART  # leave a tail big enough to stand as a part
                number = len(parts) + 1
                result = await self._call(
                    self._client.upload_part_copy, Bucket=self.bucket, Key=key, UploadId=upload_id,
                    PartNumber=number, CopySource={"Bucket": self.bucket, "Key": piece.key},
                    CopySourceRange=f"bytes={position}-{position + take - 1}",
                )
                parts.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
                position += take
        if buffer:
            await flush()
        return parts

    async def _read_piece(self, piece: _Piece, start: int, count: int) -> bytes:
        if count == 0:
            return b""
        return b"".join([chunk async for chunk in self._read_range(piece.key, start, count)])


#: what S3-compatible stores answer when a bucket or quota is full (MinIO, Ceph RGW); AWS has no such limit
FULL_CODES = ("XMinioStorageFull", "QuotaExceeded", "InsufficientStorage")


def _is_full(exc: ClientError) -> bool:
    error = exc.response.get("Error", {}).get("Code", "")
    return error in FULL_CODES or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 507


def _segmented_file(relative: str) -> str | None:
    """The appended file a segment key belongs to (`d/.seg.name/<start>` -> `d/name`); None for other keys."""
    head, _, rest = relative.rpartition("/")
    directory, _, name = head.rpartition("/")
    if not name.startswith(SEGMENT_PREFIX) or not rest:
        return None
    name = name[len(SEGMENT_PREFIX):]
    return f"{directory}/{name}" if directory else name


def _is_missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound")


class _BufferedWriter(Writer):
    """Gathers writes in memory up to the part size, then hands them to _flush()."""

    def __init__(self, backend: S3Backend, key: str, start: int = 0) -> None:
        self._backend = backend
        self._key = key
        self._buffer = bytearray()
        self.size = start

    async def write(self, data: bytes) -> None:
        if self.on_write is not None:
            await self._backend._call(self.on_write, data)
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= self._backend.settings.chunksize:
            await self._flush()

    async def _flush(self) -> None:
        raise NotImplementedError


class _ObjectWriter(_BufferedWriter):
    """A whole object: buffered up to the part size, then a multipart upload completed on commit."""

    def __init__(self, backend: S3Backend, key: str) -> None:
        super().__init__(backend, key)
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def _flush(self) -> None:
        b = self._backend
        if self._upload_id is None:
            self._upload_id = await b._begin_multipart(self._key)
        number = len(self._parts) + 1
        result = await b._call(b._client.upload_part, Bucket=b.bucket, Key=self._key, UploadId=self._upload_id,
                               PartNumber=number, Body=bytes(self._buffer))
        self._parts.append({"PartNumber": number, "ETag": result["ETag"]})
        self._buffer.clear()

    async def commit(self) -> None:
        b = self._backend
        if self._upload_id is None:
            await b._call(b._client.put_object, Bucket=b.bucket, Key=self._key, Body=bytes(self._buffer),
                          **b._put_args())
            return
        if self._buffer:
            await self._flush()
        await b._complete_multipart(self._key, self._upload_id, self._parts, self.size)

    async def cancel(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            await self._backend._abort(self._key, self._upload_id)
        self.size = 0


class _SegmentWriter(_BufferedWriter):
    """Appends: every part-size worth of bytes becomes a segment object; cancel deletes this writer's segments."""

    def __init__(self, backend: S3Backend, key: str, start: int) -> None:
        super().__init__(backend, key, start)
        self._start = start
        self._written: list[str] = []
        self._flushed = start

    async def _flush(self) -> None:
        b = self._backend
        key = f"{b._segments_prefix(self._key)}{self._flushed:020d}"
        await b._call(b._client.put_object, Bucket=b.bucket, Key=key, Body=bytes(self._buffer), **b._put_args())
        self._written.append(key)
        self._flushed += len(self._buffer)
        self._buffer.clear()

    async def commit(self) -> None:
        if self._buffer or (self._flushed == 0 and not self._written):
            await self._flush()  # an empty upload is one empty segment, so that it exists

    async def cancel(self) -> None:
        self._buffer.clear()
        await self._backend._delete_keys(self._written)
        self._written.clear()
        self._flushed = self.size = self._start


class _StreamedPartAuth(botocore.auth.S3SigV4Auth):
    """SigV4 that leaves a streamed part's payload unsigned (UNSIGNED-PAYLOAD), as botocore does by itself
    over https; over plain http it would read the body through once to hash it before sending it, which a
    stream cannot do. The registry hashes every byte itself, and checks the digest before commit."""

    def _should_sha256_sign_payload(self, request: Any) -> bool:
        if isinstance(request.body, _PartStream):
            return False
        return super()._should_sha256_sign_payload(request)


_STREAMED_PART_SIGNER = "s3v4-registry-streamed-part"
botocore.auth.AUTH_TYPE_MAPS[_STREAMED_PART_SIGNER] = _StreamedPartAuth


def _sign_streamed_parts_unsigned(signature_version: Any, **kwargs: Any) -> Any:
    return _STREAMED_PART_SIGNER if signature_version == "s3v4" else None


class _PartStream(io.RawIOBase):
    """One part's body as botocore's sending thread reads it: pieces handed over by the event loop as the
    client's request delivers them, then EOF. It can be rewound only before its first byte went out (a
    retry of a call refused up front, as S3 does with 503 SlowDown after `Expect: 100-continue`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(STREAM_QUEUE)
        self._started = False
        self._ended = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # noqa: ARG002 - whole pieces, whatever size asks
        if self._ended:
            return b""
        self._started = True
        piece = asyncio.run_coroutine_threadsafe(self.queue.get(), self._loop).result()
        if piece is None:
            self._ended = True
            return b""
        if isinstance(piece, BaseException):
            self._ended = True
            raise piece
        return piece

    def seekable(self) -> bool:
        return not self._started

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if offset != 0 or whence != io.SEEK_SET or self._started:
            raise io.UnsupportedOperation("a streamed part cannot be sent again")
        return 0

    def tell(self) -> int:
        if self._started:
            raise io.UnsupportedOperation("a streamed part has no position")
        return 0


class _StreamWriter(Writer):
    """A whole object of announced size, streamed into a multipart upload at its key as it is written: one
    part per MAX_PART (5 GiB) and no part buffered. commit() completes it, which is when it appears;
    cancel() or a failure aborts it, so no multipart upload is left behind (and, should the process die,
    purge_incomplete aborts it). A part that fails once its bytes have gone cannot be sent again: the
    write fails, and the client sends the blob again."""

    def __init__(self, backend: S3Backend, key: str, size: int) -> None:
        self._backend = backend
        self._key = key
        self._total = size
        parts = max(1, math.ceil(size / MAX_PART))
        self._part_size = math.ceil(size / parts)
        self.size = 0
        self._upload_id: str | None = None
        self._stream: _PartStream | None = None
        self._part_end = 0
        self._sending: list[asyncio.Future[dict[str, Any]]] = []

    async def write(self, data: bytes) -> None:
        if self.size + len(data) > self._total:
            raise StorageError(f"more than the {self._total} bytes announced for {self._key}")
        if self.on_write is not None:
            await self._backend._call(self.on_write, data)
        view = memoryview(data)
        while view:
            if self._stream is None:
                await self._next_part()
            assert self._stream is not None
            piece = view[:self._part_end - self.size]
            await self._hand_over(data if len(piece) == len(data) else bytes(piece))
            self.size += len(piece)
            view = view[len(piece):]
            if self.size == self._part_end:
                await self._hand_over(None)
                self._stream = None

    async def _next_part(self) -> None:
        b = self._backend
        if self._upload_id is None:
            self._upload_id = await b._begin_multipart(self._key)
        loop = asyncio.get_running_loop()
        self._stream = stream = _PartStream(loop)
        number = len(self._sending) + 1
        length = min(self._part_size, self._total - self.size)
        self._part_end = self.size + length
        call = partial(b._stream_client.upload_part, Bucket=b.bucket, Key=self._key, UploadId=self._upload_id,
                       PartNumber=number, Body=stream, ContentLength=length)
        sending = asyncio.ensure_future(b._call_in(b._streams, call))
        sending.add_done_callback(lambda _: _unblock(stream))
        self._sending.append(sending)

    async def _hand_over(self, piece: bytes | None) -> None:
        """Queue a piece (None: the part's end) for the sending thread; fail if the part's call ended early."""
        assert self._stream is not None
        sending = self._sending[-1]
        if sending.done():
            sending.result()  # its error
            raise StorageError(f"S3 ended the part upload of {self._key} before its last byte")
        await self._stream.queue.put(piece)

    async def commit(self) -> None:
        b = self._backend
        try:
            if self.size != self._total:
                raise StorageError(f"{self.size} bytes written to {self._key}, {self._total} announced")
            parts = [{"PartNumber": number, "ETag": (await sending)["ETag"]}
                     for number, sending in enumerate(self._sending, 1)]
            assert self._upload_id is not None
            await b._complete_multipart(self._key, self._upload_id, parts, self._total)
        except BaseException:
            await asyncio.shield(self.cancel())
            raise

    async def cancel(self) -> None:
        if self._stream is not None:
            _unblock(self._stream, StorageError("write cancelled"))
            self._stream = None
        for sending in self._sending:
            try:
                await sending
            except Exception:  # noqa: BLE001 - the part is abandoned: how its call ended does not matter
                pass
        if self._upload_id is not None:
            await self._backend._abort(self._key, self._upload_id)
            self._upload_id = None
        self.size = 0


def _unblock(stream: _PartStream, error: BaseException | None = None) -> None:
    """Empty the stream's queue, so that nobody waits on it, and leave it ending (with error: failing)."""
    while not stream.queue.empty():
        stream.queue.get_nowait()
    stream.queue.put_nowait(error)
