"""The repository catalog (Docker's /v2/_catalog).

A repository is a directory holding `_manifests`, as Distribution decides.
Repositories come in the order the store keeps their keys in (`a-b` before
`a`, since '-' sorts before '/'), so that a page maps onto one bounded
listing, on S3 as on disk, and `last` resumes exactly where a page ended.
"""

from __future__ import annotations

from storage_backends import StorageBackend

from . import layout
from .pagination import Page


class Catalog:
    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend

    async def page(self, page: Page) -> tuple[list[str], str | None]:
        names = await self.backend.find_dirs_containing(
            layout.REPOSITORIES,
            layout.REPOSITORY_MARKER,
            start_after=page.last,
            limit=None if page.n is None else page.n + 1,
            skip=layout.is_internal,
        )
        return page.cut(names)
