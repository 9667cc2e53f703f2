"""schemathesis hooks for tests/test_openapi_schemathesis.py (loaded by tests/schemathesis.toml).

Generated digests almost never match the bytes sent, so every push would end in DIGEST_INVALID and
nothing would be stored for the stateful runs to pull, list and delete. These hooks give half of the
pushes (monolithic blob POSTs, upload PUTs after the PATCHes the registry took, manifest PUTs by
digest) the digest of what was really sent, and half of the chunks with a Content-Range the range
where the upload ends; the other half keep what was generated, so mismatches stay tested. A PUT
that switches read-only mode on is followed by one that switches it off again, so that the writes
after it are not all refused. An upload whose finishing PUT failed is gone, as in Distribution; the
check that a created resource stays available is told so.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import requests
import schemathesis

_DIGEST = re.compile(r"(sha256|sha512):[a-f0-9]+")
#: (repository, upload id) -> the bytes the registry acknowledged for that upload so far
_uploaded: dict[tuple[str, str], bytes] = {}
#: uploads whose finishing PUT failed: the registry discards them then, as Distribution does
_discarded: set[tuple[str, str]] = set()


def _sent_body(case: schemathesis.Case) -> bytes:
    """The body exactly as the transport will send it."""
    kwargs = case.as_transport_kwargs(base_url="http://registry")
    body = requests.Request(kwargs["method"], kwargs["url"], json=kwargs.get("json"),
                            data=kwargs.get("data")).prepare().body
    if body is None:
        return b""
    return body if isinstance(body, bytes) else body.encode()


def _keep(data: bytes) -> bool:
    """Whether to fix this request: for half of the bodies, chosen by their bytes (so a seed repeats)."""
    return not hashlib.sha256(data).digest()[0] & 1


def _matching(generated: Any, data: bytes) -> str | None:
    """The digest of data with the generated digest's algorithm; None to keep the generated one."""
    match = _DIGEST.fullmatch(generated) if isinstance(generated, str) else None
    if match is None or not _keep(data + generated.encode()):
        return None
    return f"{match.group(1)}:{hashlib.new(match.group(1), data).hexdigest()}"


def _upload_key(case: schemathesis.Case) -> tuple[str, str] | None:
    params = case.path_parameters or {}
    name, upload_id = params.get("name"), params.get("upload_id")
    return (name, upload_id) if isinstance(name, str) and isinstance(upload_id, str) else None


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    path, method = case.operation.path, case.method.upper()
    query = case.query if isinstance(case.query, dict) else {}
    if method == "POST" and path == "/v2/{name}/blobs/uploads/" and "digest" in query and not query.get("mount"):
        digest = _matching(query["digest"], _sent_body(case))
        if digest:
            query["digest"] = digest
    elif path == "/v2/{name}/blobs/uploads/{upload_id}" and method in ("PATCH", "PUT"):
        key = _upload_key(case)
        if key in _uploaded:
            data, body = _uploaded[key], _sent_body(case)
            headers = case.headers if isinstance(case.headers, dict) else {}
            if "Content-Range" in headers and body and _keep(body):  # the chunk where the upload ends
                headers["Content-Range"] = f"{len(data)}-{len(data) + len(body) - 1}"
            digest = _matching(query.get("digest"), data + body) if method == "PUT" else None
            if digest:
                query["digest"] = digest
    elif method == "PUT" and path == "/v2/{name}/manifests/{reference}" and case.path_parameters:
        digest = _matching(case.path_parameters.get("reference"), _sent_body(case))
        if digest:
            case.path_parameters["reference"] = digest


def _mismatch(response: Any) -> bool:
    """Whether a finishing PUT failed because the data has another digest (the upload is then gone;
    a missing or malformed digest leaves it)."""
    try:
        detail = response.json()["errors"][0].get("detail")
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    return isinstance(detail, dict) and "computed" in detail


@schemathesis.hook
def after_call(context: schemathesis.HookContext, case: schemathesis.Case, response: Any) -> None:
    path, method, status = case.operation.path, case.method.upper(), response.status_code
    if path == "/v2/{name}/blobs/uploads/" and status == 202:
        name = (case.path_parameters or {}).get("name")
        _uploaded[(name, response.headers["docker-upload-uuid"][0])] = b""
    elif path == "/v2/{name}/blobs/uploads/{upload_id}":
        key = _upload_key(case)
        if method == "PATCH" and status == 202 and key in _uploaded:
            _uploaded[key] += _sent_body(case)
        elif method in ("PUT", "DELETE") and status < 500:
            _uploaded.pop(key, None)
            if method == "PUT" and status == 400 and key is not None and _mismatch(response):
                _discarded.add(key)
    elif path == "/admin/readonly" and method == "PUT" and status == 200 and response.json().get("enabled"):
        sent = response.request
        requests.put(sent.url, json={"enabled": False}, timeout=30,
                     headers={k: v for k, v in sent.headers.items() if k.lower() == "authorization"})


@schemathesis.hook
def filter_failure(context: schemathesis.HookContext, failure: Any, case: schemathesis.Case, response: Any) -> bool:
    """Keep every failure but "created resource not found" for an upload whose finish failed: the
    registry discarded it (so that a client starts afresh), which the check cannot know."""
    return not (getattr(failure, "code", None) == "ST302" and _upload_key(case) in _discarded)
