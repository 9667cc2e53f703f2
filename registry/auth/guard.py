"""The gate every request passes: who is calling, and may they do this?

Basic credentials are checked against htpasswd; Bearer tokens are verified as
a resource server. The same access rules decide under both. Failed logins are
logged with the client's address and limited per client.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from aiohttp import web

from ..errors import RegistryError
from ..observability.metrics import AUTH_ATTEMPTS
from .access import ANONYMOUS, AccessRules, Identity
from .htpasswd import Htpasswd
from .tokens import TokenError, TokenVerifier

log = logging.getLogger("registry.auth")
IDENTITY_KEY = "registry.identity"
#: the built-in token service's path on this server
BUILTIN_PATH = "/auth/token"

#: failed logins a client may make in the window before it is refused with 429
MAX_FAILURES = 10
FAILURE_WINDOW_SECONDS = 60.0


class FailureLimiter:
    def __init__(self, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures[client]
        cutoff = time.monotonic() - self.window
        while failures and failures[0] < cutoff:
            failures.popleft()
        return failures

    def check(self, client: str) -> None:
        if len(self._recent(client)) >= self.limit:
            AUTH_ATTEMPTS.labels("ratelimited").inc()
            raise RegistryError("TOOMANYREQUESTS", "too many failed logins; try again later",
                                headers={"Retry-After": str(int(self.window))})

    def failed(self, client: str) -> None:
        self._recent(client).append(time.monotonic())
        if len(self._failures) > 100_000:  # a flood of addresses must not grow memory without bound
            self._failures.clear()


@dataclass
class Guard:
    """`mode` is "htpasswd" or "token"."""

    mode: str
    #: where clients log in; None for the built-in token service on this server's own address
    realm: str | None
    rules: AccessRules
    htpasswd: Htpasswd | None = None
    verifier: TokenVerifier | None = None
    service: str = ""
    limiter: FailureLimiter = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = FailureLimiter()

    async def identify(self, request: web.Request) -> Identity:
        """The caller, from the Authorization header; anonymous without one."""
        cached = request.get(IDENTITY_KEY)
        if cached is not None:
            return cached
        identity = await self._authenticate(request)
        if not identity.anonymous:
            AUTH_ATTEMPTS.labels("success").inc()
        request[IDENTITY_KEY] = identity
        return identity

    async def _authenticate(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if not header:
            return ANONYMOUS
        self.limiter.check(request.remote or "unknown")
        if scheme == "basic" and self.htpasswd is not None:
            basic = _basic(credentials)
            if basic is None:
                raise self.failed_login(request, "malformed Basic credentials")
            user, password = basic
            if not user and not password:  # some clients send empty credentials when they have none
                return ANONYMOUS
            if user and await self.htpasswd.verify(user, password):
                return Identity(user)
            raise self.failed_login(request, f"wrong password or unknown user {user!r}")
        if scheme == "bearer" and self.verifier is not None:
            try:
                return self.verifier.verify(credentials.strip())
            except TokenError as exc:
                raise self.failed_login(request, str(exc)) from None
        raise self.failed_login(request, f"unsupported authorization scheme {scheme!r}")

    def failed_login(self, request: web.Request, why: str) -> RegistryError:
        client = request.remote or "unknown"
        AUTH_ATTEMPTS.labels("failure").inc()
        self.limiter.failed(client)
        log.warning("authentication failed from %s: %s", client, why)
        return self.challenge(request, None, "authentication failed")

    def challenge(self, request: web.Request, scope: str | None, message: str,
                  insufficient: bool = False) -> RegistryError:
        if self.mode == "token":
            realm = self.realm or f"{request.scheme}://{request.host}{BUILTIN_PATH}"
            value = f'Bearer realm="{realm}",service="{self.service}"'
            if scope:
                value += f',scope="{scope}"'
            if insufficient:
                value += ',error="insufficient_scope"'
        else:
            value = f'Basic realm="{self.realm}"'
        return RegistryError("UNAUTHORIZED", message, headers={"WWW-Authenticate": value})

    async def require(self, request: web.Request, name: str | None, actions: frozenset[str]) -> Identity:
        """Raise 401 (log in, or get a wider token) or 403 unless the caller may do actions on name."""
        identity = await self.identify(request)
        if name is None:  # the API root and the catalog: any logged-in caller
            if identity.anonymous:
                raise self.challenge(request, None, "authentication required")
            return identity
        allowed = self.rules.allowed(identity, name)
        if actions <= allowed:
            return identity
        scope = f"repository:{name}:{','.join(sorted(actions))}"
        if identity.anonymous:
            raise self.challenge(request, scope, "authentication required")
        if self.mode == "token":
            raise self.challenge(request, scope, f"token does not grant {','.join(sorted(actions))} on {name}",
                                 insufficient=True)
        raise RegistryError("DENIED", f"{identity.name} may not {','.join(sorted(actions - allowed))} {name}",
                            {"repository": name, "actions": sorted(actions)})

    async def may(self, request: web.Request, name: str, action: str, granted: bool = False) -> bool:
        """By the rules for the caller as a user (for a token holder too: a catalog token names no repository);
        granted: a token holder only as far as the token grants (a mount's source, as Distribution checks it)."""
        identity = await self.identify(request)
        return action in self.rules.allowed(identity if granted else Identity(identity.name), name)


def _basic(credentials: str) -> tuple[str, str] | None:
    """(user, password), or None for a header that is not Basic credentials at all."""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None
