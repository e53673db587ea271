"""Tracing: the OpenTelemetry SDK, set up from the standard ``OTEL_*`` variables alone.

``OTEL_TRACES_EXPORTER`` names the exporters (``otlp``, ``console``, or any
installed under the SDK's ``opentelemetry_traces_exporter`` entry points);
unset or ``none``, nothing is installed: the spans the code starts are the
API's no-op spans (a function call each), no processor, no thread, no
export. The exporters, the batch processor, the sampler and the resource
read their own variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_BSP_*``,
``OTEL_TRACES_SAMPLER``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``).

``otlp`` means OTLP over HTTP/protobuf unless ``OTEL_EXPORTER_OTLP_PROTOCOL``
says ``grpc``: the specification's default, and the exporter this project
ships (the Python SDK's own default is gRPC, whose exporter is not installed).

The messaging span attributes follow OpenTelemetry's semantic conventions
for Kafka (the names of opentelemetry-semantic-conventions 0.66b, schema 1.44).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.util.types import AttributeValue
from sqlalchemy import Engine

from shared.kafka_properties import ConfigurationError

EXPORTER_ENTRY_POINTS = "opentelemetry_traces_exporter"
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_PACKAGE_OF = {"otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
               "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc"}

# Follows whatever provider setup_tracing installs, even when imported before it.
tracer = trace.get_tracer("assessment_refresh")

_installed: TracerProvider | None = None


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The entry-point names ``OTEL_TRACES_EXPORTER`` selects ([] for none)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if names == ["none"]:
        return []
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    if "otlp" in names and protocol not in _OTLP_BY_PROTOCOL:
        raise ConfigurationError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not one of {sorted(_OTLP_BY_PROTOCOL)}")
    return [_OTLP_BY_PROTOCOL[protocol] if n == "otlp" else n for n in names if n != "none"]


def exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    """One exporter per name, each configured by its own variables."""
    found: list[SpanExporter] = []
    for name in exporter_names(env):
        points = entry_points(group=EXPORTER_ENTRY_POINTS, name=name)
        if not points:
            package = f" (install {_PACKAGE_OF[name]})" if name in _PACKAGE_OF else ""
            raise ConfigurationError(f"OTEL_TRACES_EXPORTER: no trace exporter {name!r} is installed{package}")
        found.append(next(iter(points)).load()())
    return found


def setup_tracing(service_name: str, env: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """Install the SDK for this process if an exporter is configured (else
    nothing, and None). ``service_name`` is the default ``service.name``."""
    global _installed
    if _installed is not None:
        return _installed
    chosen = exporters(env)
    if not chosen:
        return None
    provider = TracerProvider(resource=_resource(service_name))
    for exporter in chosen:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _installed = provider
    return provider


def enabled() -> bool:
    """True once setup_tracing installed the SDK in this process."""
    return _installed is not None


def _resource(service_name: str) -> Resource:
    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


def trace_engine(engine: Engine) -> None:
    """A client span per statement on ``engine`` (shared/db.py calls this for
    every engine), once tracing is set up; nothing otherwise.

    opentelemetry-instrumentation-sqlalchemy's tracer of one engine, rather
    than its instrumentor: the instrumentor also wraps create_async_engine,
    which imports greenlet on SQLAlchemy 2.1, and it declares SQLAlchemy
    < 2.1 while its engine events work on 2.1 unchanged (tests/e2e/test_tracing.py
    sees the spans)."""
    if _installed is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__

    scope = "opentelemetry.instrumentation.sqlalchemy"
    # Its connection gauge wants a meter: the API's no-op one (metrics are Prometheus's here).
    connections = metrics.get_meter(scope, __version__).create_up_down_counter("db.client.connections.usage")
    EngineTracer(trace.get_tracer(scope, __version__, _installed), engine, connections)  # type: ignore[no-untyped-call]


# -- messaging span attributes (semantic conventions for Kafka) -------------

KAFKA = "kafka"


def messaging_attributes(
    operation: str,
    topic: str,
    *,
    key: bytes | str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    conversation_id: str | None = None,
    consumer_group: str | None = None,
    batch_size: int | None = None,
) -> dict[str, AttributeValue]:
    """``operation``: send, receive or process (the operation's type and name)."""
    attributes: dict[str, AttributeValue] = {
        "messaging.system": KAFKA,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key if isinstance(key, str) else key.decode("utf-8", "replace")
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    if conversation_id is not None:
        attributes["messaging.message.conversation_id"] = conversation_id
    if consumer_group is not None:
        attributes["messaging.consumer.group.name"] = consumer_group
    if batch_size is not None:
        attributes["messaging.batch.message_count"] = batch_size
    return attributes
