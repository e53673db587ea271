"""The API's server spans: OpenTelemetry's ASGI middleware, present only when
tracing is on (shared/tracing.py), outermost, so that its span covers the
whole request and every span of the request (the Kafka send, the reply wait,
the database) is its child. An incoming ``traceparent`` header continues the
caller's trace; without one each request starts a trace.

Span names are the route templates (``POST /assessments/refresh-requests/{request_id}``),
never raw paths. Probes and scrapes are not traced unless
``OTEL_PYTHON_EXCLUDED_URLS`` (or ``OTEL_PYTHON_STARLETTE_EXCLUDED_URLS``) says otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.middleware import Middleware
from starlette.routing import Match

from shared import tracing

DEFAULT_EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"


def tracing_middleware() -> list[Middleware]:
    if not tracing.enabled():
        return []
    excluded = os.environ.get("OTEL_PYTHON_STARLETTE_EXCLUDED_URLS",
                              os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", DEFAULT_EXCLUDED_URLS))
    # exclude_spans: no child span per ASGI receive/send message (noise, not work).
    return [Middleware(OpenTelemetryMiddleware, excluded_urls=excluded, default_span_details=span_details,
                       exclude_spans=["receive", "send"])]


def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``METHOD route`` and ``http.route``; the method alone for paths no route matches."""
    method = scope.get("method", "")
    app = scope.get("app")
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL and hasattr(route, "path"):
            return f"{method} {route.path}", {"http.route": route.path}
    return method, {}
