"""A read-only look into a registry's store, from outside the server, for either backend.

Tests use it to check what a request left behind (one copy of a blob, a link,
no stray upload) without going through the registry's own code. Paths are the
store's logical paths (`docker/registry/v2/...`). On S3 an appended file is
stored as segment objects under `<dir>/.seg.<name>/` (see storage_backends/s3.py);
the view shows them as the one logical file they make up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3

SEGMENT_PREFIX = ".seg."


class StoreView:
    """Files of a store: exists, read, and every file path under a prefix."""

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def read(self, path: str) -> bytes:
        """The file's bytes; FileNotFoundError if there is no such file."""
        raise NotImplementedError

    def keys(self, prefix: str = "") -> list[str]:
        """Sorted paths, relative to the store's root, of every file under prefix (a directory)."""
        raise NotImplementedError

    def size(self, path: str) -> int:
        return len(self.read(path))

    def is_dir(self, path: str) -> bool:
        """Whether path is a directory: on S3, whether any key lies below it; on a filesystem,
        also when it is empty (what a delete must not leave behind)."""
        return bool(self.keys(path))

    def multipart_uploads(self) -> list[str]:
        """Paths with a multipart upload begun and neither completed nor aborted (S3 only)."""
        return []


class FilesystemView(StoreView):
    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, path: str) -> bool:
        return (self.root / path).is_file()

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def size(self, path: str) -> int:
        return (self.root / path).stat().st_size

    def is_dir(self, path: str) -> bool:
        return (self.root / path).is_dir()

    def keys(self, prefix: str = "") -> list[str]:
        # os.walk passes over directories the server deletes meanwhile (rglob would raise)
        return sorted((Path(directory) / name).relative_to(self.root).as_posix()
                      for directory, _, names in os.walk(self.root / prefix) for name in names)


class S3View(StoreView):
    """A bucket and root directory, read with its own boto3 client."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.bucket = str(settings["bucket"])
        root = str(settings.get("rootdirectory", "")).strip("/")
        self.root = f"{root}/" if root else ""
        self.client = boto3.client(
            "s3", endpoint_url=settings["regionendpoint"], region_name=settings.get("region"),
            aws_access_key_id=settings["accesskey"], aws_secret_access_key=settings["secretkey"],
        )

    def _objects(self, prefix: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(page.get("Contents", []))
        return found

    def _segment_objects(self, path: str) -> list[dict[str, Any]]:
        head, _, name = path.rpartition("/")
        prefix = f"{self.root}{head}/{SEGMENT_PREFIX}{name}/" if head else f"{self.root}{SEGMENT_PREFIX}{name}/"
        return sorted(self._objects(prefix), key=lambda o: o["Key"])  # zero-padded start offsets: in order

    def _segments(self, path: str) -> list[str]:
        return [o["Key"] for o in self._segment_objects(path)]

    def _get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def _object_size(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except self.client.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                raise
        return None

    def exists(self, path: str) -> bool:
        return self._object_size(self.root + path) is not None or bool(self._segments(path))

    def read(self, path: str) -> bytes:
        whole = self._get(self.root + path)
        if whole is not None:
            return whole
        segments = self._segments(path)
        if not segments:
            raise FileNotFoundError(path)
        return b"".join(self._get(key) or b"" for key in segments)

    def size(self, path: str) -> int:
        whole = self._object_size(self.root + path)
        if whole is not None:
            return whole
        segments = self._segment_objects(path)
        if not segments:
            raise FileNotFoundError(path)
        return sum(o["Size"] for o in segments)

    def multipart_uploads(self) -> list[str]:
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.root).get("Uploads", [])
        return sorted(u["Key"][len(self.root):] for u in uploads)

    def keys(self, prefix: str = "") -> list[str]:
        start = self.root + (prefix.rstrip("/") + "/" if prefix else "")
        paths = set()
        for obj in self._objects(start):
            parts = obj["Key"][len(self.root):].split("/")
            if len(parts) >= 2 and parts[-2].startswith(SEGMENT_PREFIX):  # a segment: its logical file
                parts = parts[:-2] + [parts[-2][len(SEGMENT_PREFIX):]]
            paths.add("/".join(parts))
        return sorted(paths)


def store_view(root: Path, config: dict[str, Any] | None) -> StoreView:
    """The view of the store a registry started with this root and config uses."""
    s3 = ((config or {}).get("storage") or {}).get("s3")
    return S3View(s3) if s3 else FilesystemView(root)


# Distribution's layout, as the tests expect to find it (not taken from registry/layout.py on purpose).
V2 = "docker/registry/v2"
BLOBS = f"{V2}/blobs"


def blob_path(digest: str) -> str:
    algorithm, hex_ = digest.split(":")
    return f"{BLOBS}/{algorithm}/{hex_[:2]}/{hex_}/data"


def layer_link_path(repo: str, digest: str) -> str:
    algorithm, hex_ = digest.split(":")
    return f"{V2}/repositories/{repo}/_layers/{algorithm}/{hex_}/link"


def uploads_path(repo: str) -> str:
    return f"{V2}/repositories/{repo}/_uploads"


def writes_in_progress(store: StoreView) -> list[str]:
    """Where single-request uploads are writing: their data under incoming/ (filesystem), or on S3 the
    multipart upload at the blob's own key that only its completion, once verified, makes visible."""
    return incoming_data(store) + store.multipart_uploads()


def incoming_data(store: StoreView) -> list[str]:
    """The data of single-request uploads in progress, or left by a registry process that died
    (`docker/registry/v2/incoming/<process>/<upload>/data`, this registry's own)."""
    return [path for path in store.keys(f"{V2}/incoming") if path.endswith("/data")]
