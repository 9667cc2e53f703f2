"""GET and PUT /admin/readonly: switch read-only mode while serving, without a restart.

    curl -X PUT -d '{"enabled": true}' http://127.0.0.1:5000/admin/readonly

Who may: with auth configured, members of the access rules' `admins` group (or, with no
`auth.access` section, where every user may do everything anyway, any authenticated user);
without auth, only clients on the loopback address that did not come through a proxy (no
Forwarded or X-Forwarded-For header), since anyone who can reach an open registry could
otherwise lock it. The switch is this process's: each replica of a scaled-out registry has its
own, and a restart goes back to storage.maintenance.readonly.
"""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web

from ..client_json import parse_json
from ..errors import RegistryError
from .common import GUARD_KEY, registry_of

log = logging.getLogger("registry.admin")
ADMIN_GROUP = "admins"


async def get_readonly(request: web.Request) -> web.Response:
    await require_admin(request)
    return web.json_response({"enabled": registry_of(request).policy.read_only})


async def put_readonly(request: web.Request) -> web.Response:
    who = await require_admin(request)
    try:
        document = parse_json(await request.read())
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("enabled"), bool):
        raise RegistryError("INVALID_REQUEST", 'expected a JSON object {"enabled": true} or {"enabled": false}')
    policy = registry_of(request).policy
    if policy.read_only != document["enabled"]:
        policy.read_only = document["enabled"]
        log.warning("read-only mode %s by %s", "on" if policy.read_only else "off", who)
    return web.json_response({"enabled": policy.read_only})


async def require_admin(request: web.Request) -> str:
    """Who the caller is, for the log; 401 or 403 unless they may use the admin API."""
    guard = request.app.get(GUARD_KEY)
    if guard is None:
        if _local(request):
            return f"a loopback client ({request.remote})"
        raise RegistryError("DENIED", "without auth the admin API answers loopback clients only, not through a proxy")
    identity = await guard.identify(request)
    if identity.anonymous or identity.name is None:
        raise guard.challenge(request, None, "authentication required")
    rules = guard.rules
    everyone = rules.open_to_users and not rules.rules
    if not everyone and identity.name not in rules.groups.get(ADMIN_GROUP, frozenset()):
        raise RegistryError("DENIED", f"{identity.name} is not in the {ADMIN_GROUP} group")
    return identity.name


def _local(request: web.Request) -> bool:
    if "Forwarded" in request.headers or "X-Forwarded-For" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:  # a Unix socket, or no address at all
        return False
