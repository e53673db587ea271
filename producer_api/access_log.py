"""uvicorn's access line: with the request id, and without secrets.

Secrets: a client may put its API key in the query string (``?apiKey=...``:
refused, the key is read from headers only, but the line would still show
it). ``scrub_access_log`` masks the value of every key-like query parameter
(``ScrubQuery.is_secret``) on the access line; the app still sees the query
as sent.

The request id:

The endpoint binds ``request_id`` for its own lines (``shared.log_setup.bind``),
but that binding ends when the endpoint returns, and uvicorn writes its access
line afterwards, inside ``send({"type": "http.response.start"})``. The endpoint
leaves the id in the request state (``request.state.request_id``); this
middleware binds it around that one ``send`` call, so the access line of a
refresh carries the same ``request_id`` as every other line about it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.log_setup import bind

STATE_KEY = "request_id"


class AccessLogIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_ids(message: Message) -> None:
            request_id = scope.get("state", {}).get(STATE_KEY)
            if message["type"] == "http.response.start" and request_id:
                with bind(request_id=request_id):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, send_with_ids)


# Parameter names whose value is a secret: compared lower-cased, without "-"
# and "_" (apiKey, api_key, X-API-Key, access_token, client_secret, ...).
_SECRET_SUFFIXES = ("key", "token", "secret", "password", "passwd")
_SECRET_NAMES = frozenset({"auth", "authorization", "sig", "signature", "credential", "credentials"})
MASK = "***"


def is_secret(name: str) -> bool:
    normal = re.sub(r"[-_.\s]", "", unquote_plus(name)).lower()
    return normal.endswith(_SECRET_SUFFIXES) or normal in _SECRET_NAMES


def scrub_query(path: str) -> str:
    """``path`` (with its query, as on the access line) with secret values masked."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    parts = []
    for part in query.split("&"):
        name, eq, _value = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and is_secret(name) else part)
    return base + sep + "&".join(parts)


class ScrubQuery(logging.Filter):
    """On the uvicorn.access logger: its line's path argument, scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn: '%s - "%s %s HTTP/%s" %d' % (client, method, path with query, version, status)
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], scrub_query(args[2]), *args[3:])
        return True


_SCRUB = ScrubQuery()


def scrub_access_log() -> None:
    """Idempotent: one filter, however many apps are created."""
    logging.getLogger("uvicorn.access").addFilter(_SCRUB)
