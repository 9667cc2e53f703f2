"""The built-in token service at /auth/token (the Docker registry token spec, and its OAuth2 form).

`docker login` asks it with Basic credentials and `offline_token=true` and keeps
the refresh token it gets; later logins trade that for access tokens. Every
scope asked for is granted only as far as the access rules allow.
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from ..errors import RegistryError
from ..forms import read_form
from ..observability.metrics import AUTH_ATTEMPTS
from .access import ANONYMOUS, AccessRules, Identity, Scope
from .guard import Guard, _basic
from .htpasswd import Htpasswd
from .tokens import TokenError, TokenSigner

ACCESS_TOKEN_SECONDS = 300
REFRESH_TOKEN_SECONDS = 30 * 24 * 3600
QUERY_PARAMETERS = {"service", "scope", "offline_token", "client_id", "account"}


class TokenService:
    def __init__(self, signer: TokenSigner, htpasswd: Htpasswd, rules: AccessRules, guard: Guard) -> None:
        self.signer = signer
        self.htpasswd = htpasswd
        self.rules = rules
        self.guard = guard

    async def handle(self, request: web.Request) -> web.Response:
        # the OAuth2 grants carry secrets: only in a POST body, never in a URL that gets logged
        params: dict[str, Any] = {k: v for k, v in request.query.items() if k in QUERY_PARAMETERS}
        scopes = request.query.getall("scope", [])
        if request.method == "POST":
            form = await read_form(request)
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
            scopes += [s for v in form.getall("scope", []) if isinstance(v, str) for s in v.split(" ") if s]
        service = params.get("service")
        if service and service != self.signer.service:
            raise RegistryError("DENIED", f"this token service serves {self.signer.service!r}, not {service!r}")
        user, offline = await self._authenticate(request, params)
        if user:
            AUTH_ATTEMPTS.labels("success").inc()
        granted = self._grant(Identity(user) if user else ANONYMOUS, scopes)
        claims: dict[str, Any] = {"sub": user or "", "access": granted}
        token = self.signer.sign(claims, ACCESS_TOKEN_SECONDS)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        body: dict[str, Any] = {"token": token, "access_token": token, "expires_in": ACCESS_TOKEN_SECONDS,
                                "issued_at": now, "scope": " ".join(scopes)}
        if offline and user:
            body["refresh_token"] = self.signer.sign({"sub": user, "typ": "refresh"}, REFRESH_TOKEN_SECONDS)
        return web.json_response(body)

    async def _authenticate(self, request: web.Request, params: dict[str, Any]) -> tuple[str | None, bool]:
        """The user (None: anonymous) and whether a refresh token was asked for."""
        client = request.remote or "unknown"
        grant = params.get("grant_type")
        if grant == "refresh_token":
            self.guard.limiter.check(client)
            try:
                return self.signer.verify_refresh(str(params.get("refresh_token", ""))), True
            except TokenError as exc:
                raise self.guard.failed_login(request, str(exc)) from None
        if grant == "password":
            user, password = str(params.get("username", "")), str(params.get("password", ""))
            offline = params.get("access_type") == "offline"
        else:
            header = request.headers.get("Authorization", "")
            if not header.lower().startswith("basic "):
                return None, False
            user, password = _basic(header[6:]) or ("", "")
            offline = str(params.get("offline_token", "")).lower() == "true"
        self.guard.limiter.check(client)
        if not user or not await self.htpasswd.verify(user, password):
            raise self.guard.failed_login(request, f"wrong password or unknown user {user!r}")
        return user, offline

    def _grant(self, identity: Identity, scopes: list[str]) -> list[dict[str, Any]]:
        granted = []
        for text in scopes:
            try:
                scope = Scope.parse(text)
            except ValueError:
                continue
            if scope.type == "registry" and scope.name == "catalog":
                if not identity.anonymous:
                    granted.append({"type": "registry", "name": "catalog", "actions": ["*"]})
                continue
            if scope.type != "repository":
                continue
            actions = scope.actions & self.rules.allowed(identity, scope.name)
            if "*" in scope.actions:
                actions = self.rules.allowed(identity, scope.name)
            granted.append({"type": "repository", "name": scope.name, "actions": sorted(actions)})
        return granted

