"""sd_notify without libsystemd: tell systemd (Type=notify) when the registry listens and when it stops.

A datagram to the socket named by NOTIFY_SOCKET (a path, or "@name" in the abstract namespace); without the
variable this does nothing, so running outside systemd costs nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("registry.systemd")


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1"); False when not run by systemd or the socket refused it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", os.environ["NOTIFY_SOCKET"], exc)
        return False
    return True

