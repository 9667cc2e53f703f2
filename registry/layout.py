"""Where everything lives in the store: the one module that knows the layout.

It is CNCF Distribution's (registry/storage/paths.go), so a data directory is
interchangeable between the two:

    docker/registry/v2/blobs/<alg>/<hh>/<hex>/data
    docker/registry/v2/repositories/<name>/
        _layers/<alg>/<hex>/link
        _manifests/revisions/<alg>/<hex>/link
        _manifests/revisions/<alg>/<hex>/mediatype    (ours, rare: see revision_media_type)
        _manifests/tags/<tag>/current/link
        _manifests/tags/<tag>/index/<alg>/<hex>/link
        _uploads/<id>/data, startedat
        _referrers/<subject alg>/<subject hex>/<alg>/<hex>/link   (ours; Distribution ignores it)
    docker/registry/v2/evicting/<alg>/<hex>      (ours: blob data on its way out of a mirror's cache)
    docker/registry/v2/quarantine/<alg>/<hex>    (ours: corrupt blob data `registry verify` moved aside)
    docker/registry/v2/secrets/<name>            (ours: secrets every replica on the store shares)
    docker/registry/v2/incoming/<process>/...    (ours: single-request uploads in progress)
    docker/registry/v2/health/<instance>         (ours: a replica's storage probe, written and deleted)
"""

from __future__ import annotations

from .references import Digest

ROOT = "docker/registry/v2"
BLOBS = f"{ROOT}/blobs"
REPOSITORIES = f"{ROOT}/repositories"
#: a repository is a directory holding this entry (as Distribution's catalog decides)
REPOSITORY_MARKER = "_manifests"
#: a directory holding this entry has upload sessions
UPLOADS_MARKER = "_uploads"
#: a directory holding this entry links blobs (pushed before any manifest, it is not in the catalog yet)
LAYERS_MARKER = "_layers"
#: blob data the mirror's cache eviction moved out of the way while it makes sure no repository links it
SET_ASIDE = f"{ROOT}/evicting"
#: blob data `registry verify --quarantine` found corrupt, kept for inspection, never served
QUARANTINE = f"{ROOT}/quarantine"
#: secrets generated once and shared by every replica on the store (the web UI's session key)
SECRETS = f"{ROOT}/secrets"
#: single-request uploads while their body arrives, per registry process (registry/incoming.py)
INCOMING = f"{ROOT}/incoming"
#: small objects each running replica writes, reads back and deletes to learn that the store works
HEALTH = f"{ROOT}/health"


def blob_dir(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def blob_data(digest: Digest) -> str:
    return f"{blob_dir(digest)}/data"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def set_aside_data(digest: Digest) -> str:
    return f"{SET_ASIDE}/{digest.algorithm}/{digest.hex}"


def quarantine_data(digest: Digest) -> str:
    return f"{QUARANTINE}/{digest.algorithm}/{digest.hex}"


def secret_file(name: str) -> str:
    return f"{SECRETS}/{name}"
def health_probe(instance: str) -> str:
    return f"{HEALTH}/{instance}"


def layers_dir(name: str) -> str:
    """Holds `<alg>/<hex>/link` for every blob the repository links."""
    return f"{REPOSITORIES}/{name}/{LAYERS_MARKER}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_layers/{digest.algorithm}/{digest.hex}/link"


def manifests_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{REPOSITORY_MARKER}"


def revisions_dir(name: str) -> str:
    """Holds `<alg>/<hex>/link` for every manifest the repository holds."""
    return f"{REPOSITORIES}/{name}/_manifests/revisions"


def revision_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}/link"


def revision_media_type(name: str, digest: Digest) -> str:
    """Ours: the Content-Type a manifest without `mediaType` in its body was pushed with (see
    ManifestStore._keep_pushed_type); Distribution reads only `link` files there."""
    return f"{REPOSITORIES}/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}/mediatype"


def tags_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags"


def tag_dir(name: str, tag: str) -> str:
    return f"{tags_dir(name)}/{tag}"


def tag_current_link(name: str, tag: str) -> str:
    return f"{tag_dir(name, tag)}/current/link"


def tag_index_link(name: str, tag: str, digest: Digest) -> str:
    return f"{tag_dir(name, tag)}/index/{digest.algorithm}/{digest.hex}/link"


def uploads_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{UPLOADS_MARKER}"


def upload_dir(name: str, upload_id: str) -> str:
    return f"{uploads_dir(name)}/{upload_id}"


#: an upload's data file, by its name inside the upload's directory
UPLOAD_DATA = "data"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/{UPLOAD_DATA}"


def upload_started_at(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/startedat"


def incoming_process(process: str) -> str:
    return f"{INCOMING}/{process}"


def incoming_heartbeat(process: str) -> str:
    return f"{INCOMING}/{process}/heartbeat"


def incoming_upload(process: str, upload: str) -> str:
    return f"{INCOMING}/{process}/{upload}"


def incoming_data(process: str, upload: str) -> str:
    return f"{INCOMING}/{process}/{upload}/data"


def referrers_dir(name: str, subject: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_referrers/{subject.algorithm}/{subject.hex}"


def referrer_link(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrers_dir(name, subject)}/{referrer.algorithm}/{referrer.hex}/link"


def is_internal(entry: str) -> bool:
    """Entries of a repository directory that are not nested repositories."""
    return entry.startswith("_")
