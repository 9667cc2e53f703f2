"""The storage figures, computed in the background and kept for a while.

Sizes and sharing need a walk of the whole store (`registry du` and every manifest),
which at 100,000 manifests takes seconds: pages never do it themselves. They take the
last snapshot and, when it is due, start a new one in a thread of its own (on a
registry view with its own caches, so the event loop keeps serving). A snapshot is due
when it is older than MAX_AGE, or when this process took a push or a delete since it
was made; never sooner than MIN_INTERVAL seconds after the last walk, nor than ten times
its duration, so that walks take at most a tenth of the time. A page waits for a
walk that runs only as long as the last one took no more than WAIT seconds (small
stores look up to date at once; large ones show the last snapshot and its age).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field

from ..domain import Registry
from ..maintenance.usage import RepositoryUsage, UsageReport, disk_usage
from ..sharing import SharingReport, sharing

log = logging.getLogger("registry.ui")

MAX_AGE = 300.0
MIN_INTERVAL = 1.0
WAIT = 0.1


@dataclass
class Snapshot:
    usage: UsageReport
    sharing: SharingReport
    #: wall-clock time it was taken, and how long the walk took
    taken_at: float
    seconds: float
    by_name: dict[str, RepositoryUsage] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {u.name: u for u in self.usage.repositories}

    @property
    def linked_bytes(self) -> int:
        return self.usage.stored_bytes - self.usage.unlinked_bytes

    @property
    def saved_bytes(self) -> int:
        """What sharing saves: every image counted whole, less what their content takes stored once."""
        return max(0, self.sharing.images_bytes - self.linked_bytes)


async def take_snapshot(registry: Registry) -> Snapshot:
    started = time.monotonic()
    usage = await disk_usage(registry)
    shared = await sharing(registry)
    return Snapshot(usage, shared, time.time(), time.monotonic() - started)


class Snapshots:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.current: Snapshot | None = None
        self._running: asyncio.Future[Snapshot | None] | None = None
        self._dirty = False
        self._finished = 0.0  # monotonic time the last walk ended

    def changed(self) -> None:
        """The store changed through this process (a push or a delete)."""
        self._dirty = True

    def _due(self) -> bool:
        since = time.monotonic() - self._finished
        if self._finished and since < MIN_INTERVAL:
            return False  # failed walks are not retried at once either
        if self.current is None or since >= MAX_AGE:
            return True
        return self._dirty and since >= 10 * self.current.seconds

    async def get(self) -> Snapshot | None:
        if self._running is None and self._due():
            self._dirty = False
            self._running = asyncio.ensure_future(self._walk())
        running = self._running
        if running is not None and (self.current is None or self.current.seconds <= WAIT):
            try:
                await asyncio.wait_for(asyncio.shield(running), WAIT)
            except asyncio.TimeoutError:
                pass
        return self.current

    async def _walk(self) -> Snapshot | None:
        # a registry view of its own: its caches are not shared with the serving loop's
        view = Registry(self.registry.backend, self.registry.policy)
        result: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(asyncio.run(take_snapshot(view)))
            except BaseException as exc:
                result.set_exception(exc)

        # a daemon thread: a long walk never holds up the server's shutdown
        threading.Thread(target=run, name="ui-storage-snapshot", daemon=True).start()
        try:
            snapshot = await asyncio.wrap_future(result)
        except Exception:
            log.exception("storage snapshot for the web UI failed")
            return None
        finally:
            self._finished = time.monotonic()
            self._running = None
        self.current = snapshot
        log.info("storage snapshot for the web UI: %d repositories, %d blobs, %.2f s",
                 len(snapshot.usage.repositories), len(snapshot.sharing.blobs), snapshot.seconds)
        return snapshot
