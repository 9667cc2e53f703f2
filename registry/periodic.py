"""Background jobs that run every `interval` while the server does: garbage collection, upload
purging and the mirror's cache eviction."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable

from prometheus_client import Counter, Gauge

from .observability.metrics import record_run

#: the first run waits a random part of the interval, at most this long (as Distribution's purging does)
MAX_START_DELAY = 3600.0


async def run_every(interval: float, job: Callable[[], Awaitable[None]], what: str, log: logging.Logger,
                    runs: tuple[Counter, Gauge] | None = None) -> None:
    """job, then `interval` of sleep, until cancelled. The first run waits a random part of the
    interval, so that replicas started together do not all walk the store at once. A failed run is
    logged and the next one tries again; with `runs` (a runs counter and a last-success gauge) each
    run is counted by its result."""
    await asyncio.sleep(random.uniform(0, min(interval, MAX_START_DELAY)))
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            if runs is not None:
                record_run(*runs, ok=False)
            log.exception("%s failed; trying again in %.0fs", what, interval)
        else:
            if runs is not None:
                record_run(*runs, ok=True)
        await asyncio.sleep(interval)
