"""Reading the configuration: defaults, then the file, then REGISTRY_* variables, then flags,
all checked against the schema, with errors an operator can act on in one line each.

Environment names map to keys through the schema, as Distribution's do: the variable's name less
the prefix, `_` between levels, so REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY sets
storage.filesystem.rootdirectory, and a key that itself holds `_` (storage.s3.max_attempts) is
found because the schema knows it. A list element is addressed by its index
(REGISTRY_STORAGE_RETENTION_0_KEEPLAST).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import types
import typing
from typing import Any, Iterator, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from .schema import IGNORED, Settings

ENV_PREFIX = "REGISTRY_"
#: variables Kubernetes sets for a Service named "registry" (service links): not configuration
_SERVICE_LINKS = re.compile(r"REGISTRY_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)")
Path = tuple[str | int, ...]


class ConfigError(Exception):
    """A configuration the registry refuses; each line of the message names one thing to fix."""


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> Settings:
    """The checked configuration. overrides are the command-line flags as a nested mapping, and
    flag_names says which flag set which dotted key, for error messages."""
    raw: dict[str, Any] = {}
    sources: dict[Path, str] = {}
    if path:
        raw = _read_file(path)
        if isinstance(raw.get("storage"), str):  # Distribution's `storage: inmemory`, before flags add keys
            raw["storage"] = {raw["storage"]: {}}
    environment = os.environ if environ is None else environ
    for name in sorted(environment):
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX and not _SERVICE_LINKS.fullmatch(name):
            key = _env_key(name)
            _set(raw, key, _env_value(environment[name]))
            sources[key] = f"environment variable {name}"
    for key, value in _leaves(overrides or {}):
        _set(raw, key, value)
        dotted = ".".join(map(str, key))
        sources[key] = (flag_names or {}).get(dotted, "command line")
    ignored = _pop_ignored(raw)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        lines = _explain(exc, sources, f"config {path}" if path else "configuration")
        raise ConfigError("\n".join(lines)) from None
    settings._ignored.extend(ignored)
    return settings


# -- the file ------------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """Refuses a key given twice in one mapping, which PyYAML would silently resolve to the last."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.load(f, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config {path}{where}: invalid YAML: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path} must be a YAML mapping of sections (log, http, storage, ...)")
    return loaded


# -- the environment -----------------------------------------------------------------------------

def _env_value(text: str) -> Any:
    """A string, which the schema's types read; YAML for lists and mappings; empty: unset (None)."""
    if text == "":
        return None
    if text.lstrip().startswith(("[", "{")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def _env_key(name: str) -> Path:
    """The key path a REGISTRY_* variable names, found by walking the schema."""
    tokens = name[len(ENV_PREFIX):].lower().split("_")
    path: list[str | int] = []
    node: Any = Settings
    while tokens:
        if _ignored_path(path, tokens):
            return tuple(path) + ("_".join(tokens),)
        origin = typing.get_origin(node)
        if origin is list:
            if not tokens[0].isdigit():
                raise ConfigError(f"{name}: {_dotted(path)} is a list; address an element by its index, "
                                  f"as in {ENV_PREFIX}{_env_name(path)}_0_...")
            path.append(int(tokens.pop(0)))
            node = _container(typing.get_args(node)[0])
        elif origin is dict:
            path.append("_".join(tokens))
            return tuple(path)
        elif isinstance(node, type) and issubclass(node, BaseModel):
            fields = node.model_fields
            for size in range(1, len(tokens) + 1):
                key = "_".join(tokens[:size])
                if key in fields:
                    path.append(key)
                    del tokens[:size]
                    node = _container(fields[key].annotation)
                    break
            else:
                raise ConfigError(_unknown_env(name, path, tokens, list(fields)))
        else:
            raise ConfigError(f"{name}: {_dotted(path)} is a single value, it has no {'_'.join(tokens)}")
    return tuple(path)


def _container(annotation: Any) -> Any:
    """The model, list or dict type a field holds, looking through Optional, unions and Annotated."""
    candidates = [annotation]
    while candidates:
        current = candidates.pop(0)
        origin = typing.get_origin(current)
        if origin is typing.Annotated:
            candidates.append(typing.get_args(current)[0])
        elif origin in (typing.Union, types.UnionType):
            candidates.extend(typing.get_args(current))
        elif origin in (list, dict) or (isinstance(current, type) and issubclass(current, BaseModel)):
            return current
    return annotation


def _ignored_path(path: list[str | int], tokens: list[str]) -> bool:
    """Whether the variable names a key (or below one) that IGNORED lists."""
    here = [str(p) for p in path]
    for key in IGNORED:
        parts = key.split(".")
        if parts[:len(here)] == here and len(parts) > len(here):
            rest = parts[len(here):]
            if tokens[:len(rest)] == rest:
                return True
    return False


def _unknown_env(name: str, path: list[str | int], tokens: list[str], known: list[str]) -> str:
    guess = difflib.get_close_matches("_".join(tokens), known, n=1, cutoff=0.6) or \
        difflib.get_close_matches(tokens[0], known, n=1, cutoff=0.6)
    hint = f"; did you mean {ENV_PREFIX}{_env_name([*path, guess[0]])}?" if guess else \
        f"; known under {_dotted(path) or 'the top level'}: {', '.join(known)}"
    return f"{name}: no configuration key {_dotted([*path, tokens[0]])}{hint}"


def _env_name(path: list[str | int]) -> str:
    return "_".join(str(p).upper() for p in path)


# -- merging and ignored keys ---------------------------------------------------------------------

def _leaves(tree: Mapping[str, Any], prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _set(raw: dict[str, Any], path: Path, value: Any) -> None:
    node: Any = raw
    for key, following in zip(path, path[1:]):
        if isinstance(node, list):
            while len(node) <= int(key):
                node.append({})
            child = node[int(key)]
        else:
            child = node.get(key)
        if not isinstance(child, (dict, list)):
            child = [] if isinstance(following, int) else {}
            if isinstance(node, list):
                node[int(key)] = child
            else:
                node[key] = child
        node = child
    last = path[-1]
    if isinstance(node, list):
        while len(node) <= int(last):
            node.append({})
        node[int(last)] = copy.deepcopy(value)
    else:
        node[last] = copy.deepcopy(value)


def _pop_ignored(raw: dict[str, Any]) -> list[str]:
    found = []
    for key, why in IGNORED.items():
        *parents, last = key.split(".")
        node: Any = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            del node[last]
            found.append(f"{key}: {why}")
    return found


# -- errors --------------------------------------------------------------------------------------

def _explain(exc: ValidationError, sources: dict[Path, str], origin: str) -> list[str]:
    errors = exc.errors(include_url=False)
    lines: list[str] = []
    explained_missing: set[Path] = set()
    for error in errors:
        if error["type"] == "extra_forbidden":
            loc = tuple(error["loc"])
            guess = _suggest(loc)
            if guess is not None and any(e["type"] == "missing" and tuple(e["loc"]) == (*loc[:-1], guess)
                                         for e in errors):
                explained_missing.add((*loc[:-1], guess))
    for error in errors:
        loc: Path = tuple(error["loc"])
        if error["type"] == "missing" and loc in explained_missing:
            continue
        lines.append(f"{_source(loc, sources, origin)}: {_dotted(loc) or 'the configuration'}: {_message(error)}")
    return lines


def _message(error: Any) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        guess = _suggest(loc)
        if guess is not None:
            return f"unknown key; did you mean {guess}?"
        return f"unknown key; known keys here: {', '.join(known)}" if known else "unknown key"
    if kind == "missing":
        return "required, but not set"
    if kind == "literal_error":
        return f"expected {error['ctx']['expected']}, not {error['input']!r}"[:200]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, not {error['input']!r}"[:200]
    if kind == "list_type":
        return f"expected a list, not {error['input']!r}"[:200]
    if kind == "greater_than":
        return f"must be greater than {error['ctx']['gt']}"
    if kind == "greater_than_equal":
        return f"must be {error['ctx']['ge']} or more"
    if kind == "too_short":
        return "must not be empty"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message[0].lower() + message[1:] if message else kind


def _suggest(loc: Path) -> str | None:
    known = _known_keys(loc[:-1])
    matches = difflib.get_close_matches(str(loc[-1]).lower(), known, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _known_keys(loc: Path) -> list[str]:
    """The keys of the section at loc; none where loc is not a section."""
    node: Any = Settings
    for key in loc:
        node = _container(node)
        origin = typing.get_origin(node)
        if origin is list and isinstance(key, int):
            node = typing.get_args(node)[0]
        elif origin is dict:
            node = typing.get_args(node)[1]
        elif isinstance(node, type) and issubclass(node, BaseModel) and key in node.model_fields:
            node = node.model_fields[key].annotation
        else:
            return []
    node = _container(node)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _source(loc: Path, sources: dict[Path, str], origin: str) -> str:
    for size in range(len(loc), 0, -1):
        found = sources.get(loc[:size])
        if found is not None:
            return found
    return origin


def _dotted(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
