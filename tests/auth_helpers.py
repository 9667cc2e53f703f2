"""Helpers shared by the authentication tests: users, clients with credentials, a look at the data directory.

Failed logins are limited per client address, and all tests connect over
loopback: each client that is meant to fail a login takes a loopback source
address of its own (127.0.0.0/8 all reaches the server on Linux), so one test's
failures never throttle another's.
"""

from __future__ import annotations

import base64
import itertools
from pathlib import Path
from typing import Any

import bcrypt
import requests
from requests.adapters import HTTPAdapter

from .client import RegistryClient, digest_of

#: 127.1.x.y, never 127.0.0.1 (the address every other client uses)
_addresses = itertools.count()


def fresh_address() -> str:
    n = next(_addresses)
    return f"127.1.{n // 250 % 250}.{n % 250 + 1}"


class _SourceAddressAdapter(HTTPAdapter):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client_for(url: str, auth: tuple[str, str] | None = None, token: str | None = None,
               header: str | None = None, address: str | None = None) -> RegistryClient:
    """A client sending Basic credentials, a Bearer token or a raw Authorization header, from address."""
    client = RegistryClient(url)
    if auth is not None:
        client.session.auth = auth
    if token is not None:
        header = f"Bearer {token}"
    if header is not None:
        client.session.headers["Authorization"] = header
    if address is not None:
        client.session.mount("http://", _SourceAddressAdapter(address))
    return client


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    """bcrypt entries with the fewest rounds bcrypt allows: the server checks them the same way, faster."""
    path.write_text("".join(f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}\n"
                            for user, pw in users.items()))


def snapshot(root: Path) -> set[str]:
    """Every file and directory under a filesystem registry's root (its token key aside)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} - {"token-key.pem"}


def start_upload_attempts(client: RegistryClient, repo: str) -> list[requests.Response]:
    """The ways a push begins (POST, monolithic POST, manifest PUT, mount); none may write when denied."""
    data = b"must not be stored " + repo.encode()
    manifest = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
    return [
        client.request("POST", f"/v2/{repo}/blobs/uploads/"),
        client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, data=data),
        client.request("PUT", f"/v2/{repo}/manifests/latest", data=manifest,
                       headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}),
        client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"mount": digest_of(data)}),
    ]


def catalog(client: RegistryClient) -> list[str]:
    """Every repository the catalog shows this client, following Link pages."""
    names: list[str] = []
    path: str | None = "/v2/_catalog?n=1000"
    while path:
        r = client.request("GET", path)
        assert r.status_code == 200, r.text
        names += r.json()["repositories"]
        link = r.headers.get("Link")
        path = link.split(";")[0].strip("<>") if link else None
    return names
