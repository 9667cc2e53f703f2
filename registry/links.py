"""Link files: a small file holding one digest, how repositories point into the blob store."""

from __future__ import annotations

from storage_backends import PathNotFound, StorageBackend

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
