"""A client of one upstream registry: anonymous, Basic, or Bearer tokens cached until they expire."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
#: a token is dropped this long before its stated expiry
TOKEN_MARGIN_SECONDS = 10


class UpstreamError(Exception):
    """The upstream could not be asked, or answered with a server error or 429."""


@dataclass
class Upstream:
    """One upstream registry and the local names it serves."""

    url: str
    prefix: str = ""  # local names `<prefix>/<remote name>`; "" mirrors every name (Distribution's proxy)
    username: str | None = None
    password: str | None = None
    ttl: float = 300.0
    dockerhub: bool = False  # a one-component name means library/<name>
    timeout: float = 60.0
    #: aiohttp trace configs for the session (tracing.enabled: a span per upstream call)
    trace_configs: list[aiohttp.TraceConfig] = field(default_factory=list, repr=False)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def remote_name(self, local: str) -> str | None:
        """The upstream name for a local repository name, or None when this upstream does not serve it."""
        if self.prefix:
            if not local.startswith(self.prefix + "/"):
                return None
            local = local[len(self.prefix) + 1:]
        if self.dockerhub and "/" not in local:
            return f"library/{local}"
        return local

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10,
                                                                                sock_read=self.timeout),
                                                  trace_configs=self.trace_configs or None)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, remote: str, path: str, headers: dict[str, str] | None = None
                      ) -> aiohttp.ClientResponse:
        """`path` under /v2/<remote>/; retried once with credentials when challenged. The caller releases it."""
        url = f"{self.url.rstrip('/')}/v2/{remote}/{path}"
        scope = f"repository:{remote}:pull"
        try:
            response = await self._send(method, url, headers, scope)
            if response.status == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                await self._authenticate(challenge, scope)
                response = await self._send(method, url, headers, scope)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise UpstreamError(f"{self.url} unreachable: {type(exc).__name__}: {exc}") from None
        if response.status >= 500 or response.status == 429:
            response.release()
            raise UpstreamError(f"{self.url} answered {response.status}")
        return response

    async def _send(self, method: str, url: str, headers: dict[str, str] | None, scope: str
                    ) -> aiohttp.ClientResponse:
        all_headers = dict(headers or {})
        token = self._tokens.get(scope)
        if token is not None and token[1] > time.monotonic():
            all_headers["Authorization"] = token[0]
        return await self.session().request(method, url, headers=all_headers, allow_redirects=True)

    async def _authenticate(self, challenge: str, scope: str) -> None:
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self.username is None:
                return
            auth = aiohttp.BasicAuth(self.username, self.password or "")
            self._tokens[scope] = (auth.encode(), time.monotonic() + 3600)
            return
        if scheme.lower() != "bearer":
            return
        params = dict(_CHALLENGE_PARAM.findall(rest))
        realm = params.get("realm")
        if not realm:
            return
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        auth = aiohttp.BasicAuth(self.username, self.password or "") if self.username else None
        async with self.session().get(realm, params=query, auth=auth) as response:
            if response.status != 200:
                raise UpstreamError(f"token service {realm} answered {response.status}")
            body: dict[str, Any] = await response.json(content_type=None)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise UpstreamError(f"token service {realm} sent no token")
        lifetime = float(body.get("expires_in") or 60)
        self._tokens[scope] = (f"Bearer {token}", time.monotonic() + max(lifetime - TOKEN_MARGIN_SECONDS, 1))
