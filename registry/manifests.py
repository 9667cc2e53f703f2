"""Manifests and indexes: validated on push, stored byte for byte, never re-serialized."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

from storage_backends import PathNotFound, StorageBackend

from . import layout
from .blobs import BlobStore
from .errors import RegistryError
from .links import delete_quietly, digests_under, read_link, write_link
from .references import Digest, check_tag, is_digest

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
#: manifests are immutable by digest, so their bytes can be cached without invalidation: this much
#: memory, counting each entry's bookkeeping (MANIFEST_ENTRY_BYTES) with its bytes
MANIFEST_CACHE_BYTES = 64 * 1024 * 1024
MANIFEST_ENTRY_BYTES = 512

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {OCI_INDEX, DOCKER_MANIFEST_LIST}


@dataclass(frozen=True)
class Manifest:
    digest: Digest
    media_type: str
    body: bytes
    parsed: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def document(self) -> dict[str, Any]:
        """The manifest's JSON: as parsed when it was pushed or read, else (the cache keeps bytes only,
        a parsed document takes several times their memory) parsed again."""
        return self.parsed if self.parsed is not None else _json_object(self.body)

    @property
    def subject(self) -> Digest | None:
        subject = self.document.get("subject")
        return Digest.parse(subject["digest"]) if isinstance(subject, dict) else None

    def descriptor(self) -> dict[str, Any]:
        """This manifest as a descriptor in a referrers index."""
        doc = self.document
        descriptor: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": len(self.body)}
        artifact_type = doc.get("artifactType")
        if not artifact_type and self.media_type in IMAGE_TYPES:
            artifact_type = doc.get("config", {}).get("mediaType")
        if artifact_type:
            descriptor["artifactType"] = artifact_type
        if doc.get("annotations"):
            descriptor["annotations"] = doc["annotations"]
        return descriptor


def parse_manifest(body: bytes, content_type: str | None, digest: Digest) -> Manifest:
    """Check a pushed manifest's form: JSON, schema version, media type, descriptors."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise RegistryError("MANIFEST_INVALID", f"manifest is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RegistryError("MANIFEST_INVALID", "manifest must be a JSON object")
    declared = document.get("mediaType")
    content_type = (content_type or "").split(";")[0].strip() or None
    if declared is not None and not isinstance(declared, str):
        raise RegistryError("MANIFEST_INVALID", "mediaType must be a string")
    if declared and content_type and declared != content_type:
        raise RegistryError(
            "MANIFEST_INVALID",
            f"Content-Type {content_type} does not match the manifest's mediaType {declared}",
        )
    media_type = declared or content_type or _guess_media_type(document)
    if media_type not in IMAGE_TYPES | INDEX_TYPES:
        raise RegistryError("MANIFEST_INVALID", f"unsupported manifest media type {media_type!r}")
    if document.get("schemaVersion") != 2:
        raise RegistryError("MANIFEST_INVALID", "schemaVersion must be 2")
    if media_type in IMAGE_TYPES:
        _check_descriptor(document.get("config"), "config")
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise RegistryError("MANIFEST_INVALID", "layers must be a list")
        for i, layer in enumerate(layers):
            _check_descriptor(layer, f"layers[{i}]")
    else:
        children = document.get("manifests")
        if not isinstance(children, list):
            raise RegistryError("MANIFEST_INVALID", "manifests must be a list")
        for i, child in enumerate(children):
            _check_descriptor(child, f"manifests[{i}]")
    if "subject" in document:
        _check_descriptor(document["subject"], "subject")
    return Manifest(digest, media_type, body, document)


def _guess_media_type(document: dict[str, Any]) -> str:
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document:
        return OCI_MANIFEST
    raise RegistryError("MANIFEST_INVALID", "manifest has no mediaType and no Content-Type")


def _check_descriptor(descriptor: Any, where: str) -> None:
    if not isinstance(descriptor, dict):
        raise RegistryError("MANIFEST_INVALID", f"{where} must be a descriptor object")
    if not isinstance(descriptor.get("mediaType"), str):
        raise RegistryError("MANIFEST_INVALID", f"{where}.mediaType must be a string")
    size = descriptor.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError("MANIFEST_INVALID", f"{where}.size must be a non-negative integer")
    try:
        Digest.parse(str(descriptor.get("digest")))
    except RegistryError as exc:
        raise RegistryError("MANIFEST_INVALID", f"{where}.digest: {exc.message}") from None


class ManifestStore:
    def __init__(self, backend: StorageBackend, blobs: BlobStore) -> None:
        self.backend = backend
        self.blobs = blobs
        self._cache: OrderedDict[Digest, Manifest] = OrderedDict()
        self._cache_bytes = 0

    async def put(
        self, name: str, reference: str, body: bytes, content_type: str | None, extra_tags: Sequence[str] = (),
        check_references: bool = True,
    ) -> Manifest:
        """Store a manifest by tag or digest; by digest it may also get `extra_tags` (the `?tag=` parameters)."""
        if len(body) > MAX_MANIFEST_SIZE:
            raise RegistryError(
                "MANIFEST_TOO_LARGE", f"manifest is {len(body)} bytes, the limit is {MAX_MANIFEST_SIZE}"
            )
        if is_digest(reference):
            expected = Digest.parse(reference)
            digest = Digest.of(body, expected.algorithm)
            if digest != expected:
                raise RegistryError(
                    "DIGEST_INVALID",
                    f"manifest digest {digest} does not match reference {expected}",
                    {"expected": str(expected), "computed": str(digest)},
                )
            tags = [check_tag(t) for t in extra_tags]
        else:
            tags = [check_tag(reference)]
            digest = Digest.of(body)
        manifest = parse_manifest(body, content_type, digest)
        if check_references:  # a mirror caches a manifest before the blobs it names
            await self._check_references(name, manifest)

        data = layout.blob_data(digest)
        if not await self.backend.exists(data):
            await self.backend.write_bytes(data, body)
        await write_link(self.backend, layout.revision_link(name, digest), digest)
        subject = manifest.subject
        if subject is not None:
            await write_link(self.backend, layout.referrer_link(name, subject, digest), digest)
        for tag in tags:
            await write_link(self.backend, layout.tag_index_link(name, tag, digest), digest)
            await write_link(self.backend, layout.tag_current_link(name, tag), digest)
        self._remember(manifest)
        return manifest

    async def _check_references(self, name: str, manifest: Manifest) -> None:
        doc = manifest.document
        missing: list[str] = []
        if manifest.media_type in IMAGE_TYPES:
            for descriptor in [doc["config"], *doc["layers"]]:
                if descriptor.get("urls"):
                    continue  # non-distributable layer, fetched by clients from its URLs
                digest = Digest.parse(descriptor["digest"])
                if not await self.blobs.is_linked(name, digest):
                    missing.append(str(digest))
        else:
            for child in doc["manifests"]:
                digest = Digest.parse(child["digest"])
                if not await self.exists(name, digest):
                    missing.append(str(digest))
        if missing:
            raise RegistryError(
                "MANIFEST_BLOB_UNKNOWN",
                f"manifest references {len(missing)} unknown blob(s) or manifest(s): {', '.join(missing[:5])}",
                {"missing": missing},
            )

    async def exists(self, name: str, digest: Digest) -> bool:
        return await read_link(self.backend, layout.revision_link(name, digest)) == digest

    async def resolve(self, name: str, reference: str) -> Digest:
        if is_digest(reference):
            digest = Digest.parse(reference)
            if await self.exists(name, digest):
                return digest
        else:
            check_tag(reference)
            digest = await read_link(self.backend, layout.tag_current_link(name, reference))
            if digest is not None and await self.exists(name, digest):
                return digest
        await self.check_repository(name)
        raise RegistryError("MANIFEST_UNKNOWN", f"manifest {reference} unknown to repository {name}")

    async def tag_written_at(self, name: str, tag: str) -> float | None:
        """When the tag was last set (or confirmed by a mirror); None for no such tag."""
        try:
            return (await self.backend.stat(layout.tag_current_link(name, tag))).mtime
        except PathNotFound:
            return None

    async def confirm_tag(self, name: str, tag: str, digest: Digest) -> None:
        await write_link(self.backend, layout.tag_current_link(name, tag), digest)

    async def check_repository(self, name: str) -> None:
        if not await self.backend.exists(layout.manifests_dir(name)):
            raise RegistryError("NAME_UNKNOWN", f"repository {name} not known to registry", {"name": name})

    async def get(self, name: str, reference: str) -> Manifest:
        digest = await self.resolve(name, reference)
        return await self.load(digest)

    async def load(self, digest: Digest) -> Manifest:
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        try:
            body = await self.backend.read_bytes(layout.blob_data(digest))
        except PathNotFound:
            raise RegistryError("MANIFEST_UNKNOWN", f"manifest {digest} is linked but its data is missing") from None
        document = _json_object(body)
        manifest = Manifest(digest, document.get("mediaType") or _stored_media_type(document), body, document)
        self._remember(manifest)
        return manifest

    async def references(self, digest: Digest) -> list[str] | None:
        """The digests a stored manifest names, as written (an image's config and layers, an index's
        child manifests; not checked: the caller parses what it needs); None when its data is gone.
        Read past the cache, so that reading every manifest (garbage collection) neither fills it
        nor pushes out the manifests being served."""
        cached = self._cache.get(digest)
        if cached is not None:
            document, media_type = cached.document, cached.media_type
        else:
            try:
                body = await self.backend.read_bytes(layout.blob_data(digest))
            except PathNotFound:
                return None
            document = _json_object(body)
            media_type = document.get("mediaType") or _stored_media_type(document)
        if media_type in IMAGE_TYPES:
            descriptors = [document.get("config"), *_list(document.get("layers"))]
        elif media_type in INDEX_TYPES:
            descriptors = _list(document.get("manifests"))
        else:
            return []
        return [d["digest"] for d in descriptors if isinstance(d, dict) and isinstance(d.get("digest"), str)]

    def _remember(self, manifest: Manifest) -> None:
        if manifest.digest in self._cache:
            return
        self._cache[manifest.digest] = Manifest(manifest.digest, manifest.media_type, manifest.body)
        self._cache_bytes += len(manifest.body) + MANIFEST_ENTRY_BYTES
        while self._cache_bytes > MANIFEST_CACHE_BYTES:
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= len(evicted.body) + MANIFEST_ENTRY_BYTES

    async def delete(self, name: str, reference: str) -> None:
        """By digest: remove the manifest, every tag on it and its referrer entry. By tag: untag."""
        if not is_digest(reference):
            check_tag(reference)
            if await read_link(self.backend, layout.tag_current_link(name, reference)) is None:
                await self.check_repository(name)
                raise RegistryError("MANIFEST_UNKNOWN", f"tag {reference} unknown to repository {name}")
            await delete_quietly(self.backend, layout.tag_dir(name, reference))
            return
        digest = await self.resolve(name, reference)
        manifest = await self.load(digest)
        for tag in await self.tags_of(name, digest):
            await delete_quietly(self.backend, layout.tag_dir(name, tag))
        subject = manifest.subject
        if subject is not None:
            await delete_quietly(self.backend, layout.referrer_link(name, subject, digest).rsplit("/", 1)[0])
        await delete_quietly(self.backend, layout.revision_link(name, digest).rsplit("/", 1)[0])

    async def tags_of(self, name: str, digest: Digest) -> list[str]:
        try:
            tags = await self.backend.list(layout.tags_dir(name))
        except PathNotFound:
            return []
        return [t for t in tags if await read_link(self.backend, layout.tag_current_link(name, t)) == digest]


    # -- for the mirror's cache eviction ---------------------------------------------------------

    async def revisions(self, name: str) -> list[Digest]:
        """Every manifest the repository holds, whether or not its data is stored."""
        return await digests_under(self.backend, layout.revisions_dir(name))

    async def revision_written_at(self, name: str, digest: Digest) -> float | None:
        try:
            return (await self.backend.stat(layout.revision_link(name, digest))).mtime
        except PathNotFound:
            return None

    async def tag_targets(self, name: str) -> list[tuple[str, Digest | None, float]]:
        """(tag, the manifest it points at, when it was set or last confirmed) for every tag."""
        try:
            tags = await self.backend.list(layout.tags_dir(name))
        except PathNotFound:
            return []
        found = []
        for tag in tags:
            written = await self.tag_written_at(name, tag)
            if written is None:
                continue
            try:
                target = await read_link(self.backend, layout.tag_current_link(name, tag))
            except RegistryError:  # not a digest: the tag points at nothing
                target = None
            found.append((tag, target, written))
        return found

    async def forget(self, name: str, digest: Digest | None, tags: Sequence[str]) -> None:
        """Drop tags and the manifest they point at (with its referrer entry) from a repository,
        tolerating pieces already gone; the manifest's data stays."""
        for tag in tags:
            await delete_quietly(self.backend, layout.tag_dir(name, tag))
        if digest is None:
            return
        try:
            subject = (await self.load(digest)).subject
        except (RegistryError, KeyError, TypeError):  # data gone, or a subject we cannot read
            subject = None
        if subject is not None:
            await delete_quietly(self.backend, layout.referrer_link(name, subject, digest).rsplit("/", 1)[0])
        await delete_quietly(self.backend, layout.revision_link(name, digest).rsplit("/", 1)[0])
        # a tag set on it meanwhile would point at nothing (and a mirror would serve it as unknown)
        for tag in await self.tags_of(name, digest):
            await delete_quietly(self.backend, layout.tag_dir(name, tag))


def _json_object(body: bytes) -> dict[str, Any]:
    """A stored manifest was validated on push, but may come from another registry's data."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _stored_media_type(document: dict[str, Any]) -> str:
    try:
        return _guess_media_type(document)
    except RegistryError:
        return OCI_MANIFEST
