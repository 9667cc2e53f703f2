"""The spec's grammars for repository names, tags and digests.

Every name, tag and digest is checked here before it reaches the storage
layout, which is what keeps any request from naming a path outside the store.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import RegistryError

MAX_NAME_LENGTH = 255
_NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")

#: algorithm -> hex length; only these are stored or verified
ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> "Digest":
        match = _DIGEST.fullmatch(value)
        if not match:
            raise RegistryError("DIGEST_INVALID", f"invalid digest {value[:200]!r}")
        algorithm, hex_ = match.groups()
        if algorithm not in ALGORITHMS:
            raise RegistryError("DIGEST_INVALID", f"unsupported digest algorithm {algorithm!r}")
        if len(hex_) != ALGORITHMS[algorithm] or not _HEX.fullmatch(hex_):
            raise RegistryError("DIGEST_INVALID", f"invalid {algorithm} digest {value[:200]!r}")
        return cls(algorithm, hex_)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> "Digest":
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> "hashlib._Hash":
        return hashlib.new(self.algorithm)


def is_digest(reference: str) -> bool:
    return ":" in reference


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise RegistryError("NAME_INVALID", f"repository name longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):
        raise RegistryError("NAME_INVALID", f"invalid repository name {name[:300]!r}")
    return name


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise RegistryError("TAG_INVALID", f"invalid tag {tag[:200]!r}")
    return tag
