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


async def linking_repositories(backend: StorageBackend) -> list[str]:
    """Every repository that links anything: those in the catalog, and those whose first push has
    linked blobs but no manifest yet (what eviction and garbage collection must not overlook)."""
    found: set[str] = set()
    for marker in (layout.REPOSITORY_MARKER, layout.LAYERS_MARKER):
        found.update(await backend.find_dirs_containing(layout.REPOSITORIES, marker, skip=layout.is_internal))
    return sorted(found)
