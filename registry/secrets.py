"""Secrets generated once and kept in the store, so that every replica on it uses the same one."""

from __future__ import annotations

import secrets

from storage_backends import PathNotFound, StorageBackend

from . import layout

SECRET_BYTES = 32


async def shared_secret(backend: StorageBackend, name: str) -> bytes:
    """The secret called name, generated and stored on first use.

    Two replicas starting at the same moment may both generate one: the last write wins
    in the store and both read it back, so they agree unless a read overtakes the other's
    write. A caller whose check fails with the secret it holds reads it again (`reread`).
    """
    try:
        return await reread(backend, name)
    except PathNotFound:
        pass
    await backend.write_bytes(layout.secret_file(name), secrets.token_hex(SECRET_BYTES).encode())
    return await reread(backend, name)


async def reread(backend: StorageBackend, name: str) -> bytes:
    """The stored secret; PathNotFound when there is none yet."""
    return (await backend.read_bytes(layout.secret_file(name))).strip()
