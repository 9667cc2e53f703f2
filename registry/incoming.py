"""Where single-request uploads (and mirror fills) keep their data while the body arrives.

Such an upload has no session its client could resume or cancel, so when its request fails
the data is deleted at once (UploadStore.put_whole). When the process dies (kill -9, a power
cut) nobody is left to do that, and the data used to wait under `_uploads/` for upload
purging, a week later. So each process writes them under a directory of its own,

    docker/registry/v2/incoming/<process>/<upload>/data
    docker/registry/v2/incoming/<process>/heartbeat

and, while it has any in flight, rewrites its heartbeat every HEARTBEAT_SECONDS (an idle process
costs the store nothing). A registry starting on the store deletes the directories whose
heartbeat is STALE_AFTER_SECONDS behind its own (storage clocks on both sides, so the hosts'
clocks do not matter); one whose heartbeat is still fresh is looked at again once it would be
stale, and every process looks again every SWEEP_SECONDS. So a restarted registry clears what
its killed predecessor left within half a minute. A directory whose process is idle may be swept
too: it holds nothing, and the process beats again before its next upload writes a byte.
Distribution ignores the directory, as it ignores `evicting/`.

Some backends keep writes unfinished outside any file: on S3 a blob pushed in one request streams
into a multipart upload at the blob's own key, and a chunked upload is composed into one. A killed
process leaves those behind, invisible but stored (and billed). So the heartbeat names them (the
backend's unfinished_writes()), and is rewritten within TICK_SECONDS of one starting; the sweep
aborts those a stopped process named before deleting its directory. Only writes a registry process
named are ever aborted, never another program's on the same bucket. What a process began in its
last second, unnamed, waits for upload purging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from typing import AsyncIterator, Callable, NamedTuple

from storage_backends import PathNotFound, StorageBackend

from . import layout
from .links import delete_quietly

log = logging.getLogger("registry.incoming")
HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 4 * HEARTBEAT_SECONDS
SWEEP_SECONDS = 3600.0
TICK_SECONDS = 1.0


class Scratch(NamedTuple):
    """Where an upload's data is written: its key for in-memory state, the data file, and the
    directory that goes when the upload ends."""

    key: tuple[str, str]
    data: str
    directory: str


class Incoming:
    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend
        self.process = uuid.uuid4().hex
        self._in_flight = 0
        self._beaten_at = -math.inf  # time.monotonic() of the last heartbeat
        self._named: set[str] = set()  # the backend's unfinished writes the last heartbeat named

    @contextlib.asynccontextmanager
    async def scratch(self, name: str) -> AsyncIterator[Scratch]:
        """A place for one single-request upload into repository name, for as long as the block runs."""
        self._in_flight += 1
        try:
            if time.monotonic() - self._beaten_at > HEARTBEAT_SECONDS:  # fresh before a byte is written
                await self.beat()
            upload = uuid.uuid4().hex
            yield Scratch((name, upload), layout.incoming_data(self.process, upload),
                          layout.incoming_upload(self.process, upload))
        finally:
            self._in_flight -= 1

    async def beat(self) -> float:
        """Say this process is alive, and which unfinished writes are its own; the heartbeat's time as
        the store records it."""
        path = layout.incoming_heartbeat(self.process)
        writes = self.backend.unfinished_writes()
        await self.backend.write_bytes(path, json.dumps(writes).encode(), durable=False)
        self._beaten_at = time.monotonic()
        self._named = set(writes)
        return (await self.backend.stat(path)).mtime

    def _beat_due(self) -> bool:
        """While anything is in flight, every HEARTBEAT_SECONDS; at once for an unfinished write not named yet."""
        writes = self.backend.unfinished_writes()
        if not self._named.issuperset(writes):
            return True
        return bool(self._in_flight or writes) and time.monotonic() - self._beaten_at >= HEARTBEAT_SECONDS

    async def sweep(self, now: float) -> tuple[list[str], float | None]:
        """Delete what processes whose heartbeat stopped left behind. The processes swept, and the
        store time at which the next one still alive would be stale (None: none is)."""
        try:
            processes = await self.backend.list(layout.INCOMING)
        except PathNotFound:
            return [], None
        swept, next_stale = [], None
        for process in processes:
            if process == self.process:
                continue
            try:
                beaten = (await self.backend.stat(layout.incoming_heartbeat(process))).mtime
            except PathNotFound:  # half deleted (the heartbeat is written first): the data decides
                beaten = await self._newest(layout.incoming_process(process))
            if beaten is None or now - beaten > STALE_AFTER_SECONDS:
                await self._abort_named(process)
                await delete_quietly(self.backend, layout.incoming_process(process))
                swept.append(process)
            else:
                stale = beaten + STALE_AFTER_SECONDS
                next_stale = stale if next_stale is None else min(next_stale, stale)
        return swept, next_stale

    async def _abort_named(self, process: str) -> None:
        """Abort the unfinished writes a stopped process's last heartbeat named."""
        try:
            named = json.loads(await self.backend.read_bytes(layout.incoming_heartbeat(process)) or b"[]")
        except (PathNotFound, ValueError):
            return
        writes = [write for write in named if isinstance(write, str)] if isinstance(named, list) else []
        if writes:
            await self.backend.abort_writes(writes)
            log.warning("aborted %d unfinished storage write(s) of stopped registry process %s", len(writes), process)

    async def _newest(self, directory: str) -> float | None:
        try:
            uploads = await self.backend.list(directory)
        except PathNotFound:
            return None
        times = []
        for upload in uploads:
            try:
                times.append((await self.backend.stat(f"{directory}/{upload}/data")).mtime)
            except PathNotFound:
                continue
        return max(times, default=None)

    async def run_forever(self, read_only: Callable[[], bool]) -> None:
        """The background task: sweep now, again when a live-looking process would be stale, and every
        SWEEP_SECONDS; beat when due (_beat_due); until cancelled.
        Nothing while the registry is read-only (it takes no uploads, and its store may be read-only)."""
        loop = asyncio.get_running_loop()
        sweep_at = loop.time()
        try:
            while True:
                try:
                    if not read_only() and loop.time() >= sweep_at:
                        now = await self.beat()
                        swept, next_stale = await self.sweep(now)
                        if swept:
                            log.warning("deleted the unfinished single-request uploads of %d stopped registry "
                                        "process(es)", len(swept))
                        wait = SWEEP_SECONDS if next_stale is None else next_stale - now + HEARTBEAT_SECONDS
                        sweep_at = loop.time() + min(wait, SWEEP_SECONDS)
                    elif self._beat_due():
                        await self.beat()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # storage trouble: the next turn tries again
                    log.error("incoming uploads: heartbeat or sweep failed: %s", exc)
                await asyncio.sleep(TICK_SECONDS)
        finally:  # requests are over by now (the server drains them first): nothing of ours is in flight
            await asyncio.shield(delete_quietly(self.backend, layout.incoming_process(self.process)))
