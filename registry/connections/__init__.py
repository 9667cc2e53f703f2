"""Client connections: how long a client may take, how many may be open, and what the wrong protocol gets.

aiohttp's server has a keep-alive timeout and limits on header sizes, but no deadline for a
request's head and none for a body that stops arriving: a client trickling one header byte
every few seconds, or a body that stalls halfway, holds its connection (and its descriptor,
and, for an upload, the upload's lock) for ever. And asyncio accepts every connection it is
offered until the process runs out of descriptors. This module adds, with few hooks into
aiohttp's internals (named where they are used):

- GuardedHandler, aiohttp's RequestHandler (the per-connection protocol) with two clocks.
  The *head clock* runs from a connection's start, and again from the first byte of each
  following request, until the parser has the whole head (http.timeouts.header, as Go's
  ReadHeaderTimeout). The *body clock* runs while a request is in progress and the connection
  waits on the client: its body has not all arrived, or the response's bytes wait in a full
  send buffer. It is lazy, as aiohttp's keep-alive clock is: data_received only notes the
  time, and the timer, when it fires, re-arms itself for the deadline that the last byte
  moved. While the server itself holds reading back (a handler busy writing to storage), the
  client is not to blame and the clock does not run. A connection over either deadline is
  closed: its handler's read then fails, so an upload writer is cancelled and its lock
  released, as for any client that goes away.
- Early answers close the connection: when a handler answers without reading the whole body
  (413 for an oversized manifest, 503 when the manifest memory budget is spent, a 404 for a
  PATCH to an unknown upload), at most DRAIN_BYTES of the rest are read and dropped (so that
  a client still sending can read the answer, as Go's server does), then the connection
  closes instead of reading on.
- GuardedSite, a site with its own accept loop, so that at most http.limits.connections are
  open: when the limit is reached, the connection idle longest (between requests, or still
  sending its head) is closed to make room, as nginx reuses idle keep-alive connections; when
  every connection is busy, accepting pauses and new ones wait in the kernel's backlog,
  costing no descriptor. A connection that sends a TLS handshake to a plain-HTTP port is
  answered as Go's server answers it (400 Bad Request) and one line is logged; on a TLS port,
  the first bytes are peeked at before the handshake, and plain HTTP gets Go's answer
  "Client sent an HTTP request to an HTTPS server."
- raise_descriptor_limit() lifts the soft RLIMIT_NOFILE to the hard limit at startup.
"""

from .limits import ConnectionLimits, connection_limits, handler_options
from .site import GuardedSite

__all__ = ["ConnectionLimits", "GuardedSite", "connection_limits", "handler_options"]
