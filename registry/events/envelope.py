"""Events in Distribution's format: what happened (action, target), who asked (request, actor) and which
registry process saw it (source), and the envelope they are posted in.

Field names, their order and their omission when empty follow Distribution's notifications.Event, so a
receiver written for Distribution reads ours unchanged.
"""

from __future__ import annotations

import datetime
import json
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..auth.guard import IDENTITY_KEY
from ..observability.logs import REQUEST_ID

#: the envelope's media type (Distribution 2.x's; receivers rarely check it)
EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
#: blobs have no media type of their own in the store: Distribution describes them so
BLOB_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Event:
    """One event: what the endpoints' filters look at, and its JSON (one line, no newline)."""

    action: str
    media_type: str | None
    line: bytes


def envelope(lines: list[bytes]) -> bytes:
    return b'{"events":[' + b",".join(lines) + b"]}"


class EventSource:
    """This process: its address and instance id (new at each start), and where content is found."""

    def __init__(self, port: int, base_url: str | None) -> None:
        self.record = {"addr": f"{socket.gethostname()}:{port}", "instanceID": str(uuid.uuid4())}
        self.base_url = base_url

    def event(self, request: web.BaseRequest, action: str, target: dict[str, Any]) -> Event:
        identity = request.get(IDENTITY_KEY)
        document = {
            "id": str(uuid.uuid4()),
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
            "action": action,
            "target": target,
            "request": {
                "id": REQUEST_ID.get() or "",
                "addr": _client_address(request),
                "host": request.host,
                "method": request.method,
                "useragent": request.headers.get("User-Agent", ""),
            },
            "actor": {"name": identity.name} if identity is not None and identity.name else {},
            "source": self.record,
        }
        line = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        return Event(action, target.get("mediaType"), line)

    def url(self, request: web.BaseRequest, path: str) -> str:
        base = self.base_url or f"{request.scheme}://{request.host}"
        return f"{base.rstrip('/')}{path}"


def _client_address(request: web.BaseRequest) -> str:
    """ip:port of the connection, as Distribution's RemoteAddr gives it."""
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return request.remote or ""


def target(repository: str, digest: str | None = None, media_type: str | None = None, size: int | None = None,
           url: str | None = None, tag: str | None = None, from_repository: str | None = None,
           references: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Distribution's target: descriptor fields, then length, repository, fromRepository, url, tag and
    references, each left out when empty."""
    fields = {"mediaType": media_type, "digest": digest, "size": size, "length": size, "repository": repository,
              "fromRepository": from_repository, "url": url, "tag": tag, "references": references}
    return {key: value for key, value in fields.items() if value not in (None, "", [])}
