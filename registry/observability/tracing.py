"""tracing.enabled: OpenTelemetry spans, sent in batches to a collector over OTLP/HTTP.

One SERVER span per request, named `<METHOD> <route>` with Distribution's route names (as metrics
are), parented by the client's W3C `traceparent` when it sends one, carrying the request id
(`http.request.id`, as JSON log lines do) and ended once the response has been sent. Below it, one
span per storage action (the actions registry_storage_action_seconds times) and one CLIENT span per
call to a mirror's upstream, which gets the `traceparent` header.

The SDK is an optional extra (`pip install 'oci-registry[tracing]'`): this module is imported only
when tracing is enabled, so a registry without it pays nothing. Spans are exported from a
background thread (BatchSpanProcessor), in bounded batches; when the collector is down they are
dropped, never held up a request.
"""

from __future__ import annotations

from time import perf_counter, time_ns
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web
from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..config import schema
from ..version import version
from .traffic import OBSERVED

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Tracing:
    """The tracer provider and the hooks that make spans: the request middleware, the storage
    timers' wrapper and the upstream client's trace config."""

    def __init__(self, settings: schema.Tracing) -> None:
        headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=headers or None, timeout=settings.timeout)
        self.provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: settings.servicename, SERVICE_VERSION: version()}),
            sampler=ParentBased(TraceIdRatioBased(settings.samplingratio)))
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("registry", version())

    def shutdown(self) -> None:
        """Send what is still queued (within the exporter's timeout) and stop the export thread."""
        self.provider.shutdown()

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        """Runs right after the observing middleware (traffic.py), which has set OBSERVED: the span starts
        with the request's id and route, is current while the handler runs, and is ended by
        Observed.finish() once the response has been sent (or the request given up)."""
        tracer = self.tracer

        @web.middleware
        async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            observed = OBSERVED.get()
            assert observed is not None, "the tracing middleware runs inside the observing one"
            parent = propagate.extract(request.headers) if "traceparent" in request.headers else None
            span = tracer.start_span(f"{request.method} {observed.route}", context=parent, kind=SpanKind.SERVER)
            if span.is_recording():  # else sampled out: the attributes would be built for nothing
                span.set_attributes({"http.request.method": request.method, "url.path": request.path,
                                     "client.address": request.remote or "",
                                     "user_agent.original": request.headers.get("User-Agent", ""),
                                     "http.request.id": observed.request_id})
                if "name" in observed.params:
                    span.set_attribute("oci.repository", observed.params["name"])
            observed.span_end = lambda status: end_request_span(span, status)
            token = context.attach(trace.set_span_in_context(span))
            try:
                return await handler(request)
            finally:
                context.detach(token)

        return trace_request

    def storage_timer(self, timer: Any, driver: str, action: str) -> Any:
        """A storage action's metric timer that also records a span for each call it times."""
        return _TracedTimer(timer, self.tracer, f"storage {action}",
                            {"registry.storage.driver": driver, "registry.storage.action": action})

    def client_trace_config(self) -> aiohttp.TraceConfig:
        """For the mirror's upstream session: a CLIENT span per request, its traceparent sent along."""
        tracer = self.tracer
        config = aiohttp.TraceConfig()

        async def start(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                        params: aiohttp.TraceRequestStartParams) -> None:
            ctx.span = tracer.start_span(f"{params.method} upstream", kind=SpanKind.CLIENT, attributes={
                "http.request.method": params.method, "url.full": str(params.url.with_query(None)),
                "server.address": params.url.host or ""})
            propagate.inject(params.headers, context=trace.set_span_in_context(ctx.span))

        async def end(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                      params: aiohttp.TraceRequestEndParams) -> None:
            end_request_span(ctx.span, params.response.status)

        async def failed(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                         params: aiohttp.TraceRequestExceptionParams) -> None:
            ctx.span.record_exception(params.exception)
            ctx.span.set_status(Status(StatusCode.ERROR, type(params.exception).__name__))
            ctx.span.end()

        config.on_request_start.append(start)
        config.on_request_end.append(end)
        config.on_request_exception.append(failed)
        return config


def end_request_span(span: Any, status: int | None) -> None:
    """End a request's span (ours, or one to an upstream) with the status of its response; a 5xx is an
    error. status None: the request ended without a response (cancelled, its body cut off)."""
    if status is None:
        span.set_status(Status(StatusCode.ERROR, "no response sent"))
    else:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()


class _TracedTimer:
    """Wraps a metric timer's since(start): the span is recorded once the call is over, backdated to
    its start, as a child of whatever span is current (the request's)."""

    __slots__ = ("_timer", "_tracer", "_name", "_attributes")

    def __init__(self, timer: Any, tracer: trace.Tracer, name: str, attributes: Mapping[str, str]) -> None:
        self._timer = timer
        self._tracer = tracer
        self._name = name
        self._attributes = attributes

    def since(self, start: float) -> None:
        self._timer.since(start)
        if not trace.get_current_span().is_recording():
            return  # a background job's call, outside any request, or a request not sampled
        now = time_ns()
        began = now - int((perf_counter() - start) * 1e9)
        self._tracer.start_span(self._name, start_time=began, attributes=self._attributes).end(end_time=now)
