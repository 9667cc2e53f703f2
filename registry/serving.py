"""`registry serve`: listen (plain HTTP or TLS), say what matters at startup, stop gracefully.

At SIGTERM or SIGINT /readyz turns 503 at once; after http.shutdowndelay the server stops accepting
connections and gives requests in flight up to http.draintimeout to finish before it exits.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import signal
import socket
from ssl import SSLContext

from aiohttp import web

from . import heap, systemd, version
from .assembly import Assembly, assemble
from .config import ConfigError, Settings
from .connections import GuardedSite, connection_limits, handler_options
from .observability import server as observability
from .observability.logs import configure_logging
from .tls import TlsSetupError, server_context

class StartupError(Exception):
    """The server could not start listening; the message says what to do."""


log = logging.getLogger("registry")


def serve(settings: Settings) -> None:
    configure_logging(settings.log)
    for line in settings.ignored:
        log.warning("config: ignoring %s", line)
    try:
        ssl_context = server_context(settings.http.tls)
    except TlsSetupError as exc:
        raise ConfigError(str(exc)) from None
    assembly = assemble(settings)
    heap.keep_freed_heap()
    loop = _new_loop()
    try:
        loop.run_until_complete(_run(assembly, settings, ssl_context))
    finally:
        loop.close()


async def _run(assembly: Assembly, settings: Settings, ssl_context: SSLContext | None) -> None:
    limits = connection_limits(settings.http)
    runner = web.AppRunner(assembly.app, **observability.runner_options(assembly.app, settings),
                           **handler_options(limits))
    await runner.setup()
    host, port = settings.http.host_port
    site = GuardedSite(runner, host, port, limits, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(_listen_error(settings.http.addr, exc)) from None
    try:
        debug_server = await observability.start_debug_server(assembly.app, settings)
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on {settings.http.debug.addr} (http.debug.addr): {exc.strerror or exc}"
                           ) from None
    log.info("%s", startup_line(assembly, settings, ssl_context))
    systemd.notify("READY=1")
    if assembly.guard is None and not _loopback(host):
        log.warning("no authentication, and listening on %s: anyone who can reach it may push and delete; "
                    "configure auth (see the README)", settings.http.addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    systemd.notify("STOPPING=1")
    await observability.shut_down(assembly.app, settings, runner)
    if debug_server is not None:
        await debug_server.stop()
    log.info("stopped")


def startup_line(assembly: Assembly, settings: Settings, ssl_context: SSLContext | None) -> str:
    """Where it listens and stores, and every switch that matters for security."""
    scheme = "https" if ssl_context else "http"
    tls = "off" if ssl_context is None else ("on, client certificates required" if settings.http.tls.clientcas
                                             else "on")
    policy = assembly.registry.policy
    parts = [
        f"auth {assembly.guard.mode if assembly.guard else 'off'}",
        f"TLS {tls}",
        f"deletes {'on' if policy.delete_enabled else 'off'}",
        f"read-only {'on' if policy.read_only else 'off'}",
    ]
    if assembly.mirror is not None:
        parts.append("mirroring " + ", ".join(f"{u.prefix or '*'} from {u.url}" for u in assembly.mirror.upstreams))
    return (f"registry {version.describe()} listening on {scheme}://{settings.http.addr}, "
            f"storing in {assembly.where} ({settings.storage.driver}): {', '.join(parts)}")


def _listen_error(addr: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {addr}: the port is in use (another registry?); choose another with --addr or http.addr"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {addr}: this host has no such address; use one of its addresses, "
                "or :PORT for every interface")
    if exc.errno == errno.EACCES:
        return f"cannot listen on {addr}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {addr}: the host name does not resolve ({exc.strerror})"
    return f"cannot listen on {addr}: {exc.strerror or exc}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
