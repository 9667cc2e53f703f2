"""A fault-injecting HTTP proxy in front of an S3 endpoint (moto), for the S3 tests.

It forwards every request unchanged, counts requests by S3 operation (so a test can
assert what an API call cost, or that multipart copies were used), and can be told
to fail the next N requests of an operation the ways S3 and networks fail: a 500
InternalError, a 503 SlowDown, a connection reset with no response, a stall that
outlasts the client's read timeout, or a response cut off halfway through its body.
It runs in a thread of the test process, on a random loopback port; the registry
under test is given its URL as the S3 endpoint.

The helpers at the end read the bucket directly, to check what the registry left there.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import struct
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

FaultKind = Literal["internal-error", "slow-down", "reset", "stall", "truncate", "storage-full"]
#: all but "truncate" fail before S3 sees the request; "truncate" forwards it, then
#: sends the response's headers and half its body before closing the connection;
#: "storage-full" is what MinIO answers when its disks (or the bucket's quota) are full
FAULT_KINDS: tuple[FaultKind, ...] = ("internal-error", "slow-down", "reset", "stall", "truncate", "storage-full")

#: headers that belong to one connection, not to the request or response
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
               "expect"}
_COPY_RANGE = re.compile(r"bytes=(\d+)-(\d+)")
_FIRST_KEY = re.compile(rb"<Key>([^<]*)</Key>")


@dataclass(frozen=True)
class Call:
    """One request the proxy received, and what it did with it."""

    operation: str
    #: the object's key; for a listing, its prefix; for DeleteObjects, the first key deleted
    key: str
    fault: FaultKind | None
    #: bytes a part, object or copied range carries (request body, or x-amz-copy-source-range)
    size: int = 0
    #: partNumber of UploadPart / UploadPartCopy
    part: int | None = None


@dataclass
class _Fault:
    operation: str
    kind: FaultKind
    remaining: int
    key_contains: str | None


def operation_of(method: str, path: str, query: dict[str, list[str]], headers: http.client.HTTPMessage) -> str:
    """The S3 API operation a path-style request stands for (method + query markers + copy header)."""
    _, _, key = path.lstrip("/").partition("/")
    copy = "x-amz-copy-source" in headers
    if method == "GET":
        if not key:
            if "list-type" in query:
                return "ListObjectsV2"
            if "uploads" in query:
                return "ListMultipartUploads"
            return "ListObjects" if path.strip("/") else "ListBuckets"
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    if method == "PUT":
        if not key:
            return "CreateBucket"
        if "partNumber" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "delete" in query:
            return "DeleteObjects"
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if key else "DeleteBucket"
    return f"{method} {path}"


def error_body(code: str, message: str) -> bytes:
    """S3's XML error document, which botocore parses into the error code it retries on."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()


class S3FaultProxy:
    """Forwards to `upstream` (http://host:port); see the module docstring."""

    def __init__(self, upstream: str, stall_seconds: float = 5.0) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream = (parts.hostname, parts.port)
        #: how long a stalled request is held before its connection is dropped
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._calls: list[Call] = []
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "S3FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use ----------------------------------------------------------------------

    def inject(self, operation: str, kind: FaultKind, times: int = 1, key_contains: str | None = None) -> None:
        """Fail the next `times` requests of `operation` (whose key contains key_contains, if given)."""
        assert kind in FAULT_KINDS, kind
        with self._lock:
            self._faults.append(_Fault(operation, kind, times, key_contains))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults_left(self) -> int:
        """Injected failures not yet delivered (0 once every one has hit a request)."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def reset_counts(self) -> None:
        with self._lock:
            self._calls.clear()

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def counts(self) -> Counter[str]:
        """Requests received per operation since the last reset_counts, failed ones included."""
        return Counter(call.operation for call in self.calls)

    def faults_delivered(self) -> Counter[str]:
        return Counter(call.operation for call in self.calls if call.fault is not None)

    # -- the server ----------------------------------------------------------------------------

    def _take_fault(self, operation: str, key: str, size: int, part: int | None) -> FaultKind | None:
        with self._lock:
            fault = next((f for f in self._faults if f.operation == operation and f.remaining > 0
                          and (f.key_contains is None or f.key_contains in key)), None)
            if fault is not None:
                fault.remaining -= 1
            kind = fault.kind if fault else None
            self._calls.append(Call(operation, key, kind, size, part))
            return kind

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and 100-continue, as botocore expects

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    data = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(data)
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                split = urlsplit(self.path)
                query = parse_qs(split.query, keep_blank_values=True)
                operation = operation_of(self.command, split.path, query, self.headers)
                key = unquote(split.path.lstrip("/").partition("/")[2]) or query.get("prefix", [""])[0]
                if operation == "DeleteObjects":
                    first = _FIRST_KEY.search(body)
                    key = first.group(1).decode() if first else ""
                size = len(body)
                copy_range = _COPY_RANGE.fullmatch(self.headers.get("x-amz-copy-source-range", ""))
                if copy_range:
                    size = int(copy_range.group(2)) - int(copy_range.group(1)) + 1
                part = int(query["partNumber"][0]) if "partNumber" in query else None
                fault = proxy._take_fault(operation, key, size, part)
                if fault == "reset":
                    self._reset()
                elif fault == "stall":
                    proxy._closing.wait(proxy.stall_seconds)
                    self._reset()
                elif fault == "internal-error":
                    self._reply(500, "Internal Server Error", [("Content-Type", "application/xml")],
                                error_body("InternalError", "We encountered an internal error. Please try again."))
                elif fault == "slow-down":
                    self._reply(503, "Slow Down", [("Content-Type", "application/xml")],
                                error_body("SlowDown", "Please reduce your request rate."))
                elif fault == "storage-full":
                    self._reply(507, "Insufficient Storage", [("Content-Type", "application/xml")],
                                error_body("XMinioStorageFull", "Storage backend has reached its minimum free "
                                           "drive threshold. Please delete a few objects to proceed."))
                else:
                    self._forward(body, truncate=fault == "truncate")

            def _forward(self, body: bytes, truncate: bool = False) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
                finally:
                    upstream.close()
                self._reply(response.status, response.reason, kept, data, truncate)

            def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
                       truncate: bool = False) -> None:
                lines = [f"HTTP/1.1 {status} {reason}"]
                if self.command == "HEAD":  # the entity's length, not that of the (absent) body
                    lines += [f"{k}: {v}" for k, v in headers]
                else:
                    lines += [f"{k}: {v}" for k, v in headers if k.lower() != "content-length"]
                    lines.append(f"Content-Length: {len(body)}")
                head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                if truncate:  # then a plain close (FIN), so that the half sent is surely received
                    self.wfile.write(head + body[:len(body) // 2])
                    self.close_connection = True
                else:  # one write: headers and body in separate segments would meet delayed ACKs
                    self.wfile.write(head if self.command == "HEAD" else head + body)

            def _reset(self) -> None:
                """Drop the connection with a TCP reset: what was sent so far is all the client gets."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        return Handler


# -- what the S3 tests check in the bucket, read directly (not through the proxy) ---------------

_BLOB_KEY = re.compile(r"docker/registry/v2/blobs/(?P<alg>[a-z0-9]+)/(?P<hh>[0-9a-f]{2})/(?P<hex>[0-9a-f]+)/data")


def bucket_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every object key under prefix, raw (segments and all)."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def verify_blob_objects(s3: Any, bucket: str, root: str = "") -> dict[str, bytes]:
    """Every object under the blob store, as {digest: bytes}, after checking that each one is a
    `data` object at the key of the digest its bytes hash to: nothing half-written, nothing else."""
    prefix = f"{root.strip('/')}/" if root.strip("/") else ""
    blobs: dict[str, bytes] = {}
    for key in bucket_keys(s3, bucket, f"{prefix}docker/registry/v2/blobs/"):
        match = _BLOB_KEY.fullmatch(key[len(prefix):])
        assert match and match["hex"].startswith(match["hh"]), f"stray object in the blob store: {key}"
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        digest = f"{match['alg']}:{match['hex']}"
        assert hashlib.new(match["alg"], data).hexdigest() == match["hex"], f"{key} holds other bytes"
        blobs[digest] = data
    return blobs


def pending_multipart_uploads(s3: Any, bucket: str) -> list[str]:
    """Keys of multipart uploads begun and neither completed nor aborted."""
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
