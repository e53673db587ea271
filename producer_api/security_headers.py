"""Headers on every answer of the API: no content sniffing, no caching.

``X-Content-Type-Options: nosniff``: a browser never reads a JSON error as
HTML or script. ``Cache-Control: no-store``: an answer names a company's
assessments and results; no proxy or browser cache keeps it (the /docs
assets are small and static, and are not worth an exception). On errors too:
the middleware sees every answer the routes and the exception handlers give,
and producer_api/errors.py adds the same headers to the 500 that Starlette's
outermost error middleware sends past it.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
