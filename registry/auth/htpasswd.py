"""htpasswd files with bcrypt entries (`htpasswd -B`), as Distribution reads them.

bcrypt is slow on purpose (tens of milliseconds), and Basic-auth clients send
their password with every request, so a successful check is remembered for a
while, keyed by a keyed hash of the password, never the password itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path

import bcrypt

log = logging.getLogger("registry.auth")
#: how long a verified password is taken as verified again without bcrypt
VERIFIED_TTL_SECONDS = 300.0
BCRYPT_ROUNDS = 12
#: bcrypt reads at most this many bytes of a password; Apache's htpasswd ignores the rest, and so do we
#: when checking (bcrypt 5 raises instead), while `registry user add` refuses longer ones
MAX_PASSWORD_BYTES = 72


class HtpasswdError(Exception):
    pass


def read_entries(path: Path) -> dict[str, bytes]:
    entries: dict[str, bytes] = {}
    if not path.exists():
        return entries
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed.startswith(("$2y$", "$2b$", "$2a$")):
            raise HtpasswdError(f"{path}:{number}: not a bcrypt htpasswd entry (use htpasswd -B)")
        entries[user] = hashed.encode()
    return entries


def write_entries(path: Path, entries: dict[str, bytes]) -> None:
    """Atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text("".join(f"{user}:{hashed.decode()}\n" for user, hashed in sorted(entries.items())))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def hash_password(password: str) -> bytes:
    # Apache's htpasswd writes $2y$; bcrypt writes $2b$: the same algorithm, both accepted everywhere
    return bcrypt.hashpw(password.encode()[:MAX_PASSWORD_BYTES], bcrypt.gensalt(BCRYPT_ROUNDS))


class Htpasswd:
    """The user database; re-read when the file changes, so `registry user add` needs no restart."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: when, how big and which file: a rewrite within one mtime tick is still seen
        self._mtime: tuple[int, int, int] | None = None
        self._entries: dict[str, bytes] = {}
        self._verified: dict[tuple[str, bytes], float] = {}
        self._key = secrets.token_bytes(32)
        # a hash to check unknown users against, so that they take as long as known ones
        self._decoy = hash_password(secrets.token_hex(16))

    def _load(self) -> dict[str, bytes]:
        try:
            st = self.path.stat()
            mtime: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self._entries = read_entries(self.path)
            except (HtpasswdError, OSError, UnicodeDecodeError) as exc:
                # a file broken while serving keeps the users it had; startup refuses a broken one
                log.error("keeping the previous users: %s", exc)
            self._verified.clear()
        return self._entries

    def fingerprint(self, user: str) -> str | None:
        """A digest of the user's entry: it changes with the password and is None once the user is
        gone, so a login remembered elsewhere (a web session) can end with either."""
        hashed = self._load().get(user)
        return None if hashed is None else hashlib.sha256(hashed).hexdigest()[:32]

    async def verify(self, user: str, password: str) -> bool:
        entries = self._load()
        hashed = entries.get(user)
        tag = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        remembered = self._verified.get((user, tag))
        if hashed is not None and remembered is not None and remembered > time.monotonic():
            return True
        candidate = hashed if hashed is not None else self._decoy
        ok = await asyncio.get_running_loop().run_in_executor(
            None, bcrypt.checkpw, password.encode()[:MAX_PASSWORD_BYTES], candidate.replace(b"$2y$", b"$2b$", 1)
        )
        if ok and hashed is not None:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[(user, tag)] = time.monotonic() + VERIFIED_TTL_SECONDS
            return True
        return False
