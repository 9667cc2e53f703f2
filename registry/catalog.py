"""The repository catalog (Docker's /v2/_catalog)."""

from __future__ import annotations

from storage_backends import PathNotFound, StorageBackend

from . import layout
from .pagination import Page


class Catalog:
    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend

    async def repositories(self) -> list[str]:
        """Every repository, sorted; a repository is a directory holding `_manifests`."""
        found: list[str] = []
        await self._walk("", found)
        return sorted(found)

    async def _walk(self, prefix: str, found: list[str]) -> None:
        path = f"{layout.REPOSITORIES}/{prefix}".rstrip("/")
        try:
            entries = await self.backend.list(path)
        except PathNotFound:
            return
        for entry in entries:
            if layout.is_repository_marker(entry):
                found.append(prefix.rstrip("/"))
            elif not layout.is_internal(entry):
                await self._walk(f"{prefix}{entry}/", found)

    async def page(self, page: Page) -> tuple[list[str], str | None]:
        return page.apply(await self.repositories())
