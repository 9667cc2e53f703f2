"""Link files: a small file holding one digest, how repositories point into the blob store."""

from __future__ import annotations

from storage_backends import PathNotFound, StorageBackend

from . import layout
from .errors import RegistryError
from .references import Digest


async def read_link(backend: StorageBackend, path: str) -> Digest | None:
    try:
        raw = await backend.read_bytes(path)
    except PathNotFound:
        return None
    return Digest.parse(raw.decode("ascii", "replace").strip())


async def write_link(backend: StorageBackend, path: str, digest: Digest) -> None:
    await backend.write_bytes(path, str(digest).encode())


async def delete_quietly(backend: StorageBackend, path: str) -> bool:
    """Delete path; False when it was already gone (a concurrent delete won)."""
    try:
        await backend.delete(path)
    except PathNotFound:
        return False
    return True


async def _names(backend: StorageBackend, path: str) -> list[str]:
    """A directory's entries; none when it went (a concurrent delete) or never was."""
    try:
        return await backend.list(path)
    except PathNotFound:
        return []


def _digests(algorithm: str, hexes: list[str]) -> list[Digest]:
    found = []
    for hex_ in hexes:
        try:
            found.append(Digest.parse(f"{algorithm}:{hex_}"))
        except RegistryError:
            continue  # not a digest: nothing of ours
    return found


async def digests_under(backend: StorageBackend, base: str) -> list[Digest]:
    """The digests named by the `<alg>/<hex>` entries under base (none if base is absent).

    For link directories the names are read, not the link files: a directory counts as a
    link even while its file is being rewritten, which errs on the side of keeping data.
    """
    found = []
    for algorithm in await _names(backend, base):
        found += _digests(algorithm, await _names(backend, f"{base}/{algorithm}"))
    return found


async def stored_digests(backend: StorageBackend) -> list[Digest]:
    """Every digest with a directory in the blob store (`blobs/<alg>/<hh>/<hex>`), data or not."""
    found = []
    for algorithm in await _names(backend, layout.BLOBS):
        for prefix in await _names(backend, f"{layout.BLOBS}/{algorithm}"):
            found += _digests(algorithm, await _names(backend, f"{layout.BLOBS}/{algorithm}/{prefix}"))
    return found
