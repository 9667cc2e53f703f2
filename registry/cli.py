"""The `registry` command.

Every mistake an operator can make ends in one line on stderr saying what to fix, never a
traceback: exit status 2 when the configuration is wrong (a key, a value, or a file or directory
it names) or the command line is, 1 when the registry or a command could not do its work (a port
in use, an address the host does not have, a file that cannot be written).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from . import version
from .assembly import build_registry
from .auth.htpasswd import MAX_PASSWORD_BYTES, HtpasswdError, hash_password, read_entries, write_entries
from .config import ConfigError, Settings, load_config
from .maintenance.gc import GarbageCollector
from .maintenance.retention import RetentionPolicy
from .maintenance.usage import disk_usage
from .maintenance.verify import Verifier
from .serving import StartupError, serve
from .tls import check_host, write_self_signed


class CommandError(Exception):
    """A command that cannot do what was asked (exit status 1); the message says why."""


# -- reading the configuration, as every command does ---------------------------------------------

#: command-line flags and the keys they set, for `serve` and the maintenance commands
_FLAG_KEYS = {
    "addr": ("--addr", "http.addr"),
    "root": ("--root", "storage.filesystem.rootdirectory"),
    "log_level": ("--log-level", "log.level"),
}


def _settings(args: argparse.Namespace, extra: dict[str, Any] | None = None,
              extra_names: dict[str, str] | None = None) -> Settings:
    """The config file (if any), the environment, then the flags, checked by the schema."""
    overrides: dict[str, Any] = {}
    names = dict(extra_names or {})
    for attribute, (flag, key) in _FLAG_KEYS.items():
        value = getattr(args, attribute, None)
        if value is not None:
            _put(overrides, key, value)
            names[key] = flag
    for key, value in (extra or {}).items():
        _put(overrides, key, value)
    return load_config(getattr(args, "config", None), overrides=overrides, flag_names=names)


def _put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML config file (Distribution's keys; REGISTRY_* variables apply too)")
    parser.add_argument("--root", help="storage directory (storage.filesystem.rootdirectory)")


# -- serve ---------------------------------------------------------------------------------------

def _serve_command(args: argparse.Namespace) -> None:
    extra, names = {}, {}
    if args.read_only:
        extra["storage.maintenance.readonly.enabled"] = True
        names["storage.maintenance.readonly.enabled"] = "--read-only"
    if args.no_delete:
        extra["storage.delete.enabled"] = False
        names["storage.delete.enabled"] = "--no-delete"
    settings = _settings(args, extra, names)
    if args.root is not None and settings.storage.driver != "filesystem":
        raise ConfigError(f"--root sets the filesystem storage directory, but the config stores in "
                          f"storage.{settings.storage.driver}; drop --root or the other driver")
    serve(settings)


def _config_check_command(args: argparse.Namespace) -> None:
    """Validate; print the effective configuration, secrets masked, and what is ignored."""
    settings = load_config(args.file)
    effective = settings.model_dump(mode="json", exclude_none=True)
    sys.stdout.write(yaml.safe_dump(effective, sort_keys=False))
    for line in settings.ignored:
        print(f"# ignored: {line}")
    print(f"# {args.file or 'defaults and environment'}: OK", file=sys.stderr)


# -- users ---------------------------------------------------------------------------------------

def _htpasswd_path(args: argparse.Namespace) -> Path:
    if args.htpasswd:
        return Path(args.htpasswd)
    settings = load_config(args.config)
    if settings.auth is None or settings.auth.htpasswd is None:
        raise ConfigError("name the file with --htpasswd FILE, or give --config with auth.htpasswd.path")
    return Path(settings.auth.htpasswd.path)


def _read_users(path: Path, must_exist: bool) -> dict[str, bytes]:
    if path.is_dir():
        raise CommandError(f"{path} is a directory; give the htpasswd file's path")
    if must_exist and not path.exists():
        raise CommandError(f"no htpasswd file {path}; `registry user add NAME --htpasswd {path}` creates it")
    try:
        return read_entries(path)
    except (HtpasswdError, OSError, UnicodeDecodeError) as exc:
        raise CommandError(str(exc)) from None


def _write_users(path: Path, entries: dict[str, bytes]) -> None:
    try:
        write_entries(path, entries)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password on: pipe it in with --password-stdin")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the passwords differ")
    if not password:
        raise CommandError("empty password")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise CommandError(f"the password is longer than bcrypt's {MAX_PASSWORD_BYTES} bytes; choose a shorter one")
    return password


def _user_command(args: argparse.Namespace) -> None:
    path = _htpasswd_path(args)
    if args.action == "list":
        for user in sorted(_read_users(path, must_exist=True)):
            print(user)
        return
    if not args.name or ":" in args.name or any(c.isspace() for c in args.name):
        raise CommandError("a user name must be non-empty, without ':' or spaces")
    entries = _read_users(path, must_exist=args.action != "add")
    if args.action == "remove":
        if entries.pop(args.name, None) is None:
            raise CommandError(f"no user {args.name!r} in {path}")
        _write_users(path, entries)
        print(f"removed user {args.name} from {path}")
        return
    exists = args.name in entries
    if args.action == "add" and exists:
        raise CommandError(f"user {args.name!r} exists in {path}; `registry user passwd {args.name}` changes "
                           "the password")
    if args.action == "passwd" and not exists:
        raise CommandError(f"no user {args.name!r} in {path}; `registry user add {args.name}` adds one")
    entries[args.name] = hash_password(_new_password(args))
    _write_users(path, entries)
    print(f"{'changed the password of' if exists else 'added'} user {args.name} in {path}")


# -- maintenance ---------------------------------------------------------------------------------

def _run_on_store(settings: Settings, work: Callable[[Any], Any]) -> Any:
    """Run work(registry) on the configured store, which must exist (nothing is created)."""
    registry, _ = build_registry(settings, create=False)

    async def run() -> Any:
        try:
            return await work(registry)
        finally:
            await registry.close()

    return asyncio.run(run())


def _gc_command(args: argparse.Namespace) -> None:
    """One collection now; the flags override storage.gc's grace and deleteuntagged."""
    settings = _settings(args, {"storage.gc.grace": args.grace} if args.grace is not None else None,
                         {"storage.gc.grace": "--grace"})
    gc = settings.storage.gc

    def collect(registry: Any) -> Any:
        return GarbageCollector(registry, gc.grace, args.delete_untagged or gc.deleteuntagged, args.dry_run).run()

    report = _run_on_store(settings, collect)
    for name, digest in report.untagged:
        print(f"untagged manifest {name}@{digest}")
    for digest, size in sorted(report.freed.items(), key=lambda item: str(item[0])):
        print(f"blob {digest} {size}")
    print(report.summary())


def _retention_command(args: argparse.Namespace) -> None:
    """Apply storage.retention now: untag what no rule keeps (the manifests stay until gc)."""
    settings = _settings(args)
    policy = RetentionPolicy.from_settings(settings.storage.retention)
    if not policy.rules:
        raise ConfigError("no storage.retention rules in the config")
    report = _run_on_store(settings, lambda registry: policy.apply(registry, args.dry_run))
    for name, tag, target in report.deleted:
        print(f"tag {name}:{tag} {target}")
    print(report.summary())


def _verify_command(args: argparse.Namespace) -> None:
    """Re-hash the store; exit status 1 when anything is corrupt or missing."""
    report = _run_on_store(_settings(args), lambda registry: Verifier(registry, quarantine=args.quarantine).run())
    for line in report.lines():
        print(line)
    if not report.ok:
        sys.exit(1)


def _du_command(args: argparse.Namespace) -> None:
    """Usage per repository, and what `registry gc` with the same settings would free."""
    settings = _settings(args, {"storage.gc.grace": args.grace} if args.grace is not None else None,
                         {"storage.gc.grace": "--grace"})
    gc = settings.storage.gc
    for line in _run_on_store(settings, lambda registry: disk_usage(registry, gc.grace, gc.deleteuntagged)).lines():
        print(line)


# -- certificates --------------------------------------------------------------------------------

def _gen_cert_command(args: argparse.Namespace) -> None:
    if args.days < 1:
        raise ConfigError("--days must be 1 or more")
    for host in args.hosts:
        try:
            check_host(host)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    cert, key = Path(args.cert), Path(args.key)
    existing = [str(p) for p in (cert, key) if p.exists()]
    if existing and not args.force:
        raise CommandError(f"{' and '.join(existing)} exist; remove them or pass --force to replace them")
    try:
        write_self_signed(args.hosts, cert, key, args.days)
    except OSError as exc:
        raise CommandError(f"cannot write {exc.filename}: {exc.strerror}") from None
    print(f"wrote {cert} and {key} for {', '.join(args.hosts)}, valid {args.days} days")


# -- the parser ----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry", description="An OCI image registry server.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version.describe()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser("serve", help="serve the registry API")
    serve_parser.add_argument("config_file", nargs="?", help="YAML config (as for Distribution's `registry serve`)")
    _add_store_options(serve_parser)
    serve_parser.add_argument("--addr", help="listen address HOST:PORT (http.addr), default 127.0.0.1:5000")
    serve_parser.add_argument("--log-level", help="debug, info, warn or error (log.level)")
    serve_parser.add_argument("--read-only", action="store_true", help="refuse every write")
    serve_parser.add_argument("--no-delete", action="store_true", help="refuse deletes")
    serve_parser.set_defaults(func=_serve_command)

    config_parser = commands.add_parser("config", help="check a configuration")
    config_commands = config_parser.add_subparsers(dest="config_action", required=True, metavar="ACTION")
    check_parser = config_commands.add_parser(
        "check", help="validate a config file (with the REGISTRY_* variables set) and print the effective "
                      "configuration, secrets masked; exit status 2 when it is refused")
    check_parser.add_argument("file", nargs="?", help="YAML config file")
    check_parser.set_defaults(func=_config_check_command)

    user_parser = commands.add_parser("user", help="manage htpasswd users (bcrypt)",
                                      description="Manage the users of an htpasswd file (bcrypt). The running "
                                                  "registry picks changes up without a restart.")
    user_commands = user_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "add a user, asking for the password (refuses an existing user)"),
                         ("passwd", "change an existing user's password"),
                         ("remove", "remove a user"),
                         ("list", "list the users")):
        action_parser = user_commands.add_parser(action, help=text)
        if action != "list":
            action_parser.add_argument("name", help="user name")
        else:
            action_parser.set_defaults(name="")
        action_parser.add_argument("--htpasswd", help="the htpasswd file (else auth.htpasswd.path of --config)")
        action_parser.add_argument("--config", "-c", help="YAML config file naming auth.htpasswd.path")
        if action in ("add", "passwd"):
            action_parser.add_argument("--password-stdin", action="store_true",
                                       help="read the password from stdin (for scripts)")
        action_parser.set_defaults(func=_user_command)

    gc_parser = commands.add_parser("gc", help="delete blob data no manifest references (garbage collection)")
    _add_store_options(gc_parser)
    gc_parser.add_argument("--dry-run", action="store_true", help="report what would be freed, delete nothing")
    gc_parser.add_argument("--delete-untagged", action="store_true",
                           help="also remove manifests no tag reaches (storage.gc.deleteuntagged)")
    gc_parser.add_argument("--grace", help="never collect content younger than this (storage.gc.grace, default 1h)")
    gc_parser.set_defaults(func=_gc_command)

    retention_parser = commands.add_parser("retention", help="delete the tags no storage.retention rule keeps")
    _add_store_options(retention_parser)
    retention_parser.add_argument("--dry-run", action="store_true", help="print the tags it would delete, delete none")
    retention_parser.set_defaults(func=_retention_command)

    verify_parser = commands.add_parser("verify", help="re-hash stored content; report corrupt or missing data")
    _add_store_options(verify_parser)
    verify_parser.add_argument("--quarantine", action="store_true",
                               help="unlink corrupt objects and move their data to docker/registry/v2/quarantine")
    verify_parser.set_defaults(func=_verify_command)

    du_parser = commands.add_parser("du", help="storage used per repository (unique and shared bytes), "
                                               "and what garbage collection would free")
    _add_store_options(du_parser)
    du_parser.add_argument("--grace", help="count what gc would free with this grace period "
                                           "(storage.gc.grace, default 1h)")
    du_parser.set_defaults(func=_du_command)

    cert_parser = commands.add_parser("gen-cert", help="write a self-signed TLS certificate and key")
    cert_parser.add_argument("hosts", nargs="+", help="host names or IP addresses the certificate is for")
    cert_parser.add_argument("--cert", default="registry.crt", help="certificate file to write")
    cert_parser.add_argument("--key", default="registry.key", help="key file to write")
    cert_parser.add_argument("--days", type=int, default=365, help="validity, in days (default 365)")
    cert_parser.add_argument("--force", action="store_true", help="replace existing certificate and key files")
    cert_parser.set_defaults(func=_gen_cert_command)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        if args.config and args.config_file:
            parser.exit(2, "registry: give the config file once, as an argument or with --config\n")
        args.config = args.config or args.config_file
    try:
        args.func(args)
    except ConfigError as exc:
        parser.exit(2, "".join(f"registry: {line}\n" for line in str(exc).splitlines()))
    except (StartupError, CommandError) as exc:
        parser.exit(1, f"registry: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, "registry: interrupted\n")


if __name__ == "__main__":
    main()
