"""The consumer's own HTTP port: ``/metrics``, ``/healthz``, ``/readyz``.

A plain ``http.server`` in a daemon thread: three GET routes do not need an
ASGI stack in a process whose main thread is the poll loop.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.version import SERVER_NAME, __version__

log = logging.getLogger(__name__)

# name -> check; a check returns True when that part is fine.
ReadinessChecks = dict[str, Callable[[], bool]]


class HealthServer:
    def __init__(
        self, host: str, port: int, checks: ReadinessChecks, details: Callable[[], dict[str, object]] | None = None
    ) -> None:
        self.checks = checks
        # More for /readyz's body than yes or no (which topics are missing, say).
        self.details = details or dict
        server = self

        class Handler(BaseHTTPRequestHandler):
            def version_string(self) -> str:
                # The Server header: what answers, not http.server's "BaseHTTP/0.6 Python/3.11.7".
                return SERVER_NAME

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send_json(200, {"status": "ok", "version": __version__})
                elif self.path == "/readyz":
                    results = server.readiness()
                    ready = all(results.values())
                    self._send_json(200 if ready else 503, {"ready": ready, **results, **server.details()})
                else:
                    self._send_json(404, {"error": "Not Found"})

            def _send_json(self, status: int, body: dict[str, object]) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
                log.debug("health server: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="health-server", daemon=True)

    def readiness(self) -> dict[str, bool]:
        results = {}
        for name, check in self.checks.items():
            try:
                results[name] = bool(check())
            except Exception:  # noqa: BLE001 - a failing check means not ready
                results[name] = False
        return results

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and health on port %d", self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
