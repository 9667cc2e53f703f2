"""Posted HTML forms (the token service's OAuth2 grants, the web UI's forms), read safely."""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy

from .errors import RegistryError


async def read_form(request: web.Request) -> MultiDictProxy:
    """The body's fields; a body that is no readable form (a multipart body without its boundary,
    an unknown charset, bytes that are not UTF-8) is 400 INVALID_REQUEST rather than a crash."""
    try:
        return await request.post()
    except (ValueError, LookupError) as exc:  # UnicodeDecodeError is a ValueError
        raise RegistryError("INVALID_REQUEST", f"the body is not a readable form: {str(exc)[:200]}") from None
