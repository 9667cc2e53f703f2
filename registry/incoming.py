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
"""

from __future__ import annotations

import asyncio
import contextlib
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
        """Say this process is alive; the heartbeat's time as the store records it."""
        path = layout.incoming_heartbeat(self.process)
        await self.backend.write_bytes(path, b"", durable=False)
        self._beaten_at = time.monotonic()
        return (await self.backend.stat(path)).mtime

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
                await delete_quietly(self.backend, layout.incoming_process(process))
                swept.append(process)
            else:
                stale = beaten + STALE_AFTER_SECONDS
                next_stale = stale if next_stale is None else min(next_stale, stale)
        return swept, next_stale

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
        SWEEP_SECONDS; beat every HEARTBEAT_SECONDS while uploads are in flight; until cancelled.
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
                    elif self._in_flight and time.monotonic() - self._beaten_at >= HEARTBEAT_SECONDS:
                        await self.beat()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # storage trouble: the next turn tries again
                    log.error("incoming uploads: heartbeat or sweep failed: %s", exc)
                await asyncio.sleep(HEARTBEAT_SECONDS / 2)
        finally:  # requests are over by now (the server drains them first): nothing of ours is in flight
            await asyncio.shield(delete_quietly(self.backend, layout.incoming_process(self.process)))
