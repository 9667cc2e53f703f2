"""The access line of each response: a text line like aiohttp's, or JSON with Distribution's keys.

A response is logged thousands of times a second on small requests, so when the registry's own
handler alone would take the line (the configuration `registry serve` sets up), the line is composed
and handed to that handler's sink without a LogRecord and logging's locks: the same text for a
fraction of the cost. Any other logging setup (another handler, a filter) gets it through logging.
"""

from __future__ import annotations

import json
import logging
from json.encoder import encode_basestring as encode_string
from time import time
from typing import TYPE_CHECKING

from aiohttp import web

from ..auth.guard import IDENTITY_KEY
from .logs import FIELDS, direct_handler, go_duration, masked_uri

if TYPE_CHECKING:
    from .traffic import Observed

log = logging.getLogger("registry.access")
MESSAGE = "response completed"
#: route parameters and the JSON keys Distribution logs them under
_VARS = (("name", "vars.name"), ("reference", "vars.reference"), ("digest", "vars.digest"),
         ("upload_id", "vars.uuid"))


def write(request: web.BaseRequest, response: web.StreamResponse, observed: Observed, duration: float,
          received: int, sent: int, json_lines: bool) -> None:
    """Log the access line at INFO on registry.access (its level and the root's are honoured)."""
    if not log.isEnabledFor(logging.INFO):
        return
    if json_lines:
        message, members = MESSAGE, json_members(request, response, observed, duration, received, sent)
    else:
        message = '%s "%s %s HTTP/%d.%d" %d %d %.6fs "%s"' % (
            request.remote, request.method, masked_uri(request.path, request.query_string), *request.version,
            response.status, sent, duration, request.headers.get("User-Agent", ""))
        members = ""
    handler = direct_handler(log)
    if handler is None:
        log.info(message, extra={FIELDS: json.loads(f"{{{members}}}")})
    else:
        handler.sink.write(handler.formatter.compose(time(), "INFO", log.name, message, observed.request_id,
                                                     members) + "\n")


def json_members(request: web.BaseRequest, response: web.StreamResponse, observed: Observed, duration: float,
                 received: int, sent: int) -> str:
    """The access line's fields as JSON members, with Distribution's keys where it has them."""
    remote = request.remote
    members = (
        f'"http.request.method": {encode_string(request.method)}, '
        f'"http.request.uri": {encode_string(masked_uri(request.path, request.query_string))}, '
        f'"http.request.route": {encode_string(observed.route)}, "http.request.host": {encode_string(request.host)}, '
        f'"http.request.remoteaddr": {"null" if remote is None else encode_string(remote)}, '
        f'"http.request.useragent": {encode_string(request.headers.get("User-Agent", ""))}, '
        f'"http.request.read": {received}, "http.response.status": {response.status}, '
        f'"http.response.written": {sent}, "http.response.duration": "{go_duration(duration)}", '
        f'"http.response.duration_seconds": {round(duration, 6)!r}')
    params = observed.params
    if params:
        for key, name in _VARS:
            if key in params:
                members += f', "{name}": {encode_string(params[key])}'
    identity = request.get(IDENTITY_KEY)
    if identity is not None and identity.name:
        members += f', "auth.user.name": {encode_string(identity.name)}'
    return members
