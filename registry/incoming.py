"""Where single-request uploads (and mirror fills) keep their data while the body arrives.

Such an upload has no session its client could resume or cancel, so when its request fails
the data is deleted at once (UploadStore.put_whole). When the process dies (kill -9, a power
cut) nobody is left to do that, and the data used to wait under `_uploads/` for upload
purging, a week later. So each process writes them under a directory of its own,

    docker/registry/v2/incoming/<process>/<upload>/data
    docker/registry/v2/incoming/<process>/heartbeat

and rewrites its heartbeat every HEARTBEAT_SECONDS while it serves. Every process sharing the
store looks at the others' heartbeats as often, and deletes the directory of one whose heartbeat
is STALE_AFTER_SECONDS behind its own (storage clocks on both sides, so the hosts' clocks do not
matter): a restarted registry clears what its killed predecessor left within half a minute.
Distribution ignores the directory, as it ignores `evicting/`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Callable, NamedTuple

from storage_backends import PathNotFound, StorageBackend

from . import layout
from .links import delete_quietly

log = logging.getLogger("registry.incoming")
HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 4 * HEARTBEAT_SECONDS


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
        self._beating = False

    async def scratch(self, name: str) -> Scratch:
        """A place for one single-request upload into repository name."""
        if not self._beating:  # the heartbeat exists before any data it vouches for
            await self.beat()
        upload = uuid.uuid4().hex
        return Scratch((name, upload), layout.incoming_data(self.process, upload),
                       layout.incoming_upload(self.process, upload))

    async def beat(self) -> float:
        """Say this process is alive; the heartbeat's time as the store records it."""
        path = layout.incoming_heartbeat(self.process)
        await self.backend.write_bytes(path, b"", durable=False)
        self._beating = True
        return (await self.backend.stat(path)).mtime

    async def sweep(self, now: float) -> list[str]:
        """Delete what processes whose heartbeat stopped left behind; the processes swept."""
        try:
            processes = await self.backend.list(layout.INCOMING)
        except PathNotFound:
            return []
        swept = []
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
        return swept

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
        """The background task: beat and sweep every HEARTBEAT_SECONDS (not while the registry is
        read-only: it takes no uploads, and its store may be read-only too), until cancelled."""
        try:
            while True:
                try:
                    swept = [] if read_only() else await self.sweep(await self.beat())
                    if swept:
                        log.warning("deleted the unfinished single-request uploads of %d stopped registry "
                                    "process(es)", len(swept))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # storage trouble: the next beat tries again
                    log.error("incoming uploads: heartbeat or sweep failed: %s", exc)
                await asyncio.sleep(HEARTBEAT_SECONDS)
        finally:  # requests are over by now (the server drains them first): nothing of ours is in flight
            await asyncio.shield(delete_quietly(self.backend, layout.incoming_process(self.process)))
