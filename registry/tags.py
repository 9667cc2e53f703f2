"""Tag listing, in lexical order with `n`/`last` pagination."""

from __future__ import annotations

from storage_backends import PathNotFound, StorageBackend

from . import layout
from .manifests import ManifestStore
from .pagination import Page


class TagStore:
    def __init__(self, backend: StorageBackend, manifests: ManifestStore) -> None:
        self.backend = backend
        self.manifests = manifests

    async def list(self, name: str, page: Page) -> tuple[list[str], str | None]:
        try:
            if page.n is None:
                tags = await self.backend.list(layout.tags_dir(name))
            else:  # one more than asked, to know whether a next page exists
                tags = await self.backend.list_after(layout.tags_dir(name), page.last, page.n + 1)
        except PathNotFound:
            tags = []
        if not tags:
            await self.manifests.check_has_manifests(name)
        return page.apply(tags)
