"""An OpenTelemetry collector for the tracing tests: an aiohttp server on a random loopback port, in a
thread of its own, that takes OTLP/HTTP exports (protobuf, as the SDK's exporter sends them) on
/v1/traces and keeps every span, decoded with the OTLP protobuf definitions."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from .engines import wait_until
from .servers import free_port

SERVER_KIND, CLIENT_KIND = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2  # Status.StatusCode


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict[str, Any]
    status: int
    start_ns: int
    end_ns: int


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


class Collector(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    def run(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> "Collector":
        self.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self.join(10)

    async def _export(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf", request.content_type
        export = ExportTraceServiceRequest.FromString(await request.read())
        spans = []
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(Span(resource.get("service.name", ""), span.name, span.kind, span.trace_id.hex(),
                                      span.span_id.hex(), span.parent_span_id.hex(),
                                      {a.key: _value(a.value) for a in span.attributes}, span.status.code,
                                      span.start_time_unix_nano, span.end_time_unix_nano))
        with self._lock:
            self._spans.extend(spans)
        return web.Response(content_type="application/x-protobuf", body=b"")

    @property
    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, match: Callable[[Span], bool], what: str, timeout: float = 30) -> Span:
        """The first span received that matches (the SDK exports in batches, every few seconds)."""
        return wait_until(lambda: next((span for span in self.spans if match(span)), None), f"a span {what}",
                          timeout, interval=0.1)

    def children(self, parent: Span) -> list[Span]:
        return [span for span in self.spans if span.parent_id == parent.span_id and span.trace_id == parent.trace_id]
