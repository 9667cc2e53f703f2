"""A minimal HTTP/1.1 client over a raw socket, so the client is never the bottleneck.

Request bodies come from memory or straight from a file with the kernel's sendfile
(no copy through Python, never the whole blob in memory); response bodies can be
discarded into one reused buffer. Keep-alive; one connection per thread.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

RECV_SIZE = 1 << 20


@dataclass(frozen=True)
class FileSlice:
    """`count` bytes of the file at `path` from `offset`, sent with sendfile."""

    path: str
    offset: int
    count: int


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    received: int = 0  # body bytes read, kept or discarded

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


class HTTPError(Exception):
    pass


def target_of(location: str) -> str:
    """The path and query of a Location, absolute (Distribution) or relative (ours)."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(target: str, **params: str) -> str:
    sep = "&" if "?" in target else "?"
    return target + sep + "&".join(f"{k}={v}" for k, v in params.items())


class Connection:
    def __init__(self, host: str, port: int, timeout: float = 600) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.scratch = memoryview(bytearray(RECV_SIZE))

    def _connect(self) -> socket.socket:
        if self.sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock, self.buf = sock, bytearray()
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes | FileSlice | None = None, discard: bool = False) -> Response:
        """Send one request and read its whole response; `discard` drops the body bytes."""
        sock = self._connect()
        length = 0 if body is None else (body.count if isinstance(body, FileSlice) else len(body))
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}", "User-Agent: registry-bench"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if isinstance(body, FileSlice):
                sock.sendall(head)
                with open(body.path, "rb") as f:
                    sent = sock.sendfile(f, body.offset, body.count)
                if sent != body.count:
                    raise HTTPError(f"sent {sent} of {body.count} bytes")
            else:
                sock.sendall(head + (body or b""))
            response = self._read_response(method, discard)
        except BaseException:
            self.close()
            raise
        if response.header("connection").lower() == "close":
            self.close()
        return response

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise HTTPError("connection closed by server")
        self.buf += data

    def _read_line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return line

    def _read_response(self, method: str, discard: bool) -> Response:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        status = int(head[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        response = Response(status, headers)
        if method == "HEAD" or status in (204, 304) or status < 200:
            return response
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while (size := int(self._read_line().split(b";")[0], 16)) > 0:
                parts.append(self._read_exact(size, discard))
                response.received += size
                self._read_line()
            while self._read_line():  # trailers
                pass
            response.body = b"".join(parts)
        elif "content-length" in headers:
            count = int(headers["content-length"])
            response.body = self._read_exact(count, discard)
            response.received = count
        else:
            raise HTTPError("response without a length")
        return response

    def _read_exact(self, count: int, discard: bool) -> bytes:
        """`count` body bytes; when discarding, read into one scratch buffer and drop them."""
        if not discard:
            while len(self.buf) < count:
                self._fill()
            data = bytes(self.buf[:count])
            del self.buf[:count]
            return data
        take = min(count, len(self.buf))
        del self.buf[:take]
        left = count - take
        assert self.sock is not None
        while left:
            got = self.sock.recv_into(self.scratch, min(left, RECV_SIZE))
            if not got:
                raise HTTPError("connection closed mid-body")
            left -= got
        return b""


def expect(response: Response, *statuses: int) -> Response:
    if response.status not in statuses:
        raise HTTPError(f"expected {statuses}, got {response.status}: {response.body[:300]!r}")
    return response
