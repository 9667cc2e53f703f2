"""Log output: text or JSON lines (Distribution's log.formatter), log.fields on every line, and the
request id of the request being served on every line logged while serving it.

JSON lines use Distribution's keys (time, level, msg, http.request.id, http.request.method,
vars.name, ...), so log pipelines built for it read ours. Nothing here logs headers: credentials
(Authorization, cookies) never reach a log line, and secrets in query strings are masked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
import time
from contextvars import ContextVar
from json.encoder import encode_basestring as encode_string
from typing import Callable, Mapping, TextIO
from urllib.parse import parse_qsl, quote

from ..config import schema

#: the id of the request the current task serves (each request runs in a task of its own)
REQUEST_ID: ContextVar[str | None] = ContextVar("registry_request_id", default=None)
#: query parameters whose values are masked in logged URIs
_SECRET_PARAMETER = re.compile(r"token|password|secret|key|code|credential|signature|auth", re.IGNORECASE)
#: the extra= key whose mapping a JSON line includes (an access line's request fields)
FIELDS = "fields"


def configure_logging(settings: schema.Log) -> None:
    if settings.formatter == "text":
        formatter: LineFormatter = TextFormatter(settings.fields)
    else:
        formatter = JsonFormatter(settings.fields, logstash=settings.formatter == "logstash")
    handler = LineHandler(LineSink(sys.stderr))
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())


class LineSink:
    """Lines bound for a stream, written together once per event-loop turn: one write and one system
    call for all the lines a turn logs (an access line per response) rather than one each. Outside
    the loop's thread (startup, worker threads) a line is written at once, after those waiting."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.pending: list[str] = []
        self.lock = threading.Lock()

    def write(self, line: str) -> None:
        """Write `line` (ending in a newline) before this loop turn ends; at once outside a loop."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:
            self.pending.append(line)
            due = len(self.pending) > 1  # a flush is already due
        if loop is None:
            self.flush()
        elif not due:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:
            lines, self.pending = self.pending, []
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):
                    pass  # a closed or broken stream: there is nowhere left to say so


class LineFormatter(logging.Formatter):
    """A formatter that also composes a line from its parts, for lines written without a LogRecord."""

    def compose(self, created: float, level: str, logger: str, message: str, request_id: str | None,
                members: str = "") -> str:
        """The line; `members`: JSON members (`"key": value, ...`) a JSON line includes."""
        raise NotImplementedError


class LineHandler(logging.Handler):
    """The registry's log handler: formatted lines go to a LineSink. Callers that find it alone on
    their logger's path (direct_handler) may compose lines and hand them to its sink themselves."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self.sink = sink
        self.formatter: LineFormatter = TextFormatter({})

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.sink.flush()


def direct_handler(logger: logging.Logger) -> LineHandler | None:
    """The LineHandler that alone would take `logger`'s INFO records, else None (another handler, a filter,
    a level on the handler: then records must go through logging). Checked per call, so that handlers
    configured later are honoured."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.parent is None:
            break
        if current.handlers or not current.propagate:
            return None
        current = current.parent
    handlers = logger.root.handlers
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if type(handler) is not LineHandler or handler.filters or handler.level > logging.INFO:
        return None
    return handler


class Stamps:
    """Times with milliseconds; the text up to the second (strftime `pattern` of `convert`) is made once
    per second, as an access line per request would otherwise format the same second thousands of times."""

    def __init__(self, pattern: str, convert: Callable[[float], time.struct_time], separator: str,
                 suffix: str) -> None:
        self.pattern, self.convert, self.separator, self.suffix = pattern, convert, separator, suffix
        self.second, self.text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self.second:
            self.second, self.text = second, time.strftime(self.pattern, self.convert(second))
        return f"{self.text}{self.separator}{int((created - second) * 1000):03d}{self.suffix}"


class TextFormatter(LineFormatter):
    """`time LEVEL logger: message key=value ...`: the request id and log.fields as key=value pairs; the
    time as logging's default (local time, milliseconds after a comma)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__()
        self.suffix = "".join(f" {key}={_quote_text(value)}" for key, value in fields.items())
        self.stamp = Stamps("%Y-%m-%d %H:%M:%S", time.localtime, ",", "")

    def compose(self, created: float, level: str, logger: str, message: str, request_id: str | None,
                members: str = "") -> str:
        head, newline, rest = message.partition("\n")  # the first line carries the request id and fields
        tail = f" request_id={request_id}" if request_id else ""
        return f"{self.stamp(created)} {level} {logger}: {head}{tail}{self.suffix}{newline}{rest}"

    def format(self, record: logging.LogRecord) -> str:
        line = self.compose(record.created, record.levelname, record.name, record.getMessage(), REQUEST_ID.get())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        details = [text for text in (record.exc_text, record.stack_info and self.formatStack(record.stack_info))
                   if text]
        return "\n".join([line, *details])  # a traceback follows the line it explains


class JsonFormatter(LineFormatter):
    """One JSON object per line: log.fields, time, level, msg, logger, the request id, the fields passed
    as extra={"fields": {...}}; a traceback goes in `error`. Lines are put together as text around
    members already encoded (an access line brings its own), which costs a fraction of encoding a dict."""

    def __init__(self, fields: Mapping[str, str], logstash: bool = False) -> None:
        super().__init__()
        self.fields = dict(fields)
        self.logstash = logstash
        self.encoder = json.JSONEncoder(default=str, ensure_ascii=False)
        self.stamp = Stamps("%Y-%m-%dT%H:%M:%S", time.gmtime, ".", "Z")  # RFC 3339, UTC
        self.prefix = self.encoder.encode(self.fields)[1:-1] + ", " if self.fields else ""
        #: a log.fields key that the line sets too (then the line's value goes where log.fields put it)
        self.overridden = tuple(f"{encode_string(key)}: " for key in self.fields)

    def compose(self, created: float, level: str, logger: str, message: str, request_id: str | None,
                members: str = "") -> str:
        stamp = self.stamp(created)
        line = f'"time": "{stamp}", "level": "{level.lower()}", "msg": {encode_string(message)}, ' \
               f'"logger": {encode_string(logger)}'
        if self.logstash:
            line += f', "@timestamp": "{stamp}", "@version": "1"'
        if request_id:
            line += f', "http.request.id": {encode_string(request_id)}'
        if members:
            line += f", {members}"
        if any(key in line for key in self.overridden):
            return self.encoder.encode({**self.fields, **json.loads(f"{{{line}}}")})
        return f"{{{self.prefix}{line}}}"

    def format(self, record: logging.LogRecord) -> str:
        extra = dict(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            extra["error"] = self.formatException(record.exc_info)
        return self.compose(record.created, record.levelname, record.name, record.getMessage(), REQUEST_ID.get(),
                            self.encoder.encode(extra)[1:-1])


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
