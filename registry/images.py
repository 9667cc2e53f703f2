"""What a manifest is to a person: image, index or artifact, its platforms, its size, its config.

Manifests are read through the manifest store (cached by digest) and image configs
through the blob store; both are immutable by digest, so configs are cached too.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .blobs import BlobStore
from .errors import RegistryError
from .manifests import IMAGE_TYPES, INDEX_TYPES, Manifest, ManifestStore
from .references import Digest

IMAGE_CONFIG_TYPES = frozenset({"application/vnd.oci.image.config.v1+json",
                                "application/vnd.docker.container.image.v1+json"})
#: a config larger than this is not read (a real one is a few KiB; history makes some larger)
MAX_CONFIG_SIZE = 4 * 1024 * 1024
#: configs remembered by digest, counted by their size as stored (parsed, one takes a few times that) plus
#: CONFIG_ENTRY_BYTES each: the UI shows the same images' configs again and again
CONFIG_CACHE_BYTES = 16 * 1024 * 1024
CONFIG_ENTRY_BYTES = 512


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def of(cls, raw: Any) -> "Platform | None":
        if not isinstance(raw, dict) or not raw.get("os") or not raw.get("architecture"):
            return None
        return cls(str(raw["os"]), str(raw["architecture"]), str(raw.get("variant") or ""))

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


@dataclass
class Summary:
    """kind is "image", "index" or "artifact"; size is what pulling it downloads besides the
    manifests: config and layers (of every platform, for an index)."""

    kind: str
    size: int
    platforms: list[str] = field(default_factory=list)
    artifact_type: str | None = None


def kind_of(manifest: Manifest) -> str:
    if manifest.media_type in INDEX_TYPES:
        return "index"
    config_type = (manifest.document.get("config") or {}).get("mediaType")
    if manifest.document.get("artifactType") or config_type not in IMAGE_CONFIG_TYPES:
        return "artifact"
    return "image"


def artifact_type(manifest: Manifest) -> str | None:
    return manifest.descriptor().get("artifactType")


def blob_descriptors(manifest: Manifest) -> list[dict[str, Any]]:
    """The config and layers an image manifest references (none for an index)."""
    if manifest.media_type not in IMAGE_TYPES:
        return []
    return [manifest.document["config"], *manifest.document["layers"]]


def child_descriptors(manifest: Manifest) -> list[dict[str, Any]]:
    """The manifests an index references (none for an image)."""
    return list(manifest.document.get("manifests") or []) if manifest.media_type in INDEX_TYPES else []


class ImageReader:
    def __init__(self, manifests: ManifestStore, blobs: BlobStore) -> None:
        self.manifests = manifests
        self.blobs = blobs
        self._configs: OrderedDict[Digest, tuple[dict[str, Any], int]] = OrderedDict()
        self._configs_bytes = 0

    async def config(self, manifest: Manifest) -> dict[str, Any]:
        """An image's config document; empty for an artifact, an index, or a config not stored."""
        if kind_of(manifest) != "image":
            return {}
        digest = Digest.parse(manifest.document["config"]["digest"])
        cached = self._configs.get(digest)
        if cached is not None:
            self._configs.move_to_end(digest)
            return cached[0]
        raw = await self.blobs.read_small(digest, MAX_CONFIG_SIZE)
        try:
            document = json.loads(raw) if raw is not None else {}
        except (ValueError, UnicodeDecodeError, RecursionError):
            document = {}
        if not isinstance(document, dict):
            document = {}
        if raw is not None and digest not in self._configs:
            cost = len(raw) + CONFIG_ENTRY_BYTES
            self._configs[digest] = (document, cost)
            self._configs_bytes += cost
            while self._configs_bytes > CONFIG_CACHE_BYTES:
                _, (_, evicted) = self._configs.popitem(last=False)
                self._configs_bytes -= evicted
        return document

    async def child(self, descriptor: dict[str, Any]) -> Manifest | None:
        """A manifest an index names, when it is stored."""
        try:
            return await self.manifests.load(Digest.parse(str(descriptor.get("digest"))))
        except RegistryError:
            return None

    async def summary(self, manifest: Manifest) -> Summary:
        kind = kind_of(manifest)
        if kind != "index":
            size = sum(int(d.get("size", 0)) for d in blob_descriptors(manifest))
            platform = Platform.of(await self.config(manifest)) if kind == "image" else None
            return Summary(kind, size, [str(platform)] if platform else [],
                           artifact_type(manifest) if kind == "artifact" else None)
        size = 0
        platforms = []
        for descriptor in child_descriptors(manifest):
            platform = Platform.of(descriptor.get("platform"))
            if platform is not None:
                platforms.append(str(platform))
            child = await self.child(descriptor)
            if child is not None and child.media_type in IMAGE_TYPES:
                size += sum(int(d.get("size", 0)) for d in blob_descriptors(child))
        return Summary(kind, size, platforms, manifest.document.get("artifactType"))
