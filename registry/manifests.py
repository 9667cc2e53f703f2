"""Manifests and indexes: validated on push, stored byte for byte, never re-serialized."""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from storage_backends import PathNotFound, StorageBackend

from . import layout
from .blobs import BlobStore
from .client_json import parse_json
from .errors import RegistryError
from .links import delete_quietly, digests_under, read_link, write_link
from .references import Digest, check_tag, is_digest

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
#: references checked at once: a manifest may name tens of thousands, each a link to read (a request, on
#: S3); batches run S3's lookups side by side and give the event loop a turn between them
REFERENCE_BATCH = 64
#: a manifest naming unknown content is refused with at most this many of them listed (and looked for)
MAX_MISSING_LISTED = 100
#: manifests at least this big are hashed and parsed in a worker thread, one at a time: parsing holds
#: Python's GIL, and the event loop keeps its turns only while few threads compete for it
OFF_LOOP_BYTES = 256 * 1024
#: manifests are immutable by digest, so their bytes can be cached without invalidation: this much
#: memory, counting each entry's bookkeeping (MANIFEST_ENTRY_BYTES) with its bytes
MANIFEST_CACHE_BYTES = 64 * 1024 * 1024
MANIFEST_ENTRY_BYTES = 512

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
#: a media type as the OCI image spec's descriptor schema writes RFC 6838
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
#: an absolute URI (RFC 3986: a scheme, then no whitespace)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
MAX_BLOB_SIZE = 2**63 - 1
INDEX_TYPES = {OCI_INDEX, DOCKER_MANIFEST_LIST}


@dataclass(frozen=True)
class Manifest:
    digest: Digest
    media_type: str
    body: bytes
    parsed: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    #: what a pushed manifest names and the repository must hold (empty for one loaded from the store)
    references: tuple[Digest, ...] = field(default=(), repr=False, compare=False)
    #: the document declares no mediaType: the type it was pushed with may be kept beside it
    untyped: bool = field(default=False, repr=False, compare=False)

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
        document = parse_json(body)
    except ValueError as exc:
        raise RegistryError("MANIFEST_INVALID", f"manifest is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RegistryError("MANIFEST_INVALID", "manifest must be a JSON object")
    declared = document.get("mediaType")
    content_type = (content_type or "").split(";")[0].strip() or None
    if "mediaType" in document and not isinstance(declared, str):  # null too
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
    references: dict[Digest, None] = {}  # in order, each once
    if media_type in IMAGE_TYPES:
        config = _check_descriptor(document.get("config"), "config")
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise RegistryError("MANIFEST_INVALID", "layers must be a list")
        references[config] = None
        for i, layer in enumerate(layers):
            digest_of_layer = _check_descriptor(layer, f"layers[{i}]")
            if not layer.get("urls"):  # a non-distributable layer is fetched by clients from its URLs
                references[digest_of_layer] = None
    else:
        children = document.get("manifests")
        if not isinstance(children, list):
            raise RegistryError("MANIFEST_INVALID", "manifests must be a list")
        for i, child in enumerate(children):
            references[_check_descriptor(child, f"manifests[{i}]")] = None
            if "platform" in child:
                _check_platform(child["platform"], f"manifests[{i}].platform")
    if "subject" in document:
        _check_descriptor(document["subject"], "subject")
    _check_optional_fields(document, "manifest")
    return Manifest(digest, media_type, body, document, tuple(references), untyped=not declared)


def _guess_media_type(document: dict[str, Any]) -> str:
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document:
        return OCI_MANIFEST
    raise RegistryError("MANIFEST_INVALID", "manifest has no mediaType and no Content-Type")


def _check_descriptor(descriptor: Any, where: str) -> Digest:
    """The OCI image spec's content descriptor, and its digest; `urls` matter most, since layers with
    them need no blob here."""
    if not isinstance(descriptor, dict):
        raise RegistryError("MANIFEST_INVALID", f"{where} must be a descriptor object")
    _check_media_type(descriptor.get("mediaType"), f"{where}.mediaType")
    size = descriptor.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
        raise RegistryError("MANIFEST_INVALID", f"{where}.size must be an integer from 0 to {MAX_BLOB_SIZE}")
    try:
        digest = Digest.parse(str(descriptor.get("digest")))
    except RegistryError as exc:
        raise RegistryError("MANIFEST_INVALID", f"{where}.digest: {exc.message}") from None
    if "urls" in descriptor:
        urls = descriptor["urls"]
        if not isinstance(urls, list) or not all(isinstance(u, str) and _URI.fullmatch(u) for u in urls):
            raise RegistryError("MANIFEST_INVALID", f"{where}.urls must be a list of absolute URLs")
    if "data" in descriptor and not isinstance(descriptor["data"], str):
        raise RegistryError("MANIFEST_INVALID", f"{where}.data must be a base64 string")
    _check_optional_fields(descriptor, where)
    return digest


def _check_optional_fields(document: dict[str, Any], where: str) -> None:
    """artifactType and annotations, which manifests, indexes and descriptors all may have."""
    if "artifactType" in document:
        _check_media_type(document["artifactType"], f"{where}.artifactType")
    annotations = document.get("annotations", {})
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise RegistryError("MANIFEST_INVALID", f"{where}.annotations must map strings to strings")


def _check_media_type(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _MEDIA_TYPE.fullmatch(value):
        raise RegistryError("MANIFEST_INVALID", f"{where} must be a media type (type/subtype)")


def _check_platform(platform: Any, where: str) -> None:
    if not isinstance(platform, dict) or not all(isinstance(platform.get(k), str) for k in ("architecture", "os")):
        raise RegistryError("MANIFEST_INVALID", f"{where} must be an object with architecture and os")
    for key in ("os.version", "variant"):
        if key in platform and not isinstance(platform[key], str):
            raise RegistryError("MANIFEST_INVALID", f"{where}.{key} must be a string")
    for key in ("os.features", "features"):
        if key in platform and not (isinstance(platform[key], list) and all(isinstance(f, str) for f in platform[key])):
            raise RegistryError("MANIFEST_INVALID", f"{where}.{key} must be a list of strings")


class ManifestStore:
    def __init__(self, backend: StorageBackend, blobs: BlobStore) -> None:
        self.backend = backend
        self.blobs = blobs
        self._cache: OrderedDict[Digest, Manifest] = OrderedDict()
        self._cache_bytes = 0
        self._parsing = asyncio.Semaphore(1)

    async def put(
        self, name: str, reference: str, body: bytes, content_type: str | None, extra_tags: Sequence[str] = (),
        check_references: bool = True,
    ) -> Manifest:
        """Store a manifest by tag or digest; by digest it may also get `extra_tags` (the `?tag=` parameters)."""
        if len(body) > MAX_MANIFEST_SIZE:
            raise RegistryError(
                "MANIFEST_TOO_LARGE", f"manifest is {len(body)} bytes, the limit is {MAX_MANIFEST_SIZE}"
            )
        expected = Digest.parse(reference) if is_digest(reference) else None
        tags = [check_tag(t) for t in extra_tags] if expected else [check_tag(reference)]
        if len(body) >= OFF_LOOP_BYTES:
            async with self._parsing:
                manifest = await asyncio.get_running_loop().run_in_executor(
                    None, _identify, body, content_type, expected)
        else:
            manifest = _identify(body, content_type, expected)
        digest = manifest.digest
        if check_references:  # a mirror caches a manifest before the blobs it names
            await self._check_references(name, manifest)

        # written even when stored already: the same bytes again cost one call, where a look first
        # costs one (on S3, three when it is not there) and another to write
        await self.backend.write_bytes(layout.blob_data(digest), body)
        await self._keep_pushed_type(name, manifest)
        await write_link(self.backend, layout.revision_link(name, digest), digest)
        subject = manifest.subject
        if subject is not None:
            await write_link(self.backend, layout.referrer_link(name, subject, digest), digest)
        for tag in tags:
            await write_link(self.backend, layout.tag_index_link(name, tag, digest), digest)
            await write_link(self.backend, layout.tag_current_link(name, tag), digest)
        self._remember(replace(manifest, media_type=_stored_media_type(manifest.document),
                                           references=()))
        return manifest

    async def _check_references(self, name: str, manifest: Manifest) -> None:
        """Every blob (or, for an index, manifest) it names is in the repository; else MANIFEST_BLOB_UNKNOWN
        listing the first MAX_MISSING_LISTED missing, which is also where the looking stops."""
        images = manifest.media_type in IMAGE_TYPES
        wanted = manifest.references
        missing: list[str] = []
        for start in range(0, len(wanted), REFERENCE_BATCH):
            batch = wanted[start:start + REFERENCE_BATCH]
            found = await asyncio.gather(*(self.blobs.is_linked(name, digest, recent_link=True) if images
                                           else self.exists(name, digest) for digest in batch))
            missing += [str(digest) for digest, ok in zip(batch, found) if not ok]
            if len(missing) >= MAX_MISSING_LISTED:
                break
            await asyncio.sleep(0)  # the filesystem answers without yielding: let other requests in
        if missing:
            listed = missing[:MAX_MISSING_LISTED]
            count = f"at least {len(listed)}" if len(missing) >= MAX_MISSING_LISTED else str(len(listed))
            raise RegistryError(
                "MANIFEST_BLOB_UNKNOWN",
                f"manifest references {count} unknown blob(s) or manifest(s): {', '.join(listed[:5])}",
                {"missing": listed},
            )

    async def _keep_pushed_type(self, name: str, manifest: Manifest) -> None:
        """Remember the Content-Type a manifest was pushed with when its body does not say it.

        A body without `mediaType` is served with the type it was pushed with. What cannot be read
        from the bytes is kept beside the repository's revision link, in a file named `mediatype`
        (`_manifests/revisions/<alg>/<hex>/mediatype`): per repository, as the push was, and gone
        with the revision when the manifest is deleted. Distribution ignores it: its walks of
        revisions read only files named `link`, and it serves such a body as an OCI manifest or
        index, as this registry does when the file is absent. The file is written only when the
        pushed type is not what the body alone would be served as, so ordinary pushes cost nothing.
        """
        if manifest.document.get("mediaType"):
            return
        path = layout.revision_media_type(name, manifest.digest)
        if manifest.media_type != _stored_media_type(manifest.document):
            await self.backend.write_bytes(path, manifest.media_type.encode())
        else:  # pushed again with the type the body implies: an older push's type must not linger
            await delete_quietly(self.backend, path)

    async def _pushed_type(self, name: str, manifest: Manifest) -> Manifest:
        try:
            pushed = (await self.backend.read_bytes(layout.revision_media_type(name, manifest.digest))).decode(
                "ascii", "replace").strip()
        except PathNotFound:
            return manifest
        if pushed not in IMAGE_TYPES | INDEX_TYPES or pushed == manifest.media_type:
            return manifest
        return replace(manifest, media_type=pushed)

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

    # Whether a repository exists is decided by the files it holds, not by its directories, so that
    # every backend answers alike: the filesystem keeps the empty directories a delete leaves, S3 has
    # none (once its only manifest was deleted, S3 said NAME_UNKNOWN where the filesystem said
    # MANIFEST_UNKNOWN).

    async def check_repository(self, name: str) -> None:
        """NAME_UNKNOWN unless the repository holds a manifest or links a blob."""
        if not await self.backend.holds_files(layout.layers_dir(name)):
            await self.check_has_manifests(name)

    async def check_has_manifests(self, name: str) -> None:
        """NAME_UNKNOWN unless the repository holds a manifest (what a tag list needs, as in Distribution)."""
        if not await self.backend.holds_files(layout.manifests_dir(name)):
            raise RegistryError("NAME_UNKNOWN", f"repository {name} not known to registry", {"name": name})

    async def get(self, name: str, reference: str) -> Manifest:
        digest = await self.resolve(name, reference)
        return await self.load(digest, name)

    async def load(self, digest: Digest, name: str | None = None) -> Manifest:
        """The stored manifest; with name, served with the type it was pushed to that repository with."""
        manifest = self._cache.get(digest)
        if manifest is None:
            try:
                body = await self.backend.read_bytes(layout.blob_data(digest))
            except PathNotFound:
                raise RegistryError("MANIFEST_UNKNOWN",
                                    f"manifest {digest} is linked but its data is missing") from None
            document = _json_object(body)
            manifest = Manifest(digest, _stored_media_type(document), body, document,
                                untyped=not document.get("mediaType"))
            self._remember(manifest)
        if name is not None and manifest.untyped:
            return await self._pushed_type(name, manifest)
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
        self._cache[manifest.digest] = Manifest(manifest.digest, manifest.media_type, manifest.body,
                                                untyped=manifest.untyped)
        self._cache_bytes += len(manifest.body) + MANIFEST_ENTRY_BYTES
        while self._cache_bytes > MANIFEST_CACHE_BYTES:
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= len(evicted.body) + MANIFEST_ENTRY_BYTES

    async def delete(self, name: str, reference: str) -> list[str]:
        """By digest: remove the manifest, every tag on it and its referrer entry. By tag: untag.
        The tags removed."""
        if not is_digest(reference):
            check_tag(reference)
            if await read_link(self.backend, layout.tag_current_link(name, reference)) is None:
                await self.check_repository(name)
                raise RegistryError("MANIFEST_UNKNOWN", f"tag {reference} unknown to repository {name}")
            await delete_quietly(self.backend, layout.tag_dir(name, reference))
            return [reference]
        digest = await self.resolve(name, reference)
        manifest = await self.load(digest)
        tags = await self.tags_of(name, digest)
        for tag in tags:
            await delete_quietly(self.backend, layout.tag_dir(name, tag))
        subject = manifest.subject
        if subject is not None:
            await delete_quietly(self.backend, layout.referrer_link(name, subject, digest).rsplit("/", 1)[0])
        await delete_quietly(self.backend, layout.revision_link(name, digest).rsplit("/", 1)[0])
        return tags

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
        document = parse_json(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _identify(body: bytes, content_type: str | None, expected: Digest | None) -> Manifest:
    """Hash and check a pushed manifest (CPU work: big ones run in a worker thread)."""
    digest = Digest.of(body, expected.algorithm if expected else "sha256")
    if expected is not None and digest != expected:
        raise RegistryError(
            "DIGEST_INVALID",
            f"manifest digest {digest} does not match reference {expected}",
            {"expected": str(expected), "computed": str(digest)},
        )
    return parse_manifest(body, content_type, digest)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _stored_media_type(document: dict[str, Any]) -> str:
    """The type a stored body is served with when nothing else is known: its mediaType, else a guess."""
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    try:
        return _guess_media_type(document)
    except RegistryError:
        return OCI_MANIFEST
