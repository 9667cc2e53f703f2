"""Who is looking at a page, and what they may see and do: the API's own rules, applied to the session.

With auth on, a session logged in with a password is the htpasswd user, judged by the
access rules as the API judges Basic credentials (and as the built-in token service
grants); a session holding a pasted token has that token's grants and no more, as the
API would. Anonymous visitors may see what anonymous pulls are allowed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jwt
from aiohttp import web

from ..auth.access import ANONYMOUS, Identity
from ..auth.guard import Guard
from ..auth.tokens import TokenError
from ..errors import RegistryError
from .session import Session

log = logging.getLogger("registry.ui")


@dataclass
class Viewer:
    session: Session
    identity: Identity
    csrf: str
    guard: Guard | None
    #: a session to send back in the cookie (new, or replaced by a login or logout)
    issue: bool = False

    @property
    def auth(self) -> bool:
        return self.guard is not None

    @property
    def name(self) -> str | None:
        return self.identity.name

    def may(self, repository: str, action: str = "pull") -> bool:
        """What the API would let this caller do on repository (everything, without auth)."""
        return self.guard is None or action in self.guard.rules.allowed(self.identity, repository)

    @property
    def sees_anything(self) -> bool:
        """False for an anonymous visitor whom no rule lets pull: the login page is all there is."""
        if self.guard is None or not self.identity.anonymous:
            return True
        return self.guard.rules.anonymous_may_pull_something()


def identity_of(guard: Guard | None, session: Session) -> Identity | None:
    """The session's caller; None when it no longer stands (user removed, password changed,
    token expired or no longer trusted)."""
    if guard is None:
        return ANONYMOUS
    if session.token is not None:
        if guard.verifier is None:
            return None
        try:
            return guard.verifier.verify(session.token)
        except TokenError:
            return None
    if session.user is not None:
        if guard.htpasswd is None or guard.htpasswd.fingerprint(session.user) != session.fingerprint:
            return None
        return Identity(session.user)
    return ANONYMOUS


async def log_in(request: web.Request, guard: Guard, user: str, password: str, token: str) -> Session:
    """A session for these credentials; RegistryError (401, or 429 after too many failures) otherwise.

    Failures count toward the same per-client limit as the API's."""
    client = request.remote or "unknown"
    guard.limiter.check(client)
    if token:
        if guard.verifier is None:
            raise _failed(request, guard, "token login on a registry without token auth")
        try:
            guard.verifier.verify(token)
        except TokenError as exc:
            raise _failed(request, guard, str(exc)) from None
        expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
        session = Session.new(token=token)
        return session.until(int(expires)) if isinstance(expires, int) else session
    if guard.htpasswd is None:
        raise _failed(request, guard, "password login on a registry without htpasswd users")
    if not user or not await guard.htpasswd.verify(user, password):
        raise _failed(request, guard, f"wrong password or unknown user {user!r}")
    log.info("web login by %s from %s", user, client)
    return Session.new(user=user, fingerprint=guard.htpasswd.fingerprint(user))


def _failed(request: web.Request, guard: Guard, why: str) -> RegistryError:
    guard.failed_login(request, f"web login: {why}")
    return RegistryError("UNAUTHORIZED", "wrong user name, password or token")
