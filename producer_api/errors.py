"""Error responses: every error this API answers has a JSON body ``{"error": ...}``.

Starlette answers routing errors (404 unknown path, 405 wrong method) and
unexpected exceptions with plain text; the handlers below give them the same
JSON shape as the errors of docs/design.md#rest-contract, so clients parse one format.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from producer_api.security_headers import HEADERS as SECURITY_HEADERS

log = logging.getLogger(__name__)

# Statuses that must not carry a body (RFC 9110); Starlette's own handler
# special-cases them the same way.
_BODYLESS = {204, 304}


def error(status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def http_exception_as_json(_request: Request, exc: Exception) -> Response:
    """Routing errors raised by Starlette; their headers (``Allow`` on 405) are kept."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in _BODYLESS:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error(exc.status_code, exc.detail, headers=exc.headers)


async def unexpected_error_as_json(request: Request, exc: Exception) -> Response:
    """A bug, not a refresh failure: say nothing about it beyond the status.

    Starlette's ServerErrorMiddleware calls this, then re-raises so that the
    server logs the traceback; we log the path here too for context.
    """
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error(500, "Internal server error", headers=SECURITY_HEADERS)


EXCEPTION_HANDLERS = {HTTPException: http_exception_as_json, Exception: unexpected_error_as_json}
