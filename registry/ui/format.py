"""Jinja filters: sizes, digests and times as people read them."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(value: int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in UNITS:
        if abs(amount) < 1024 or unit == UNITS[-1]:
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def short(digest: Any) -> str:
    """sha256:0123456789ab: the algorithm and the first 12 hex digits, as docker shows image ids."""
    algorithm, _, hex_ = str(digest).partition(":")
    return f"{algorithm}:{hex_[:12]}" if hex_ else str(digest)


def ago(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    seconds = max(0, int(time.time() - timestamp))
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False)


FILTERS = {"size": size, "short": short, "ago": ago, "iso": iso, "pretty_json": pretty_json}
