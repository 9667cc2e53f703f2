"""The `registry` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import sys
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from aiohttp import web

from storage_backends import FilesystemBackend, MemoryBackend, StorageBackend
from storage_backends.s3 import S3Backend, S3Settings

from .api.app import create_app
from .auth.htpasswd import HtpasswdError, hash_password, read_entries, write_entries
from .auth.setup import AuthConfigError, build_auth
from .config import Config, ConfigError, load_config
from .domain import Policy, Registry
from .durations import parse_duration
from .errors import RegistryError
from .gc import GarbageCollector, GCSettings, garbage_collection
from .mirror.config import upstreams_from_config
from .mirror.eviction import CacheSettings, cache_eviction
from .mirror.service import Mirror
from .purging import purge_forever
from .retention import RetentionPolicy
from .tls import server_context, write_self_signed
from .usage import disk_usage
from .verify import Verifier

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i"'
log = logging.getLogger("registry")


def open_backend(config: Config) -> tuple[StorageBackend, str]:
    """The configured backend and a description of where it stores."""
    driver = config.storage_driver
    if driver == "inmemory":
        return MemoryBackend(), "memory"
    if driver == "s3":
        raw = config.get("storage", "s3") or {}
        redirect = not config.get("storage", "redirect", "disable", default=False)
        try:
            settings = S3Settings.from_config(raw, redirect=redirect)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"storage.s3: {exc}") from None
        where = f"s3://{settings.bucket}/{settings.rootdirectory}"
        return S3Backend(settings), where + (f" at {settings.regionendpoint}" if settings.regionendpoint else "")
    root = str(config.get("storage", "filesystem", "rootdirectory", default="./data"))
    backend = FilesystemBackend(root)
    return backend, backend.root


def build_registry(config: Config) -> tuple[Registry, str]:
    backend, where = open_backend(config)
    policy = Policy(
        delete_enabled=bool(config.get("storage", "delete", "enabled", default=True)),
        read_only=bool(config.get("storage", "maintenance", "readonly", "enabled", default=False)),
    )
    return Registry(backend, policy), where


def upload_purging(config: Config, backend: StorageBackend) -> Callable[[web.Application], AsyncIterator[None]] | None:
    """A background purge of abandoned uploads, on by default as in Distribution."""
    settings = config.get("storage", "maintenance", "uploadpurging", default={}) or {}
    if not settings.get("enabled", True):
        return None
    try:
        age = parse_duration(settings.get("age", "168h"))
        interval = parse_duration(settings.get("interval", "24h"))
    except ValueError as exc:
        raise ConfigError(f"storage.maintenance.uploadpurging: {exc}") from None
    if interval <= 0:
        raise ConfigError("storage.maintenance.uploadpurging.interval must be positive")
    dry_run = bool(settings.get("dryrun", False))

    async def run(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(purge_forever(backend, age, interval, dry_run))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(config: Config) -> None:
    level = str(config.get("log", "level", default="info")).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    registry, where = build_registry(config)
    try:
        guard, token_service = build_auth(config.get("auth"), where if config.storage_driver == "filesystem" else ".")
        ssl_context = server_context(config.get("http", "tls", default={}) or {})
    except (AuthConfigError, OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"auth/tls: {exc}") from None
    try:
        upstreams = upstreams_from_config(config.get("proxy"))
        cache = CacheSettings.from_config(config.get("proxy", "cache"))
    except (ValueError, RegistryError) as exc:
        raise ConfigError(f"proxy: {exc}") from None
    if cache is not None and not upstreams:
        raise ConfigError("proxy.cache needs proxy.remoteurl or proxy.upstreams")
    mirror = Mirror(registry, upstreams) if upstreams else None
    app = create_app(registry, base_url=config.get("http", "host"), guard=guard, token_service=token_service,
                     mirror=mirror)
    purging = upload_purging(config, registry.backend)
    if purging is not None:
        app.cleanup_ctx.append(purging)
    if mirror is not None and cache is not None:
        app.cleanup_ctx.append(cache_eviction(mirror, cache))
    try:
        retention = RetentionPolicy.from_config(config.get("storage", "retention"))
        collection = garbage_collection(config.get("storage", "gc"), registry,
                                        partial(retention.apply_logged, registry) if retention.rules else None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if collection is not None:
        app.cleanup_ctx.append(collection)
    host, port = config.host_port
    access_log = None if config.get("log", "accesslog", "disabled") else logging.getLogger("registry.access")
    read_only = " (read-only)" if registry.policy.read_only else ""
    scheme = "https" if ssl_context else "http"
    auth = f", auth: {guard.mode}" if guard else ""
    if mirror is not None:
        auth += ", mirroring " + ", ".join(f"{u.prefix or '*'} from {u.url}" for u in mirror.upstreams)
    log.warning("registry listening on %s://%s:%d, storing in %s%s%s", scheme, host, port, where, read_only, auth)
    web.run_app(
        app,
        host=host,
        port=port,
        ssl_context=ssl_context,
        access_log=access_log,
        access_log_format=ACCESS_LOG_FORMAT,
        print=None,
        shutdown_timeout=30,
        loop=_new_loop(),
    )


def _serve_command(args: argparse.Namespace) -> None:
    overrides: dict[str, Any] = {}
    if args.addr:
        overrides.setdefault("http", {})["addr"] = args.addr
    if args.root:
        overrides.setdefault("storage", {}).setdefault("filesystem", {})["rootdirectory"] = args.root
    if args.log_level:
        overrides.setdefault("log", {})["level"] = args.log_level
    if args.read_only:
        overrides.setdefault("storage", {}).setdefault("maintenance", {})["readonly"] = {"enabled": True}
    if args.no_delete:
        overrides.setdefault("storage", {})["delete"] = {"enabled": False}
    serve(load_config(args.config, overrides=overrides))


def _htpasswd_path(args: argparse.Namespace) -> Path:
    if args.htpasswd:
        return Path(args.htpasswd)
    path = load_config(args.config).get("auth", "htpasswd", "path")
    if not path:
        raise ConfigError("name the file with --htpasswd, or give a config with auth.htpasswd.path")
    return Path(path)


def _user_command(args: argparse.Namespace) -> None:
    path = _htpasswd_path(args)
    try:
        entries = read_entries(path)
    except HtpasswdError as exc:
        raise ConfigError(str(exc)) from None
    if args.action == "list":
        for user in sorted(entries):
            print(user)
        return
    if args.action == "remove":
        if entries.pop(args.name, None) is None:
            raise ConfigError(f"no user {args.name!r} in {path}")
        write_entries(path, entries)
        return
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(f"password for {args.name}: ")
    if not password:
        raise ConfigError("empty password")
    if ":" in args.name or not args.name:
        raise ConfigError("a user name must be non-empty and contain no ':'")
    entries[args.name] = hash_password(password)
    write_entries(path, entries)


def _gc_command(args: argparse.Namespace) -> None:
    """One collection now; the flags override storage.gc's grace and deleteuntagged."""
    config = load_config(args.config)
    try:
        settings = GCSettings.from_config(config.get("storage", "gc"))
        grace = settings.grace if args.grace is None else parse_duration(args.grace)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    registry, _ = build_registry(config)

    async def collect() -> None:
        try:
            report = await GarbageCollector(registry, grace, args.delete_untagged or settings.delete_untagged,
                                            args.dry_run).run()
        finally:
            await registry.close()
        for name, digest in report.untagged:
            print(f"untagged manifest {name}@{digest}")
        for digest, size in sorted(report.freed.items(), key=lambda item: str(item[0])):
            print(f"blob {digest} {size}")
        print(report.summary())

    asyncio.run(collect())


def _retention_command(args: argparse.Namespace) -> None:
    """Apply storage.retention now: untag what no rule keeps (the manifests stay until gc)."""
    config = load_config(args.config)
    try:
        policy = RetentionPolicy.from_config(config.get("storage", "retention"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not policy.rules:
        raise ConfigError("no storage.retention rules in the config")
    registry, _ = build_registry(config)

    async def apply() -> None:
        try:
            report = await policy.apply(registry, args.dry_run)
        finally:
            await registry.close()
        for name, tag, target in report.deleted:
            print(f"tag {name}:{tag} {target}")
        print(report.summary())

    asyncio.run(apply())


def _verify_command(args: argparse.Namespace) -> None:
    """Re-hash the store; exit status 1 when anything is corrupt or missing."""
    registry, _ = build_registry(load_config(args.config))

    async def verify() -> bool:
        try:
            report = await Verifier(registry, quarantine=args.quarantine).run()
        finally:
            await registry.close()
        for line in report.lines():
            print(line)
        return report.ok

    if not asyncio.run(verify()):
        sys.exit(1)


def _du_command(args: argparse.Namespace) -> None:
    registry, _ = build_registry(load_config(args.config))

    async def usage() -> None:
        try:
            report = await disk_usage(registry)
        finally:
            await registry.close()
        for line in report.lines():
            print(line)

    asyncio.run(usage())


def _gen_cert_command(args: argparse.Namespace) -> None:
    write_self_signed(args.hosts, Path(args.cert), Path(args.key), args.days)
    print(f"wrote {args.cert} and {args.key} for {', '.join(args.hosts)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="registry", description="An OCI image registry server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the registry API")
    serve_parser.add_argument("config_file", nargs="?", help="YAML config (as for Distribution's `registry serve`)")
    serve_parser.add_argument("--config", "-c", help="YAML config file")
    serve_parser.add_argument("--addr", help="listen address host:port (http.addr), default 127.0.0.1:5000")
    serve_parser.add_argument("--root", help="storage directory (storage.filesystem.rootdirectory), default ./data")
    serve_parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve_parser.add_argument("--read-only", action="store_true", help="refuse every write")
    serve_parser.add_argument("--no-delete", action="store_true", help="refuse deletes")
    serve_parser.set_defaults(func=_serve_command)

    user_parser = commands.add_parser("user", help="manage htpasswd users (bcrypt)")
    user_parser.add_argument("action", choices=["add", "remove", "list"])
    user_parser.add_argument("name", nargs="?", default="")
    user_parser.add_argument("--htpasswd", help="the htpasswd file (else auth.htpasswd.path of --config)")
    user_parser.add_argument("--config", "-c", help="YAML config file")
    user_parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user_parser.set_defaults(func=_user_command)

    gc_parser = commands.add_parser("gc", help="delete blob data no manifest references (garbage collection)")
    gc_parser.add_argument("--config", "-c", help="YAML config file (its storage section)")
    gc_parser.add_argument("--dry-run", action="store_true", help="report what would be freed, delete nothing")
    gc_parser.add_argument("--delete-untagged", action="store_true",
                           help="also remove manifests no tag reaches (storage.gc.deleteuntagged)")
    gc_parser.add_argument("--grace", help="never collect content younger than this (storage.gc.grace, default 1h)")
    gc_parser.set_defaults(func=_gc_command)

    retention_parser = commands.add_parser("retention", help="delete the tags no storage.retention rule keeps")
    retention_parser.add_argument("--config", "-c", help="YAML config file (its storage section)")
    retention_parser.add_argument("--dry-run", action="store_true", help="print the tags it would delete, delete none")
    retention_parser.set_defaults(func=_retention_command)

    verify_parser = commands.add_parser("verify", help="re-hash stored content; report corrupt or missing data")
    verify_parser.add_argument("--config", "-c", help="YAML config file (its storage section)")
    verify_parser.add_argument("--quarantine", action="store_true",
                               help="unlink corrupt objects and move their data to docker/registry/v2/quarantine")
    verify_parser.set_defaults(func=_verify_command)

    du_parser = commands.add_parser("du", help="storage used per repository (unique and shared bytes)")
    du_parser.add_argument("--config", "-c", help="YAML config file (its storage section)")
    du_parser.set_defaults(func=_du_command)

    cert_parser = commands.add_parser("gen-cert", help="write a self-signed TLS certificate and key")
    cert_parser.add_argument("hosts", nargs="+", help="host names or IP addresses the certificate is for")
    cert_parser.add_argument("--cert", default="registry.crt", help="certificate file to write")
    cert_parser.add_argument("--key", default="registry.key", help="key file to write")
    cert_parser.add_argument("--days", type=int, default=365)
    cert_parser.set_defaults(func=_gen_cert_command)
    args = parser.parse_args(argv)
    if args.command == "serve":
        args.config = args.config or args.config_file
    try:
        args.func(args)
    except ConfigError as exc:
        parser.exit(2, f"registry: {exc}\n")


if __name__ == "__main__":
    main()
