"""Tracing set-up from the OTEL_* variables (shared/tracing.py), and the trace
context in Kafka headers (shared/messages.py)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from shared import tracing
from shared.kafka_properties import ConfigurationError
from shared.messages import trace_context_of, with_trace_context

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_without_OTEL_TRACES_EXPORTER_nothing_is_installed() -> None:
    assert tracing.exporter_names({}) == []
    assert tracing.setup_tracing("svc", env={}) is None
    assert not tracing.enabled()
    # The global provider is still the API's proxy: spans are no-ops, nothing is exported.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert not tracing.tracer.start_span("x").is_recording()


@pytest.mark.parametrize("env", [{"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": " "},
                                 {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}])
def test_none_and_a_disabled_sdk_install_nothing(env: dict[str, str]) -> None:
    assert tracing.exporter_names(env) == []
    assert tracing.setup_tracing("svc", env=env) is None


def test_otlp_means_http_protobuf_unless_the_protocol_says_grpc() -> None:
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp"}) == ["otlp_proto_http"]
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp,console",
                                   "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == ["otlp_proto_grpc", "console"]
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                   "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}) == ["otlp_proto_http"]
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_the_exporters_are_the_sdks_own() -> None:
    found = tracing.exporters({"OTEL_TRACES_EXPORTER": "otlp,console"})
    assert [type(e) for e in found] == [OTLPSpanExporter, ConsoleSpanExporter]
    for exporter in found:
        exporter.shutdown()


@pytest.mark.parametrize(("name", "says"), [("zipkin", "'zipkin' is installed"),
                                            ("otlp_proto_grpc", "install opentelemetry-exporter-otlp-proto-grpc")])
def test_an_exporter_that_is_not_installed_is_a_configuration_error(name: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        tracing.exporters({"OTEL_TRACES_EXPORTER": name})


def test_the_trace_context_goes_into_kafka_headers_once_and_comes_back() -> None:
    spans = TracerProvider().get_tracer("test")  # a local provider: the global one stays unset
    with spans.start_as_current_span("send") as span:
        headers = with_trace_context([("traceparent", TRACEPARENT.encode()), ("correlation_id", b"r-1")])
    assert [k for k, _ in headers].count("traceparent") == 1, "a re-sent record carries its new sender only"
    assert ("correlation_id", b"r-1") in headers
    received = trace.get_current_span(trace_context_of(headers)).get_span_context()
    sent = span.get_span_context()
    assert (received.trace_id, received.span_id, received.is_remote) == (sent.trace_id, sent.span_id, True)


def test_without_a_span_the_headers_stay_as_they_are() -> None:
    headers = [("traceparent", TRACEPARENT.encode())]
    assert with_trace_context(headers) == headers
    assert with_trace_context([]) == []


@pytest.mark.parametrize("headers", [None, [], [("traceparent", b"nonsense")], [("traceparent", b"\xff\xfe")],
                                     {"traceparent": TRACEPARENT.encode()}])
def test_what_a_record_carries_is_read_leniently(headers: object) -> None:
    context = trace.get_current_span(trace_context_of(headers)).get_span_context()
    assert context.is_valid == isinstance(headers, dict)
    if context.is_valid:
        assert f"{context.trace_id:032x}" == TRACEPARENT.split("-")[1]
