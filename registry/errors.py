"""The registry's error codes: one table of OCI (and Docker) codes to HTTP status.

Domain code raises RegistryError with a code from this table; the HTTP layer
renders every one of them, in one place, as the spec's JSON envelope.
"""

from __future__ import annotations

import json
from typing import Any

#: code -> (HTTP status, default message). A name may alias a wire code with another
#: status ("MANIFEST_TOO_LARGE" is MANIFEST_INVALID with 413): see WIRE_CODES.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "TAG_INVALID": (400, "manifest tag did not match URI"),
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "RANGE_INVALID": (416, "invalid content range"),
    "MANIFEST_TOO_LARGE": (413, "manifest exceeds the size limit"),
    "TOO_MANY_TAGS": (414, "too many tag parameters"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    "NOT_FOUND": (404, "no route for this request"),
    "INVALID_REQUEST": (400, "invalid request body"),  # ours: the admin API's body, and malformed HTTP
    "UNKNOWN": (500, "unknown error"),
    "UNAVAILABLE": (503, "service unavailable"),
    "STORAGE_FULL": (507, "insufficient storage: the registry's storage is full"),
}

#: names whose code on the wire is another, spec-defined one
WIRE_CODES = {"MANIFEST_TOO_LARGE": "MANIFEST_INVALID", "TOO_MANY_TAGS": "TAG_INVALID",
              "STORAGE_FULL": "UNAVAILABLE"}


class RegistryError(Exception):
    """An error a client sees, with its OCI code, message and optional detail."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code}")
        self.code = code
        self.status, default = ERROR_CODES[code]
        self.message = message or default
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": WIRE_CODES.get(self.code, self.code), "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()
