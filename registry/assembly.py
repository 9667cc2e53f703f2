"""From checked settings to the parts of a running registry: the storage backend, the domain,
authentication, the mirror, the background tasks and the aiohttp application.

A file or directory the configuration names that cannot be used (a storage directory that is a
file, an unreadable htpasswd file, a missing key) is a ConfigError here, with one line naming the
key and the file, before the server listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from storage_backends import FilesystemBackend, MemoryBackend, StorageBackend
from storage_backends.s3 import S3Backend, S3Settings

from . import events, layout
from .api.app import create_app
from .auth.guard import Guard
from .auth.setup import AuthSetupError, build_auth
from .config import ConfigError, Settings, schema
from .domain import Policy, Registry
from .maintenance.gc import GarbageCollector, collect_forever
from .maintenance.purging import purge_forever
from .maintenance.retention import RetentionPolicy
from .mirror.config import upstreams_from_settings
from .mirror.eviction import CacheEvictor, evict_forever
from .mirror.service import Mirror
from .observability import server as observability
from .observability.storage import MeteredBackend


def open_backend(storage: schema.Storage, create: bool = True) -> tuple[StorageBackend, str]:
    """The configured backend and where it stores. create=False (the maintenance commands) refuses
    a filesystem root that holds no registry, rather than make an empty one and report on it."""
    if storage.inmemory is not None:
        return MemoryBackend(), "memory"
    if storage.s3 is not None:
        return _s3_backend(storage.s3, redirect=not storage.redirect.disable)
    assert storage.filesystem is not None  # the schema names filesystem when no driver is given
    root = os.path.abspath(storage.filesystem.rootdirectory)
    if not create and not os.path.isdir(os.path.join(root, layout.ROOT)):
        raise ConfigError(f"no registry storage in {root}: give its directory with --root, "
                           "or its config with --config")
    if os.path.exists(root) and not os.path.isdir(root):
        raise ConfigError(f"storage.filesystem.rootdirectory {root} is a file, not a directory")
    try:
        backend = FilesystemBackend(root, fsync=storage.filesystem.fsync)
        if create:
            _check_writable(root)
    except OSError as exc:
        raise ConfigError(f"storage.filesystem.rootdirectory {root}: {exc.strerror or exc}") from None
    return backend, root


def _check_writable(root: str) -> None:
    with tempfile.NamedTemporaryFile(dir=root, prefix=".tmp-startup-"):
        pass


def _s3_backend(s3: schema.S3, redirect: bool) -> tuple[StorageBackend, str]:
    secret = s3.secretkey.get_secret_value() if s3.secretkey else None
    token = s3.sessiontoken.get_secret_value() if s3.sessiontoken else None
    settings = S3Settings(
        bucket=s3.bucket, region=s3.region, regionendpoint=s3.regionendpoint, forcepathstyle=s3.forcepathstyle,
        accesskey=s3.accesskey, secretkey=secret, sessiontoken=token, rootdirectory=s3.rootdirectory,
        chunksize=s3.chunksize, secure=s3.secure, skipverify=s3.skipverify, encrypt=s3.encrypt, keyid=s3.keyid,
        storageclass=s3.storageclass, redirect=redirect, max_threads=s3.max_threads,
        max_attempts=s3.max_attempts, timeout=s3.timeout,
    )
    where = f"s3://{settings.bucket}/{settings.rootdirectory}"
    return S3Backend(settings), where + (f" at {settings.regionendpoint}" if settings.regionendpoint else "")


def build_registry(settings: Settings, create: bool = True,
                   traced: Callable[[Any, str, str], Any] | None = None) -> tuple[Registry, str]:
    """traced: see MeteredBackend (a span per storage action)."""
    backend, where = open_backend(settings.storage, create)
    policy = Policy(delete_enabled=settings.storage.delete.enabled,
                    read_only=settings.storage.maintenance.readonly.enabled)
    return Registry(MeteredBackend(backend, traced), policy), where


@dataclass
class Assembly:
    """A registry ready to serve: its application and what the startup line reports."""

    app: web.Application
    registry: Registry
    where: str
    guard: Guard | None
    mirror: Mirror | None


def assemble(settings: Settings) -> Assembly:
    tracing = observability.start_tracing(settings.tracing)
    registry, where = build_registry(settings, traced=tracing.storage_timer if tracing else None)
    data_dir = where if settings.storage.driver == "filesystem" else "."
    try:
        guard, token_service = build_auth(settings.auth, data_dir)
    except AuthSetupError as exc:
        raise ConfigError(str(exc)) from None
    upstreams = upstreams_from_settings(settings.proxy)
    if tracing is not None:
        for upstream in upstreams:
            upstream.trace_configs.append(tracing.client_trace_config())
    mirror = Mirror(registry, upstreams) if upstreams else None
    app = create_app(registry, base_url=settings.http.host, guard=guard, token_service=token_service,
                     mirror=mirror, headers=settings.http.headers, ui_enabled=settings.ui.enabled,
                     secret=settings.http.secret.get_secret_value() if settings.http.secret else None,
                     manifest_memory=settings.http.limits.manifestmemory)
    observability.setup(app, settings, registry, tracing)
    events.setup(app, settings, data_dir)
    for task in _background_tasks(settings, registry, mirror):
        app.cleanup_ctx.append(task)
    return Assembly(app, registry, where, guard, mirror)


Task = Callable[[web.Application], AsyncIterator[None]]


def _background_tasks(settings: Settings, registry: Registry, mirror: Mirror | None) -> list[Task]:
    read_only = lambda: registry.policy.read_only  # noqa: E731
    tasks: list[Task] = [_background(partial(registry.uploads.incoming.run_forever, read_only))]
    purging = settings.storage.maintenance.uploadpurging
    if purging.enabled:
        tasks.append(_background(partial(purge_forever, registry.backend, purging.age, purging.interval,
                                         purging.dryrun)))
    if mirror is not None and settings.proxy is not None and settings.proxy.cache is not None:
        tasks.append(_background(partial(evict_forever, CacheEvictor(mirror, settings.proxy.cache))))
    gc = settings.storage.gc
    if gc.enabled:
        retention = RetentionPolicy.from_settings(settings.storage.retention)
        collector = GarbageCollector(registry, gc.grace, gc.deleteuntagged)
        before = partial(retention.apply_logged, registry) if retention.rules else None
        tasks.append(_background(partial(collect_forever, collector, gc.interval, before)))
    return tasks


def _background(start: Callable[[], Coroutine[Any, Any, None]]) -> Task:
    """A coroutine that runs while the server does, as an application cleanup context."""

    async def context(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(start())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context
