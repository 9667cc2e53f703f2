"""openapi.yaml and the server in step: the same routes and methods, the same error codes, a valid
OpenAPI 3.1 document, and the document the server serves at /openapi.yaml.

The route walk builds the application with every optional part on (auth with the built-in token
service, a mirror, the web UI): a feature that adds routes behind a new switch (health checks,
metrics on the main port) must turn it on in `fully_configured` too.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from aiohttp import web
from openapi_spec_validator import validate

from registry.api.app import ROUTES, dispatch
from registry.assembly import assemble
from registry.config import load_config
from registry.errors import ERROR_CODES, WIRE_CODES

from .auth_helpers import write_htpasswd
from .servers import RegistryServer

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
METHODS = {"get", "head", "post", "put", "patch", "delete", "options", "trace"}
#: a value for each path parameter, to find which route the server gives a documented path
SAMPLES = {
    "name": "team/app",
    "reference": "v1.0",
    "digest": "sha256:" + "a" * 64,
    "upload_id": str(uuid.UUID(int=1)),
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def fully_configured(tmp: Path) -> dict[str, Any]:
    """A configuration with every part of the server that adds routes switched on."""
    write_htpasswd(tmp / "htpasswd", {"alice": "secret"})
    return {
        "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}},
        "auth": {"htpasswd": {"path": str(tmp / "htpasswd")}, "token": {"builtin": True}},
        "proxy": {"upstreams": [{"prefix": "docker.io", "remoteurl": "http://127.0.0.1:9"}]},
        "ui": {"enabled": True},
        "http": {"debug": {"prometheus": {"mainport": True}}},  # metrics on the main port (off with auth)
    }


def _regex_path(pattern: re.Pattern[str]) -> str:
    """`/v2/(?P<name>.+)/blobs/uploads/?` -> `/v2/{name}/blobs/uploads/`"""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern).replace("/?", "/")


def server_routes(app: web.Application) -> set[tuple[str, str]]:
    """(path as OpenAPI writes it, method) for every route; the /v2/ ones from the dispatch table."""
    routes = set()
    for resource in app.router.resources():
        for route in resource:
            if route.handler is dispatch:
                continue
            assert route.method != "*", f"{resource.canonical} takes any method; the spec cannot say which"
            routes.add((resource.canonical, route.method))
    for *_, pattern, methods in ROUTES:
        routes |= {(_regex_path(pattern), method) for method in methods}
    return routes


def spec_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in spec["paths"].items() for method in item if method in METHODS}


def test_spec_is_valid_openapi_31(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    validate(spec)


def test_every_route_of_the_server_is_in_the_spec_and_back(spec: dict[str, Any], tmp_path: Path) -> None:
    """A route or method the server has and the spec lacks, or the other way round, fails here."""
    app = assemble(load_config(environ={}, overrides=fully_configured(tmp_path))).app
    served, documented = server_routes(app), spec_routes(spec)
    assert not served - documented, f"served but not in openapi.yaml: {sorted(served - documented)}"
    assert not documented - served, f"in openapi.yaml but not served: {sorted(documented - served)}"


def test_each_v2_path_reaches_the_route_it_documents(spec: dict[str, Any]) -> None:
    """The dispatch table's first match for a concrete path is the route of the path the spec writes."""
    for path in (p for p in spec["paths"] if p.startswith("/v2/")):
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)
        first = next(pattern for *_, pattern, _ in ROUTES if pattern.fullmatch(concrete))
        assert _regex_path(first) == path, (path, first.pattern)


def test_error_code_enum_is_the_error_table(spec: dict[str, Any]) -> None:
    enum = spec["components"]["schemas"]["ErrorCode"]["enum"]
    assert len(enum) == len(set(enum))
    assert set(enum) == {WIRE_CODES.get(code, code) for code in ERROR_CODES}


#: aiohttp's static file responses to conditional and range requests, which have no body
FILE_RESPONSES_WITHOUT_BODY = {f"{method} /ui/static/{{filename}} {status}"
                               for method in ("GET", "HEAD") for status in ("412", "416")}
#: not ready, or a failing check: the health endpoints' own documents (Distribution's for /debug/health)
HEALTH_RESPONSES = {f"{method} {path} 503" for method in ("GET", "HEAD") for path in ("/readyz", "/debug/health")}


def _responses(spec: dict[str, Any]):
    components = spec["components"]["responses"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                if "$ref" in response:
                    response = components[response["$ref"].rsplit("/", 1)[1]]
                yield f"{method.upper()} {path} {status}", status, response


def test_every_response_has_the_api_version_and_every_error_the_envelope(spec: dict[str, Any]) -> None:
    """Errors are the JSON envelope, except the web UI's pages, whose errors are pages too."""
    for where, status, response in _responses(spec):
        assert "Docker-Distribution-API-Version" in response.get("headers", {}), where
        if int(status) >= 400 and where not in HEALTH_RESPONSES:
            if where in FILE_RESPONSES_WITHOUT_BODY:
                assert "content" not in response, where
                continue
            content = response["content"]
            if "text/html" in content:
                assert where.split()[1] == "/" or where.split()[1].startswith("/ui/"), where
                continue
            assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}, where


def test_the_server_serves_the_spec(filesystem_registry: RegistryServer) -> None:
    r = requests.get(f"{filesystem_registry.url}/openapi.yaml", timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/yaml")
    assert r.content == SPEC_PATH.read_bytes()


def test_every_operation_on_a_name_documents_404(spec: dict[str, Any]) -> None:
    """A name with a line break takes no route: whatever the operation, 404 NOT_FOUND."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if "{name}" in path and method in METHODS:
                assert "404" in operation["responses"], f"{method.upper()} {path}"
