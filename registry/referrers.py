"""The OCI 1.1 referrers API: manifests whose `subject` is a given manifest."""

from __future__ import annotations

from typing import Any

from storage_backends import PathNotFound, StorageBackend

from . import layout
from .errors import RegistryError
from .manifests import ManifestStore
from .references import Digest


class ReferrerStore:
    def __init__(self, backend: StorageBackend, manifests: ManifestStore) -> None:
        self.backend = backend
        self.manifests = manifests

    async def list(self, name: str, subject: Digest, artifact_type: str | None) -> list[dict[str, Any]]:
        base = layout.referrers_dir(name, subject)
        descriptors = []
        for algorithm, hex_ in await self._entries(base):
            try:
                digest = Digest.parse(f"{algorithm}:{hex_}")
            except RegistryError:
                continue
            if not await self.manifests.exists(name, digest):
                continue  # deleted since; its entry goes with it
            descriptor = (await self.manifests.load(digest, name)).descriptor()
            if artifact_type is None or descriptor.get("artifactType") == artifact_type:
                descriptors.append(descriptor)
        return descriptors

    async def _entries(self, base: str) -> list[tuple[str, str]]:
        try:
            algorithms = await self.backend.list(base)
        except PathNotFound:
            return []
        entries = []
        for algorithm in algorithms:
            try:
                entries.extend((algorithm, hex_) for hex_ in await self.backend.list(f"{base}/{algorithm}"))
            except PathNotFound:
                continue
        return entries
