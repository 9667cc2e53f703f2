"""OCI image layouts built on disk for the client tests: images are made here, never pulled.

A layout is the directory `skopeo copy oci:DIR:TAG` reads and writes: an
`oci-layout` marker, `index.json` naming the tagged manifests, and every blob
under `blobs/<alg>/<hex>`. Layers are real gzip'd tars and configs carry the
diff_ids of their layers, so the images are valid for any client.
The helpers at the end move layouts in and out of registries with skopeo.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .client import (DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, descriptor,
                     digest_of)

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_MARKER = {"imageLayoutVersion": "1.0.0"}
MiB = 1 << 20


@dataclass(frozen=True)
class Layout:
    """An OCI layout directory, read back for comparisons."""

    path: Path

    def ref(self, tag: str) -> str:
        """The skopeo reference of a tag in this layout."""
        return f"oci:{self.path}:{tag}"

    def index(self) -> dict[str, Any]:
        return json.loads((self.path / "index.json").read_text())

    def blob_path(self, digest: str) -> Path:
        algorithm, hex_ = digest.split(":", 1)
        return self.path / "blobs" / algorithm / hex_

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def tagged(self, tag: str) -> dict[str, Any]:
        """The index.json descriptor carrying `tag`."""
        found = [d for d in self.index()["manifests"] if d.get("annotations", {}).get(REF_NAME) == tag]
        assert len(found) == 1, f"{len(found)} entries tagged {tag} in {self.path}/index.json"
        return found[0]

    def manifest(self, tag: str) -> tuple[str, bytes]:
        """(digest, bytes) of the manifest or index tagged `tag`."""
        digest = self.tagged(tag)["digest"]
        return digest, self.read_blob(digest)

    def stored_digests(self) -> set[str]:
        """Every blob file in the layout, checked against its name (a corrupt copy fails here)."""
        found = set()
        for path in (self.path / "blobs").glob("*/*"):
            digest = f"{path.parent.name}:{path.name}"
            assert file_digest(path, path.parent.name) == digest, f"{path} does not hold {digest}"
            found.add(digest)
        return found

    def reachable(self, digest: str) -> dict[str, int]:
        """{digest: size} of a manifest or index and everything it references, recursively."""
        body = self.read_blob(digest)
        found = {digest: len(body)}
        document = json.loads(body)
        for child in document.get("manifests", []):
            found.update(self.reachable(child["digest"]))
        for blob in [document["config"], *document["layers"]] if "config" in document else []:
            found[blob["digest"]] = blob["size"]
        return found


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


class LayoutBuilder:
    """Writes blobs and manifests into a new layout; `finish` writes index.json."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True)
        (path / "oci-layout").write_text(json.dumps(LAYOUT_MARKER))
        self.refs: list[dict[str, Any]] = []

    def add_blob(self, media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        desc = descriptor(media_type, data, **extra)
        Layout(self.path).blob_path(desc["digest"]).write_bytes(data)
        return desc

    def add_layer(self, files: dict[str, bytes]) -> tuple[dict[str, Any], str]:
        """A gzip'd tar of `files`: (its descriptor, its diff_id)."""
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name, content in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(content), 0o644, 1_700_000_000
                archive.addfile(info, io.BytesIO(content))
        raw = tar.getvalue()
        return self.add_blob(OCI_LAYER, gzip.compress(raw, mtime=0)), digest_of(raw)

    def add_large_layer(self, size: int, seed: int) -> tuple[dict[str, Any], str]:
        """A gzip'd tar holding one file of `size` incompressible bytes, streamed to disk.

        At most a few MiB are in memory at once. Deflate level 0 (stored
        blocks) is still valid gzip and costs nothing, and random data would
        not shrink at any level.
        """
        temp = self.path / "blobs" / f".layer-{uuid.uuid4().hex}"
        with open(temp, "wb") as out:
            compressed = _HashingWriter(out)
            with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=0, mtime=0) as gz:
                uncompressed = _HashingWriter(gz)
                with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT,
                                  bufsize=MiB, copybufsize=MiB) as archive:
                    info = tarfile.TarInfo("data/random.bin")
                    info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
                    archive.addfile(info, _RandomReader(size, seed))
        digest = f"sha256:{compressed.hash.hexdigest()}"
        temp.rename(Layout(self.path).blob_path(digest))
        desc = {"mediaType": OCI_LAYER, "digest": digest, "size": compressed.size}
        return desc, f"sha256:{uncompressed.hash.hexdigest()}"

    def add_image(self, layers: list[tuple[dict[str, Any], str]], architecture: str = "amd64",
                  annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """A config naming the layers' diff_ids (and carrying labels), and the manifest; returns the
        manifest's descriptor."""
        config = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": architecture,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "tests/oci_layout.py"} for _ in layers],
        }
        if labels:
            config["config"]["Labels"] = labels
        config_desc = self.add_blob(OCI_CONFIG, json.dumps(config).encode())
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": [desc for desc, _ in layers],
        }
        if annotations:
            manifest["annotations"] = annotations
        platform = {"architecture": architecture, "os": "linux"}
        return self.add_blob(OCI_MANIFEST, json.dumps(manifest, indent=2).encode(), platform=platform)

    def add_index(self, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self.add_blob(OCI_INDEX, json.dumps(index).encode())

    def tag(self, desc: dict[str, Any], tag: str) -> None:
        entry = {k: v for k, v in desc.items() if k != "platform"}
        self.refs.append({**entry, "annotations": {REF_NAME: tag}})

    def finish(self) -> Layout:
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                          "manifests": self.refs}))
        return Layout(self.path)


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `target`."""

    def __init__(self, target: BinaryIO | Any) -> None:
        super().__init__()
        self.target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.size += len(view)
        self.target.write(view)
        return len(view)


class _RandomReader(io.RawIOBase):
    """`size` pseudo-random bytes read in pieces: incompressible, fast, never all in memory."""

    def __init__(self, size: int, seed: int) -> None:
        super().__init__()
        self.remaining = size
        self.random = random.Random(seed)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        self.remaining -= n
        return self.random.randbytes(n)


def small_files() -> dict[str, bytes]:
    """A couple of files, one unique per call so that no two images share a layer."""
    return {
        "etc/hello.txt": b"hello from the registry tests\n",
        "etc/nonce": uuid.uuid4().hex.encode(),
    }


def small_image(path: Path, tag: str = "v1") -> Layout:
    """One image: one small layer, tagged `tag`."""
    builder = LayoutBuilder(path)
    builder.tag(builder.add_image([builder.add_layer(small_files())]), tag)
    return builder.finish()


def multi_arch_index(path: Path, tag: str = "multi") -> Layout:
    """An OCI index of an amd64 and an arm64 image (each with its own layers), tagged `tag`."""
    builder = LayoutBuilder(path)
    children = []
    for architecture in ("amd64", "arm64"):
        layers = [builder.add_layer(small_files()), builder.add_layer({f"{architecture}.txt": architecture.encode()})]
        children.append(builder.add_image(layers, architecture))
    builder.tag(builder.add_index(children), tag)
    return builder.finish()


def large_image(path: Path, tag: str = "big", size: int = 100 * MiB) -> Layout:
    """An image with one layer of `size` incompressible bytes plus a small one."""
    builder = LayoutBuilder(path)
    big = builder.add_large_layer(size, seed=uuid.uuid4().int)
    builder.tag(builder.add_image([big, builder.add_layer(small_files())]), tag)
    return builder.finish()


# --- moving layouts with skopeo ----------------------------------------------------------------

#: every manifest type, so that no registry holds one back for want of an Accept line
ACCEPT_ALL = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run skopeo (debug output on stderr) and insist that it succeeds."""
    result = skopeo_may_fail(*args)
    assert result.returncode == 0, f"skopeo {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result


def skopeo_may_fail(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["skopeo", "--debug", "--insecure-policy", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def copy(src: str, dest: str, *options: str) -> subprocess.CompletedProcess[str]:
    return skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *options, src, dest)


def assert_same_image(source: Layout, source_tag: str, copied: Layout, copied_tag: str) -> None:
    """The copied layout holds the very manifest (same digest, same bytes) and blobs of the source."""
    digest, body = source.manifest(source_tag)
    copied_digest, copied_body = copied.manifest(copied_tag)
    assert copied_digest == digest
    assert copied_body == body
    reachable = source.reachable(digest)
    assert copied.reachable(copied_digest) == reachable
    stored = copied.stored_digests()  # also checks each file against its digest
    assert set(reachable) <= stored
    for blob in reachable:
        assert file_digest(copied.blob_path(blob)) == file_digest(source.blob_path(blob))
