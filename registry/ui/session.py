"""Sessions in a signed cookie, and the CSRF token bound to each.

The cookie holds the whole session (who logged in, until when), signed with
HMAC-SHA256; nothing is kept on the server, so any replica can read a session
another one started, as long as they share the key: `http.secret` when it is set,
else a secret generated once and kept in the store (see registry/secrets.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, replace

from storage_backends import PathNotFound, StorageBackend, StorageError

from ..secrets import reread, shared_secret

log = logging.getLogger("registry.ui")

COOKIE = "registry_ui_session"
#: how long a session lasts, logged in or not; logging in again starts a new one
SESSION_SECONDS = 8 * 3600
#: the name of the generated key in the store, when http.secret is not set
SECRET_NAME = "ui-session"
#: a replica whose key fails a cookie reads the stored one again at most this often
REREAD_SECONDS = 10.0


@dataclass(frozen=True)
class Session:
    sid: str
    expires: int
    #: the htpasswd user logged in with a password, and their entry's fingerprint when they did
    user: str | None = None
    fingerprint: str | None = None
    #: a bearer token pasted at login (token auth): the session holds its grants and no more
    token: str | None = None

    @classmethod
    def new(cls, **fields: str | None) -> "Session":
        return cls(secrets.token_urlsafe(18), int(time.time()) + SESSION_SECONDS, **fields)  # type: ignore[arg-type]

    def until(self, expires: int) -> "Session":
        return replace(self, expires=min(self.expires, expires))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    def __init__(self, secret: bytes) -> None:
        self.key = hmac.new(secret, b"registry-ui-session-v1", hashlib.sha256).digest()

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self.key, data, hashlib.sha256).digest()

    def encode(self, session: Session) -> str:
        payload = _b64(json.dumps(asdict(session), separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._mac(payload.encode()))}"

    def decode(self, value: str) -> Session | None:
        """The session, or None for a cookie that is forged, garbled or expired."""
        payload, _, mac = value.partition(".")
        try:
            if not hmac.compare_digest(_unb64(mac), self._mac(payload.encode())):
                return None
            session = Session(**json.loads(_unb64(payload)))
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            return None
        if not isinstance(session.sid, str) or not isinstance(session.expires, int) or session.expires < time.time():
            return None
        return session

    def csrf(self, session: Session) -> str:
        """The token every form of this session carries; a cross-site page cannot know it."""
        return _b64(self._mac(b"csrf\0" + session.sid.encode()))


class SessionKeys:
    """The codec, from http.secret or from the secret shared through the store."""

    def __init__(self, backend: StorageBackend, configured: object) -> None:
        self.backend = backend
        self._codec = SessionCodec(str(configured).encode()) if configured else None
        self._configured = bool(configured)
        self._reread_at = 0.0

    async def codec(self) -> SessionCodec:
        if self._codec is None:
            try:
                secret = await shared_secret(self.backend, SECRET_NAME)
            except (StorageError, OSError) as exc:  # a store that cannot be written (mounted read-only)
                log.warning("web UI sessions signed with a key of this process only (set http.secret): %s", exc)
                secret = secrets.token_bytes(32)
            self._codec = SessionCodec(secret)
        return self._codec

    async def decode(self, value: str) -> Session | None:
        codec = await self.codec()
        session = codec.decode(value)
        if session is not None or self._configured or time.monotonic() < self._reread_at:
            return session
        # another replica may have generated the stored key at the same moment as this one and won
        self._reread_at = time.monotonic() + REREAD_SECONDS
        try:
            stored = SessionCodec(await reread(self.backend, SECRET_NAME))
        except PathNotFound:
            return None
        if stored.key != codec.key:
            self._codec = stored
        return self._codec.decode(value)
