"""Configuration: Distribution's YAML keys where they overlap, and its REGISTRY_* overrides.

`REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/x` sets storage.filesystem.rootdirectory,
as in Distribution: the variable's name, less the prefix, is the key path.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

ENV_PREFIX = "REGISTRY_"

DEFAULTS: dict[str, Any] = {
    "version": "0.1",
    "log": {"level": "info", "accesslog": {"disabled": False}},
    "http": {"addr": "127.0.0.1:5000", "host": None},
    "storage": {
        "filesystem": {"rootdirectory": "./data"},
        "delete": {"enabled": True},
        "maintenance": {"readonly": {"enabled": False}},
    },
}

STORAGE_DRIVERS = ("filesystem", "inmemory", "s3")


class ConfigError(Exception):
    pass


def check_keys(raw: Any, where: str, known: set[str]) -> dict[str, Any]:
    """A config section as a mapping holding only known keys; ValueError naming `where` otherwise."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping with {', '.join(sorted(known))}")
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return raw


@dataclass(frozen=True)
class Config:
    raw: dict[str, Any]

    def get(self, *path: str, default: Any = None) -> Any:
        node: Any = self.raw
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    @property
    def host_port(self) -> tuple[str, int]:
        addr = str(self.get("http", "addr"))
        host, _, port = addr.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"http.addr must be host:port, not {addr!r}")
        return (host.strip("[]") or "0.0.0.0"), int(port)

    @property
    def storage_driver(self) -> str:
        """The configured driver; filesystem unless another one is named."""
        storage = self.get("storage", default={})
        named = [d for d in STORAGE_DRIVERS if d != "filesystem" and d in storage]
        return named[0] if named else "filesystem"


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value) if isinstance(value, Mapping) else value
    return base


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        path = name[len(ENV_PREFIX):].lower().split("_")
        node = overrides
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = yaml.safe_load(value) if value else value
    return overrides


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults, then the file, then REGISTRY_* variables, then command-line flags."""
    raw = copy.deepcopy(DEFAULTS)
    if path:
        try:
            with open(path) as f:
                loaded = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a YAML mapping")
        _merge(raw, loaded)
    _merge(raw, _env_overrides(os.environ if environ is None else environ))
    _merge(raw, overrides or {})
    return Config(raw)
