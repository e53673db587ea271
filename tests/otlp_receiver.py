"""A tiny OTLP/HTTP trace receiver for tests: the services export to it with
the standard exporter (OTEL_TRACES_EXPORTER=otlp, OTEL_EXPORTER_OTLP_ENDPOINT),
and it keeps every span it is sent, decoded with opentelemetry-proto."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str  # SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
    trace_id: str  # hex, as in a traceparent header
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace_id, span_id)
    error: bool


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field in ("string_value", "bool_value", "int_value", "double_value") else None


def _attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver._keep(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env(self) -> dict[str, str]:
        """What a service needs to export here, promptly (50 ms batches)."""
        return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "50"}

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(list(resource_spans.resource.attributes)).get("service.name"))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(Span(
                        service, span.name, ProtoSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                        _attributes(list(span.attributes)),
                        tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                        span.status.code == span.status.STATUS_CODE_ERROR,
                    ))
        with self._lock:
            self.spans.extend(found)

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def find(self, attributes: dict[str, Any] | None = None, **fields: Any) -> list[Span]:
        """Spans whose fields and ``attributes`` have these values."""
        with self._lock:
            spans = list(self.spans)
        return [s for s in spans if all(getattr(s, k) == v for k, v in fields.items())
                and all(s.attributes.get(k) == v for k, v in (attributes or {}).items())]
