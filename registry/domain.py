"""The registry's domain: every service over one storage backend, and the policy switches."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from storage_backends import StorageBackend, StorageError

from . import layout
from .blobs import BlobStore
from .catalog import Catalog
from .errors import RegistryError
from .images import ImageReader
from .manifests import ManifestStore
from .referrers import ReferrerStore
from .tags import TagStore
from .uploads import UploadStore


@dataclass
class Policy:
    delete_enabled: bool = True
    read_only: bool = False


class Registry:
    def __init__(self, backend: StorageBackend, policy: Policy | None = None) -> None:
        self.backend = backend
        self.policy = policy or Policy()
        self.blobs = BlobStore(backend)
        self.uploads = UploadStore(backend, self.blobs)
        self.manifests = ManifestStore(backend, self.blobs)
        self.tags = TagStore(backend, self.manifests)
        self.referrers = ReferrerStore(backend, self.manifests)
        self.catalog = Catalog(backend)
        self.images = ImageReader(self.manifests, self.blobs)

    def check_writable(self) -> None:
        if self.policy.read_only:
            raise RegistryError("UNSUPPORTED", "the registry is in read-only mode")

    def check_deletable(self) -> None:
        self.check_writable()
        if not self.policy.delete_enabled:
            raise RegistryError("UNSUPPORTED", "deletes are disabled on this registry (storage.delete.enabled)")

    async def probe_storage(self, instance: str) -> None:
        """Raise StorageError unless the store answers and takes writes: a small object of this
        instance's is written, read back and deleted (in read-only mode, only read)."""
        if self.policy.read_only:
            await self.backend.exists(layout.ROOT)
            return
        path = layout.health_probe(instance)
        token = os.urandom(16).hex().encode()
        try:
            # not flushed to disk: a probe asks whether the store answers, and an fsync waits behind
            # every other writer's dirty data (seconds while large pushes land)
            await self.backend.write_bytes(path, token, durable=False)
            if await self.backend.read_bytes(path) != token:
                raise StorageError(f"{path} read back other bytes than were written")
        finally:  # also when the probe is given up on (a timeout): leave nothing behind
            with contextlib.suppress(StorageError, OSError):
                await self.backend.delete(path)

    async def remove_probe(self, instance: str) -> None:
        """Delete this instance's probe object, if any: a write given up on after a timeout may still
        have landed after its delete (S3 calls run on in their threads)."""
        if self.policy.read_only:
            return
        with contextlib.suppress(StorageError, OSError):
            await self.backend.delete(layout.health_probe(instance))

    async def close(self) -> None:
        await self.backend.close()
