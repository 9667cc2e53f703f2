"""Misbehaving clients on real sockets, and a watch on the registry process while they misbehave.

`watched(server)` runs a Probe beside an attack: a new client asking `GET /v2/` every
PROBE_PERIOD on a connection of its own (as a newcomer would), timing each answer, while the
server's resident memory and open descriptors are sampled from /proc. A test asserts on what
a user would see: every probe answered within PROBE_LIMIT_SECONDS, memory under
RSS_LIMIT_MIB; and once the attack is over, the descriptors back where they were.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import threading
import time
from typing import Callable, Iterator

import requests

from .servers import RegistryServer

PROBE_PERIOD = 0.1
MIN_PROBES = 5
PROBE_LIMIT_SECONDS = 1.0
RSS_LIMIT_MIB = 300.0


class ProcessWatch:
    """The registry process as /proc shows it."""

    def __init__(self, server: RegistryServer) -> None:
        assert server.proc is not None
        self.pid = server.proc.pid

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def settle(self, descriptors: int, timeout: float = 15.0) -> int:
        """Wait until the process holds at most `descriptors` open; what it holds then."""
        deadline = time.monotonic() + timeout
        while (held := self.descriptors()) > descriptors and time.monotonic() < deadline:
            time.sleep(0.1)
        return held


class Probe(threading.Thread):
    """`GET /v2/` on a new connection every PROBE_PERIOD, timed; memory and descriptors sampled alike."""

    def __init__(self, server: RegistryServer) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.url}/v2/"
        self.watch = ProcessWatch(server)
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.peak_rss_mib = 0.0
        self.peak_descriptors = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_rss_mib = max(self.peak_rss_mib, self.watch.rss_mib())
            self.peak_descriptors = max(self.peak_descriptors, self.watch.descriptors())
            started = time.monotonic()
            try:
                answer = requests.get(self.url, timeout=10, headers={"Connection": "close"})
                if answer.status_code != 200:
                    self.failures.append(f"status {answer.status_code}")
            except requests.RequestException as exc:
                self.failures.append(type(exc).__name__)
                self.latencies.append(math.inf)
            else:
                self.latencies.append(time.monotonic() - started)
            self._stop_event.wait(PROBE_PERIOD)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def has_enough(self) -> bool:
        """Whether enough probes ran for a verdict; a quick attack is repeated until they have."""
        return len(self.latencies) >= MIN_PROBES

    @property
    def worst(self) -> float:
        return max(self.latencies, default=math.inf)

    def assert_held_up(self) -> None:
        """What a newcomer saw during the attack: quick answers, and the server within its memory."""
        assert self.has_enough(), f"only {len(self.latencies)} probes ran"
        assert not self.failures, self.failures[:5]
        assert self.worst < PROBE_LIMIT_SECONDS, f"GET /v2/ took {self.worst:.2f}s under attack"
        assert self.peak_rss_mib < RSS_LIMIT_MIB, f"the server grew to {self.peak_rss_mib:.0f} MiB"


@contextlib.contextmanager
def watched(server: RegistryServer) -> Iterator[Probe]:
    probe = Probe(server)
    probe.start()
    try:
        yield probe
    finally:
        probe.stop()


def connect(server: RegistryServer, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end closed (or reset) the connection, without waiting."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(65536, socket.MSG_PEEK) == b""
    except OSError:
        return True


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closed the connection (reading and dropping what it sent); inf if it did not."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < timeout:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - started
    return math.inf


def read_response_head(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str]]:
    """The status and headers of the response waiting on sock (the body is left unread)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data[:200]!r}")
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), headers


class Slowloris(threading.Thread):
    """`count` connections each sending a request head one byte every `interval`, never finishing it;
    a connection the server closes is replaced by a new one. `closed` counts the server's closes."""

    HEAD = b"GET /v2/ HTTP/1.1\r\nHost: registry\r\nX-Padding: " + b"a" * 4000

    def __init__(self, server: RegistryServer, count: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.count = count
        self.interval = interval
        self.closed = 0
        self._sockets: list[tuple[socket.socket, int]] = []
        self._stop_event = threading.Event()

    def _open(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=0.2)
        except OSError:
            return  # the backlog is full: try again on the next round
        sock.setblocking(False)
        self._sockets.append((sock, 0))

    def run(self) -> None:
        while not self._stop_event.is_set():
            while len(self._sockets) < self.count and not self._stop_event.is_set():
                self._open()
            kept = []
            for sock, sent in self._sockets:
                if closed_by_peer(sock):
                    self.closed += 1
                    sock.close()
                    continue
                with contextlib.suppress(OSError):
                    sock.send(self.HEAD[sent % len(self.HEAD):][:1])
                kept.append((sock, sent + 1))
            self._sockets = kept
            self._stop_event.wait(self.interval)
        for sock, _ in self._sockets:
            sock.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_for(seconds: float, condition: Callable[[], bool] = lambda: True) -> None:
    """Let an attack go on for `seconds` (or until condition() is false)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and condition():
        time.sleep(0.1)
