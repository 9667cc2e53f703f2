"""Upload sessions: streamed, chunked and resumable, with their state in the store.

The data of an upload lives under the repository's `_uploads/<id>/`, so an
upload survives a restart and can be continued by any process sharing the
store. The running hash is kept in process memory only as a cache: when it is
missing, or does not match what is stored, the stored bytes are hashed once
when the upload is finished (never at every chunk, which would be quadratic).

A session holds `startedat` from its start and `data` from its first chunk. When
the request that finishes it brings the whole blob (the common POST then PUT), and
the backend reclaims what a writer never committed (S3), the blob is written
straight to its place in the blob store and committed only once its digest matches:
on S3 that is one multipart upload completed or aborted, instead of parts written
to the session, composed into a copy, and deleted.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import AsyncIterator, Sequence

from storage_backends import Piece, StorageBackend, Writer

from . import layout
from .blobs import BlobStore
from .errors import RegistryError
from .incoming import Incoming, Scratch
from .links import delete_quietly
from .references import Digest

_UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: running hashes kept in memory; a forgotten one costs a re-hash, not correctness
MAX_CACHED_HASHERS = 4096
HASH_ALGORITHM = "sha256"
#: an upload's data as it arrives: lists of buffers (a request body's, as its parser made them)
Body = AsyncIterator[Sequence[Piece]]


@dataclass
class _HashState:
    hasher: "hashlib._Hash"
    offset: int


class UploadStore:
    def __init__(self, backend: StorageBackend, blobs: BlobStore) -> None:
        self.backend = backend
        self.blobs = blobs
        self.incoming = Incoming(backend)
        self._hashes: OrderedDict[tuple[str, str], _HashState] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def start(self, name: str, algorithm: str = HASH_ALGORITHM) -> str:
        """A new upload; `algorithm` is the digest the client will finish it with (a guess, not a promise)."""
        upload_id = str(uuid.uuid4())
        started = datetime.datetime.now(datetime.timezone.utc).isoformat().encode()
        try:  # an upload's bookkeeping is scratch state: not worth an fsync
            await self.backend.write_bytes(layout.upload_started_at(name, upload_id), started, durable=False)
        except BaseException:  # a full disk, say: leave no half-made upload behind
            await asyncio.shield(self._discard(_session(name, upload_id)))
            raise
        self._remember((name, upload_id), _HashState(hashlib.new(algorithm), 0))
        return upload_id

    async def size(self, name: str, upload_id: str) -> int:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", "malformed upload id", {"upload": upload_id[:100]})
        # one listing on S3, which also adds up an appended file's segments
        files = {info.path: info.size async for info in self.backend.walk(layout.upload_dir(name, upload_id))}
        if not files:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", f"upload {upload_id} unknown to repository {name}")
        return files.get(layout.UPLOAD_DATA, 0)  # no data before the first chunk

    async def append(
        self,
        name: str,
        upload_id: str,
        body: Body,
        start: int | None = None,
        length: int | None = None,
    ) -> int:
        """Add one chunk and return the upload's new size. A request that fails leaves the
        upload as it was; a crash may keep part of the chunk, which the upload's Range then shows."""
        key = (name, upload_id)
        async with self._lock(key):
            size = await self._size_at(key, start)
            return await self._append_locked(_session(*key), size, body, length)

    async def _size_at(self, key: tuple[str, str], start: int | None) -> int:
        """The upload's size, which a chunk's `start` (from Content-Range) must equal:
        else 416 with the current range, so the client can resume from there."""
        size = await self.size(*key)
        if start is not None and start != size:
            raise RegistryError(
                "RANGE_INVALID",
                f"chunk starts at {start} but the upload has {size} bytes",
                headers=upload_headers(*key, size),
            )
        return size

    async def _append_locked(self, scratch: Scratch, size: int, body: Body,
                             length: int | None) -> int:
        state = self._current_hash(scratch.key, size)
        before = state.hasher.copy() if state else None
        writer = await self.backend.writer(scratch.data, append=True)
        if state is not None:
            writer.on_write = state.hasher.update
        try:
            await _pipelined_copy(body, writer)
            received = writer.size - size
            if length is not None and received != length:
                raise RegistryError("SIZE_INVALID", f"received {received} bytes, expected {length}")
        except BaseException:
            await writer.cancel()
            if state is not None and before is not None:
                state.hasher = before
            raise
        await writer.commit()
        if state is not None:
            state.offset = writer.size
        return writer.size

    async def finish(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: Body | None,
        start: int | None = None,
        length: int | None = None,
    ) -> int:
        """Add the last chunk (if any), verify the digest, then commit the blob atomically."""
        key = (name, upload_id)
        async with self._lock(key):
            size = await self._size_at(key, start)
            if size == 0 and (body is None or self.backend.reclaims_unfinished_writes):
                try:  # the whole blob is in this request: straight to its place
                    size = await self._write_verified(name, digest, body, length)
                except RegistryError as exc:
                    if exc.code == "DIGEST_INVALID":
                        await self._discard(_session(*key))
                    raise
                await self._discard(_session(*key))
                return size
            if body is not None:
                size = await self._append_locked(_session(*key), size, body, length)
            return await self._verify_and_adopt(_session(*key), digest, size)

    async def put_whole(self, name: str, digest: Digest, body: Body, length: int | None) -> int:
        """A monolithic upload: the whole blob in one request, so no session is recorded for it
        (its client could neither resume nor cancel one). A failure leaves nothing behind, and
        neither does a crash, for long (see registry/incoming.py)."""
        if self.backend.reclaims_unfinished_writes:
            return await self._write_verified(name, digest, body, length)
        async with self.incoming.scratch(name) as scratch:
            self._remember(scratch.key, _HashState(hashlib.new(digest.algorithm), 0))
            try:
                size = await self._append_locked(scratch, 0, body, length)
                return await self._verify_and_adopt(scratch, digest, size)
            except BaseException:
                await asyncio.shield(self._discard(scratch))
                raise

    async def _verify_and_adopt(self, scratch: Scratch, digest: Digest, size: int) -> int:
        state = self._current_hash(scratch.key, size)
        if state is not None and state.hasher.name == digest.algorithm:
            computed = state.hasher.hexdigest()
        else:
            computed = (await self._rehash(scratch, digest.algorithm)).hexdigest()
        if computed != digest.hex:
            await self._discard(scratch)
            raise _digest_invalid(digest, computed)
        await self.blobs.adopt(scratch.key[0], digest, scratch.data, size)
        await self._discard(scratch)
        return size

    async def _write_verified(self, name: str, digest: Digest, body: Body | None,
                              length: int | None) -> int:
        """The whole blob from one request, written to its place in the blob store, hashed on the way, and
        committed only when the digest matches (else nothing of it remains); then linked into name.
        For backends that reclaim uncommitted writes (reclaims_unfinished_writes) and the empty blob."""
        hasher = hashlib.new(digest.algorithm)
        writer = await self.backend.writer(layout.blob_data(digest), size=length)
        writer.on_write = hasher.update
        try:
            if body is not None:
                await _pipelined_copy(_at_most(body, length), writer)
            if length is not None and writer.size != length:
                raise RegistryError("SIZE_INVALID", f"received {writer.size} bytes, expected {length}")
            if hasher.hexdigest() != digest.hex:
                raise _digest_invalid(digest, hasher.hexdigest())
            await writer.commit()
        except BaseException:
            await asyncio.shield(writer.cancel())
            raise
        await self.blobs.link_stored(name, digest, writer.size)
        return writer.size

    async def cancel(self, name: str, upload_id: str) -> None:
        key = (name, upload_id)
        async with self._lock(key):
            await self.size(name, upload_id)
            await self._discard(_session(*key))

    async def _discard(self, scratch: Scratch) -> None:
        self._hashes.pop(scratch.key, None)
        await delete_quietly(self.backend, scratch.directory)

    def _current_hash(self, key: tuple[str, str], size: int) -> _HashState | None:
        """The running hash, if this process saw every byte of the upload so far.

        When another process (or this one before a restart) wrote part of it, the
        hash is dropped and the whole upload is hashed once, when it is finished.
        """
        state = self._hashes.get(key)
        if state is None:
            return None
        if state.offset != size:
            del self._hashes[key]
            return None
        self._hashes.move_to_end(key)
        return state

    async def _rehash(self, scratch: Scratch, algorithm: str) -> "hashlib._Hash":
        hasher = hashlib.new(algorithm)
        loop = asyncio.get_running_loop()
        async for chunk in self.backend.read(scratch.data):
            await loop.run_in_executor(None, hasher.update, chunk)
        return hasher

    def _remember(self, key: tuple[str, str], state: _HashState) -> None:
        self._hashes[key] = state
        self._hashes.move_to_end(key)
        while len(self._hashes) > MAX_CACHED_HASHERS:
            self._hashes.popitem(last=False)


def _digest_invalid(digest: Digest, computed: str) -> RegistryError:
    return RegistryError(
        "DIGEST_INVALID",
        f"upload content has digest {digest.algorithm}:{computed}, not {digest}",
        {"expected": str(digest), "computed": f"{digest.algorithm}:{computed}"},
    )


async def _at_most(body: Body, length: int | None) -> Body:
    """The body, refused with SIZE_INVALID as soon as it brings more than length bytes."""
    received = 0
    async for pieces in body:
        received += sum(len(piece) for piece in pieces)
        if length is not None and received > length:
            raise RegistryError("SIZE_INVALID", f"received more than the {length} bytes announced")
        yield pieces


def _session(name: str, upload_id: str) -> Scratch:
    """An upload session's place: the repository's `_uploads/<id>/`."""
    return Scratch((name, upload_id), layout.upload_data(name, upload_id), layout.upload_dir(name, upload_id))


async def _pipelined_copy(body: Body, writer: Writer) -> None:
    """Receive the next pieces while the previous ones are hashed and written (one write in flight)."""
    in_flight: asyncio.Future[None] | None = None
    try:
        async for pieces in body:
            if in_flight is not None:
                await in_flight
            in_flight = asyncio.ensure_future(writer.write_pieces(pieces))
    finally:
        if in_flight is not None:
            # Never leave a write running behind a cancel; its own error wins if the body's did not.
            await asyncio.shield(in_flight)


def upload_location(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def upload_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    """Location, Range and Docker-Upload-UUID, as every upload response carries them."""
    return {
        "Location": upload_location(name, upload_id),
        "Range": f"0-{max(size - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
    }
