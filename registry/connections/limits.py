"""What bounds client connections: the configured deadlines and limit, fitted to the process's descriptors."""

from __future__ import annotations

import contextlib
import logging
import resource
from dataclasses import dataclass
from typing import Any

from ..config.schema import Http

log = logging.getLogger("registry.connections")

#: descriptors kept for everything but client connections: storage files, S3 connections, logs
RESERVED_DESCRIPTORS = 256


@dataclass(frozen=True)
class ConnectionLimits:
    """The http.timeouts and http.limits settings, in seconds and counts."""

    header: float
    body: float
    keepalive: float
    connections: int


def raise_descriptor_limit() -> int:
    """Lift the soft limit on open descriptors to the hard one; the soft limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft


def connection_cap(configured: int, descriptors: int) -> int:
    """The connections that fit beside what the server itself needs, at most `configured`."""
    reserve = min(RESERVED_DESCRIPTORS, descriptors // 4)
    cap = max(1, min(configured, descriptors - reserve))
    if cap < configured:
        log.warning("http.limits.connections is %d, but the descriptor limit (ulimit -n) is %d: serving at most "
                    "%d connections; raise the limit (LimitNOFILE=, ulimit -n) to serve more", configured,
                    descriptors, cap)
    return cap


def connection_limits(http: Http) -> ConnectionLimits:
    """The configured limits, the connection limit fitted to the descriptors this process may open."""
    timeouts = http.timeouts
    cap = connection_cap(http.limits.connections, raise_descriptor_limit())
    return ConnectionLimits(timeouts.header, timeouts.body, timeouts.keepalive, cap)


def handler_options(limits: ConnectionLimits) -> dict[str, Any]:
    """aiohttp's own per-connection settings (AppRunner keyword arguments) that go with GuardedHandler."""
    # no lingering read of unread bodies: GuardedHandler drains a bounded amount itself
    return {"keepalive_timeout": limits.keepalive, "lingering_time": 0}
