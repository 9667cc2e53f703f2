"""Byte stores the registry keeps its content in."""

from .base import FileInfo, InvalidPath, PathNotFound, Piece, StorageBackend, StorageError, StorageFull, Writer
from .filesystem import FilesystemBackend
from .memory import MemoryBackend

__all__ = [
    "FileInfo",
    "FilesystemBackend",
    "InvalidPath",
    "MemoryBackend",
    "PathNotFound",
    "Piece",
    "StorageBackend",
    "StorageError",
    "StorageFull",
    "Writer",
]
