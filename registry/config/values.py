"""The value types of the configuration: how a YAML scalar, an environment string or a flag becomes
a typed value, and back into text for `registry config check`.

Values arrive as YAML scalars from the file and as strings from the environment and the command
line, so every type accepts both forms, and nothing else: a quoted "false" is false, a "flase" is
an error, never truthy.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, SecretStr

from ..numbers import parse_natural

_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i)?b?|b)?", re.IGNORECASE)
_POWERS = "kmgtp"
LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false (or yes/no, 1/0), not {_show(value)}")


def parse_duration(value: Any) -> float:
    """Seconds, from a Go-style duration ("168h", "1h30m", "90s") or a bare number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip() if isinstance(value, str) else ""
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _SECONDS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"expected a duration such as 90s, 10m or 1h30m, not {_show(value)}")
    return total


def format_duration(seconds: float) -> str:
    """The shortest Go-style spelling: 5400 -> 1h30m, 0.5 -> 500ms."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts = []
    rest = seconds
    for unit, size in (("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{int(rest // size)}{unit}")
            rest -= (rest // size) * size
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


def parse_size(value: Any) -> int:
    """Bytes: `500MB` and `50GB` are decimal (10^6, 10^9), `50GiB` binary; a bare number is bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 500MB, 2GiB or a number of bytes, not {_show(value)}")
    if isinstance(value, (int, float)):
        number: float = value
    else:
        match = _SIZE.fullmatch(str(value).strip())
        if not match:
            raise ValueError(f"expected a size such as 500MB, 2GiB or a number of bytes, not {_show(value)}")
        digits, power, binary = match.groups()
        exponent = _POWERS.index(power.lower()) + 1 if power else 0
        number = float(digits) * (1024 if binary else 1000) ** exponent
    if number < 0:
        raise ValueError(f"a size cannot be negative: {_show(value)}")
    return int(number)


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        negative = text.startswith("-")
        return -parse_natural(text[1:]) if negative else parse_natural(text)
    raise ValueError(f"expected a whole number, not {_show(value)}")


def _str(value: Any) -> str:
    """YAML reads `secret: 12345` as a number; a string was meant."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise ValueError("is empty: give it a value, or remove the key for its default")
    raise ValueError(f"expected a string, not {_show(value)}")


def _str_list(value: Any) -> list[str]:
    """A list of strings; one string alone is a list of one."""
    items = [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value
    if not isinstance(items, list):
        raise ValueError(f"expected a list of strings, not {_show(value)}")
    return [_str(item) for item in items]


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT; an empty host (":5000") listens on every interface."""
    host, colon, port = address.rpartition(":")
    if not colon:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:5000 or :5000, not {address!r}")
    try:
        number = parse_natural(port, max_digits=5)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise ValueError(f"the port in {address!r} must be a number from 1 to 65535")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", number


def _address(value: Any) -> str:
    text = _str(value).strip()
    split_address(text)
    return text


def _url(value: Any) -> str:
    text = _str(value).strip()
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError(f"expected an http:// or https:// URL, not {text[:80]!r}")
    return text.rstrip("/")


def _regex(value: Any) -> re.Pattern[str]:
    text = _str(value)
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"bad regular expression {text!r}: {exc}") from None


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = _str(value).strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"expected an address or a network such as 10.0.0.0/8, not {_show(value)}") from None


def _log_level(value: Any) -> str:
    text = _str(value).strip().lower()
    text = "warning" if text == "warn" else text
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of debug, info, warn, error, not {_show(value)}")
    return text


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


Bool = Annotated[bool, BeforeValidator(parse_bool)]
Int = Annotated[int, BeforeValidator(_int)]
Natural = Annotated[int, BeforeValidator(_int), Field(ge=0)]
Str = Annotated[str, BeforeValidator(_str)]
StrList = Annotated[list[str], BeforeValidator(_str_list)]
Secret = Annotated[SecretStr, BeforeValidator(_str)]
#: header values (`Authorization: [Bearer ...]`): masked by `registry config check`
SecretList = Annotated[list[SecretStr], BeforeValidator(_str_list)]
Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network),
                    PlainSerializer(str, return_type=str)]
Url = Annotated[str, BeforeValidator(_url)]
Address = Annotated[str, BeforeValidator(_address)]
LogLevel = Annotated[str, BeforeValidator(_log_level)]
Regex = Annotated[re.Pattern[str], BeforeValidator(_regex), PlainSerializer(lambda p: p.pattern, return_type=str)]
_as_duration = PlainSerializer(format_duration, return_type=str)
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0), _as_duration]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0), _as_duration]
Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]
