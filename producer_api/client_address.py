"""Which address a request comes from: the key to the failed-authentication limit.

The TCP peer's address, unless that peer is a proxy named in
FORWARDED_ALLOW_IPS: then the address the proxy names in ``X-Forwarded-For``
(the right-most entry not itself a trusted proxy). uvicorn's proxy-headers
middleware does the parsing (``uvicorn_proxy_options``); the app reads the
result from the ASGI scope. By default no proxy is trusted: a client that
sends ``X-Forwarded-For`` itself changes nothing, and behind a load balancer
every client has the balancer's address until FORWARDED_ALLOW_IPS names it
(docker-compose.yml does, for deploy/nginx.conf).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from shared.settings import Settings

UNKNOWN = "unknown"  # no peer address (a Unix socket, a test client)


def client_address(request: Request) -> str:
    return request.client.host if request.client and request.client.host else UNKNOWN


def uvicorn_proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's options for FORWARDED_ALLOW_IPS. Explicit even when empty:
    uvicorn's own default trusts 127.0.0.1 (and reads the variable itself)."""
    if not settings.forwarded_allow_ips.strip():
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips}
