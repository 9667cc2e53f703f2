"""The registry's configuration: the schema (schema.py), its value types (values.py), and loading
from the file, the environment and the flags (loading.py)."""

from .loading import ConfigError, load_config
from .schema import IGNORED, Settings
from .values import format_duration, parse_bool, parse_duration, parse_size

__all__ = [
    "ConfigError",
    "IGNORED",
    "Settings",
    "format_duration",
    "load_config",
    "parse_bool",
    "parse_duration",
    "parse_size",
]
