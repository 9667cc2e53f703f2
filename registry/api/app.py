"""The aiohttp application: one route table, one error renderer."""

from __future__ import annotations

import logging
import re
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

from storage_backends import StorageError, StorageFull

from .. import ui
from ..domain import Registry
from ..errors import RegistryError
from ..references import check_name
from . import admin, base, blobs, catalog, manifests, openapi, referrers, tags, uploads
from ..auth.guard import BUILTIN_PATH, Guard
from ..auth.token_service import TokenService
from ..mirror.service import Mirror
from .budget import DEFAULT_MANIFEST_MEMORY, MANIFEST_MEMORY_KEY, MemoryBudget
from .common import GUARD_KEY, MIRROR_KEY, REGISTRY_KEY

log = logging.getLogger("registry.http")

Handler = Callable[..., Awaitable[web.StreamResponse]]
#: what each method needs on the repository it names (Distribution asks pull and push to push)
ACTIONS = {
    "GET": frozenset({"pull"}),
    "HEAD": frozenset({"pull"}),
    "POST": frozenset({"pull", "push"}),
    "PUT": frozenset({"pull", "push"}),
    "PATCH": frozenset({"pull", "push"}),
    "DELETE": frozenset({"delete"}),
}
_NAME = r"(?P<name>.+)"

#: (route name, path pattern, {method: handler}); the first pattern that matches wins. The names are
#: Distribution's (metrics and logs are labelled by them, never by path)
ROUTES: list[tuple[str, re.Pattern[str], dict[str, Handler]]] = [
    ("base", re.compile(r"/v2/?"), {"GET": base.version_check, "HEAD": base.version_check}),
    ("catalog", re.compile(r"/v2/_catalog"), {"GET": catalog.list_repositories}),
    ("tags", re.compile(rf"/v2/{_NAME}/tags/list"), {"GET": tags.list_tags}),
    (
        "manifest",
        re.compile(rf"/v2/{_NAME}/manifests/(?P<reference>[^/]+)"),
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    ("blob_upload", re.compile(rf"/v2/{_NAME}/blobs/uploads/?"), {"POST": uploads.start_upload}),
    (
        "blob_upload_chunk",
        re.compile(rf"/v2/{_NAME}/blobs/uploads/(?P<upload_id>[^/]+)"),
        {
            "GET": uploads.upload_status,
            "PATCH": uploads.upload_chunk,
            "PUT": uploads.finish_upload,
            "DELETE": uploads.cancel_upload,
        },
    ),
    (
        "blob",
        re.compile(rf"/v2/{_NAME}/blobs/(?P<digest>[^/]+)"),
        {"GET": blobs.get_blob, "HEAD": blobs.get_blob, "DELETE": blobs.delete_blob},
    ),
    ("referrers", re.compile(rf"/v2/{_NAME}/referrers/(?P<digest>[^/]+)"), {"GET": referrers.list_referrers}),
]


def route_of(path: str) -> tuple[str, dict[str, str]] | None:
    """The name and parameters of the /v2 route a path takes (for metrics and logs); None: no route."""
    for name, pattern, _ in ROUTES:
        match = pattern.fullmatch(path)
        if match is not None:
            return name, match.groupdict()
    return None


async def dispatch(request: web.Request) -> web.StreamResponse:
    path = request.path
    for _, pattern, methods in ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        handler = methods.get(request.method)
        if handler is None:
            raise RegistryError(
                "UNSUPPORTED",
                f"method {request.method} not allowed on {path}",
                headers={"Allow": ", ".join(methods)},
            )
        params = match.groupdict()
        if "name" in params:
            mirror = request.app.get(MIRROR_KEY)
            if mirror is not None:
                params["name"] = mirror.local_name(params["name"], request.query.get("ns"))
                if request.method not in ("GET", "HEAD"):
                    mirror.refuse_writes(params["name"])
            check_name(params["name"])
        guard = request.app.get(GUARD_KEY)
        if guard is not None:
            await guard.require(request, params.get("name"), ACTIONS[request.method])
        return await handler(request, **params)
    raise RegistryError("NOT_FOUND", f"no such endpoint: {path}")


def error_response(error: RegistryError, request: web.BaseRequest) -> web.Response:
    body = None if request.method == "HEAD" else error.body()
    return web.Response(status=error.status, body=body, content_type="application/json", headers=error.headers)


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves here as the spec's JSON error envelope, and only here."""
    try:
        return await handler(request)
    except RegistryError as error:
        return error_response(error, request)
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_response(RegistryError("NOT_FOUND", f"no such endpoint: {request.path}"), request)
        if exc.status == 405:  # RFC 9110: a 405 lists the methods the route has
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return error_response(RegistryError("UNSUPPORTED", f"method {request.method} not allowed",
                                                headers=allow), request)
        if exc.status == 413:
            return error_response(RegistryError("SIZE_INVALID", exc.text or "request body too large"), request)
        raise
    except StorageFull as exc:
        log.error("storage full serving %s %s: %s", request.method, request.path, exc)
        return error_response(RegistryError("STORAGE_FULL", "the registry's storage is full; try again once "
                                            "space is freed"), request)
    except StorageError as exc:
        log.error("storage failure serving %s %s: %s", request.method, request.path, exc)
        if _streaming(request):
            raise
        return error_response(RegistryError("UNAVAILABLE", "storage backend unavailable, try again later"), request)
    except ConnectionResetError:
        raise  # a body cut off on purpose (see _streaming): aiohttp drops the connection
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        if _streaming(request):
            raise
        return error_response(RegistryError("UNKNOWN", "internal server error"), request)


def _streaming(request: web.Request) -> bool:
    """Whether part of a streamed body is out. An error response then would be read as more of
    that body (a wrong blob), and the client would wait for the rest: re-raised instead, the
    error makes aiohttp drop the connection, so the client sees a short body at once."""
    return request.writer is not None and request.writer.output_size > 0


def common_headers(base_url: str | None, extra: Mapping[str, list[str]]
                   ) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The API version, the operator's http.headers, and absolute Locations under http.host."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Docker-Distribution-API-Version"] = "registry/2.0"
        for name, values in extra.items():
            for value in values:
                response.headers.add(name, value)
        location = response.headers.get("Location")
        if base_url and location and location.startswith("/"):
            response.headers["Location"] = base_url.rstrip("/") + location

    return on_prepare


def create_app(
    registry: Registry,
    base_url: str | None = None,
    guard: Guard | None = None,
    token_service: TokenService | None = None,
    mirror: Mirror | None = None,
    headers: Mapping[str, list[str]] | None = None,
    ui_enabled: bool = True,
    secret: str | None = None,
    manifest_memory: int = DEFAULT_MANIFEST_MEMORY,
    **app_options: Any,
) -> web.Application:
    app = web.Application(middlewares=[render_errors], **app_options)
    app[REGISTRY_KEY] = registry
    app[MANIFEST_MEMORY_KEY] = MemoryBudget(manifest_memory)
    if mirror is not None:
        app[MIRROR_KEY] = mirror
        app.on_cleanup.append(lambda _: mirror.close())
    if guard is not None:
        app[GUARD_KEY] = guard
    app.router.add_route("GET", "/openapi.yaml", openapi.get_openapi)
    app.router.add_route("GET", "/admin/readonly", admin.get_readonly)
    app.router.add_route("PUT", "/admin/readonly", admin.put_readonly)
    app.router.add_route("*", "/v2", dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", dispatch)
    if token_service is not None:
        app.router.add_route("GET", BUILTIN_PATH, token_service.handle)
        app.router.add_route("POST", BUILTIN_PATH, token_service.handle)
    app.on_response_prepare.append(common_headers(base_url, headers or {}))
    if ui_enabled:
        ui.setup(app, registry, guard, mirror, secret, base_url)

    async def close(_: web.Application) -> None:
        await registry.close()

    app.on_cleanup.append(close)
    return app
