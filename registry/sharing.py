"""Which images and repositories share each blob, and what the images add up to.

A blob is stored once however many images name it. This reads every manifest of every
repository to count, for each config and layer, the repositories and images naming it,
and the bytes all images would take if nothing were shared. It is a full walk of the
store: for a background snapshot, never for one request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import linking_repositories
from .domain import Registry
from .errors import RegistryError
from .images import blob_descriptors
from .references import Digest

#: repository names kept per blob (to show where it is used); the counts are exact
MAX_NAMES = 20


@dataclass
class BlobSharing:
    size: int
    media_type: str
    #: named as a layer by some image (else only as a config)
    layer: bool = False
    repositories: int = 0
    images: int = 0
    some_repositories: list[str] = field(default_factory=list)


@dataclass
class RepositorySharing:
    manifests: int = 0
    #: what this repository's images take, each counted whole
    images_bytes: int = 0
    #: when a manifest was last pushed to it
    last_pushed: float | None = None


@dataclass
class SharingReport:
    blobs: dict[Digest, BlobSharing] = field(default_factory=dict)
    repositories: dict[str, RepositorySharing] = field(default_factory=dict)

    @property
    def images_bytes(self) -> int:
        """Every image's size (manifest, config, layers) added up: what the store would hold
        if no two images shared anything."""
        return sum(r.images_bytes for r in self.repositories.values())

    def most_shared(self, count: int) -> list[tuple[Digest, BlobSharing]]:
        """The layers (not configs) named by the most images, most first."""
        layers = [(d, b) for d, b in self.blobs.items() if b.images > 1 and b.layer]
        layers.sort(key=lambda item: (-item[1].images, -item[1].size, str(item[0])))
        return layers[:count]


async def sharing(registry: Registry) -> SharingReport:
    report = SharingReport()
    for name in await linking_repositories(registry.backend):
        repository = report.repositories[name] = RepositorySharing()
        named: set[Digest] = set()  # blobs this repository's images name, each counted once per repository
        for digest in await registry.manifests.revisions(name):
            try:
                manifest = await registry.manifests.load(digest)
            except RegistryError:
                continue  # linked but its data is gone (`registry verify` reports it)
            written = await registry.manifests.revision_written_at(name, digest)
            if written is not None:
                repository.last_pushed = max(written, repository.last_pushed or written)
            descriptors = blob_descriptors(manifest)
            repository.manifests += 1
            repository.images_bytes += len(manifest.body) + sum(int(d["size"]) for d in descriptors)
            for position, descriptor in enumerate(descriptors):
                blob_digest = Digest.parse(descriptor["digest"])
                blob = report.blobs.get(blob_digest)
                if blob is None:
                    blob = report.blobs[blob_digest] = BlobSharing(int(descriptor["size"]), descriptor["mediaType"])
                blob.images += 1
                blob.layer = blob.layer or position > 0  # the first is the config
                if blob_digest not in named:
                    named.add(blob_digest)
                    blob.repositories += 1
                    if len(blob.some_repositories) < MAX_NAMES:
                        blob.some_repositories.append(name)
    return report
