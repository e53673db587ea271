"""Prometheus metrics of an API process, served at ``GET /metrics``.

One process per replica (no uvicorn workers), so the default registry is the
process's own and needs no multiprocess mode.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.version import SERVER_NAME

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

HTTP_DURATION = Histogram(
    "assessment_refresh_http_request_duration_seconds",
    "HTTP request latency by route, method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
REPLIES_AWAITED = Gauge(
    "assessment_refresh_replies_awaited", "Refresh requests of this process waiting for their reply right now"
)
REPLY_TIMEOUTS = Counter(
    "assessment_refresh_reply_timeouts_total",
    "Requests answered 504: no reply, or no delivery confirmation (perhaps written), in time",
)
BROKER_UNAVAILABLE = Counter(
    "assessment_refresh_broker_unavailable_total", "Requests answered 503: certainly not written (no broker connection, or refused)"
)
API_KEY_LOOKUPS = Counter(
    "assessment_refresh_api_key_lookups_total",
    "API keys looked up in the database (neither cache knew them), by result: found or unknown", ["result"]
)
AUTH_REFUSED = Counter(
    "assessment_refresh_auth_refused_total",
    "Requests answered 429 for too many failed authentications from their client address"
)
REQUESTS_PUBLISHED = Counter(
    "assessment_refresh_requests_published_total", "Refresh requests delivered to the broker", ["mode"]
)


def watch_awaited(count: Callable[[], int]) -> None:
    """The gauge reads the reply waiter's pending count when scraped."""
    REPLIES_AWAITED.set_function(lambda: float(count()))


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def serve_metrics_apart(host: str, port: int) -> Callable[[], None]:
    """/metrics on a port of its own (API_METRICS_PORT), so that it stays off
    the public port; returns what stops it.

    prometheus_client's own start_http_server, but for its ``Server`` header:
    wsgiref's names the Python version (``WSGIServer/0.2 CPython/3.11.7``),
    and it adds it only when the app has not set one."""

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, _named(make_wsgi_app()), Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="api-metrics", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)

    return stop


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        """Scrapes are not worth a line each."""


def _named(app: WSGIApplication) -> WSGIApplication:
    def named(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, ("Server", SERVER_NAME)], exc_info)

        return app(environ, start)

    return named


class MetricsMiddleware:
    """Times every HTTP request and labels it with its route template (not the
    raw path: ids in paths would make one series per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            HTTP_DURATION.labels(_route(scope), scope["method"], str(status["code"])).observe(
                time.perf_counter() - started
            )


def _route(scope: Scope) -> str:
    for route in scope["app"].routes if "app" in scope else ():
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", scope["path"]))
    return "unmatched"
