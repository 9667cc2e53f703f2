"""Upload purging: abandoned uploads older than an age are removed, on every backend.

Configured as Distribution's `storage.maintenance.uploadpurging` (enabled, age,
interval, dryrun). Any replica may run it: an upload counts as abandoned by its
`startedat` time, which lives in the store, and deleting one twice is harmless.
"""

from __future__ import annotations

import datetime
import logging
import re
import time
from dataclasses import dataclass, field

from storage_backends import PathNotFound, StorageBackend

from .. import layout
from ..links import delete_quietly
from ..observability.metrics import PURGE_LAST_SUCCESS, PURGE_RUNS, PURGED_UPLOADS
from ..periodic import run_every

log = logging.getLogger("registry.purging")
_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass
class PurgeReport:
    uploads: list[str] = field(default_factory=list)
    incomplete_multipart: int = 0


def _started_at(raw: bytes) -> float | None:
    """Distribution writes RFC 3339 with nanoseconds; Python reads microseconds."""
    text = _FRACTION.sub(r"\1", raw.decode("ascii", "replace").strip()).replace("Z", "+00:00")
    try:
        started = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=datetime.timezone.utc)
    return started.timestamp()


async def purge_uploads(backend: StorageBackend, age: float, dry_run: bool = False) -> PurgeReport:
    report = PurgeReport()
    cutoff = time.time() - age
    repositories = await backend.find_dirs_containing(layout.REPOSITORIES, layout.UPLOADS_MARKER,
                                                      skip=layout.is_internal)
    for name in repositories:
        try:
            upload_ids = await backend.list(layout.uploads_dir(name))
        except PathNotFound:
            continue
        for upload_id in upload_ids:
            if await _older_than(backend, name, upload_id, cutoff):
                report.uploads.append(f"{name}/{upload_id}")
                if not dry_run:
                    await delete_quietly(backend, layout.upload_dir(name, upload_id))
    report.incomplete_multipart = await backend.purge_incomplete(age, dry_run)
    return report


async def _older_than(backend: StorageBackend, name: str, upload_id: str, cutoff: float) -> bool:
    try:
        started = _started_at(await backend.read_bytes(layout.upload_started_at(name, upload_id)))
        if started is None:  # unreadable: judge by when the file was written
            started = (await backend.stat(layout.upload_started_at(name, upload_id))).mtime
    except PathNotFound:
        try:  # no startedat at all: judge by the upload's data
            started = (await backend.stat(layout.upload_data(name, upload_id))).mtime
        except PathNotFound:
            return False
    return started < cutoff


async def purge_forever(backend: StorageBackend, age: float, interval: float, dry_run: bool) -> None:
    """The background task (see run_every)."""

    async def purge() -> None:
        report = await purge_uploads(backend, age, dry_run)
        if report.uploads or report.incomplete_multipart:
            verb = "would purge" if dry_run else "purged"
            log.warning("%s %d abandoned upload(s) and %d incomplete multipart upload(s)", verb,
                        len(report.uploads), report.incomplete_multipart)
        if not dry_run:
            PURGED_UPLOADS.inc(len(report.uploads) + report.incomplete_multipart)

    await run_every(interval, purge, "upload purging", log, (PURGE_RUNS, PURGE_LAST_SUCCESS))
