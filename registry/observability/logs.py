"""Log output: text or JSON lines (Distribution's log.formatter), log.fields on every line, and the
request id of the request being served on every line logged while serving it.

JSON lines use Distribution's keys (time, level, msg, http.request.id, http.request.method,
vars.name, ...), so log pipelines built for it read ours. Nothing here logs headers: credentials
(Authorization, cookies) never reach a log line, and secrets in query strings are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any, Mapping
from urllib.parse import parse_qsl, quote

from ..config import schema

#: the id of the request the current task serves (each request runs in a task of its own)
REQUEST_ID: ContextVar[str | None] = ContextVar("registry_request_id", default=None)
#: query parameters whose values are masked in logged URIs
_SECRET_PARAMETER = re.compile(r"token|password|secret|key|code|credential|signature|auth", re.IGNORECASE)
#: the extra= key whose mapping a JSON line includes (an access line's request fields)
FIELDS = "fields"


def configure_logging(settings: schema.Log) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.formatter == "text":
        handler.setFormatter(TextFormatter(settings.fields))
    else:
        handler.setFormatter(JsonFormatter(settings.fields, logstash=settings.formatter == "logstash"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`: the request id and log.fields as key=value pairs."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.suffix = "".join(f" {key}={_quote_text(value)}" for key, value in fields.items())

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = REQUEST_ID.get()
        head, newline, rest = text.partition("\n")  # a traceback follows the line it explains
        tail = f" request_id={request_id}" if request_id else ""
        return f"{head}{tail}{self.suffix}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, msg, logger, the request id, log.fields and the fields
    passed as extra={"fields": {...}}; a traceback goes in `error`."""

    def __init__(self, fields: Mapping[str, str], logstash: bool = False) -> None:
        super().__init__()
        self.fields = dict(fields)
        self.logstash = logstash
        self.encoder = json.JSONEncoder(default=str, ensure_ascii=False)
        self._second, self._second_text = -1, ""

    def _stamp(self, created: float) -> str:
        """RFC 3339 in UTC with milliseconds; the part up to the second is reused within that second."""
        second = int(created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        stamp = self._stamp(record.created)
        line: dict[str, Any] = {**self.fields, "time": stamp, "level": record.levelname.lower(),
                                "msg": record.getMessage(), "logger": record.name}
        if self.logstash:
            line["@timestamp"], line["@version"] = stamp, "1"
        request_id = REQUEST_ID.get()
        if request_id:
            line["http.request.id"] = request_id
        fields = getattr(record, FIELDS, None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return self.encoder.encode(line)


def _quote_text(value: str) -> str:
    return value if value and not re.search(r'[\s"=]', value) else json.dumps(value)


def masked_uri(path: str, query: str) -> str:
    """path?query with the values of secret-looking parameters replaced by `***`."""
    if not query:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = "&".join(f"{quote(k, safe='')}={'***' if _SECRET_PARAMETER.search(k) else quote(v, safe='/:@')}"
                     for k, v in pairs)
    return f"{path}?{shown}"


def go_duration(seconds: float) -> str:
    """Go's time.Duration text, as Distribution logs http.response.duration: 850µs, 12.5ms, 1.2s, 2m3s."""
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f}ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.6g}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.6g}ms"
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"{rest:.6g}s"
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{rest:.6g}s"
