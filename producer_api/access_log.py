"""The request id on uvicorn's access line too.

The endpoint binds ``request_id`` for its own lines (``shared.log_setup.bind``),
but that binding ends when the endpoint returns, and uvicorn writes its access
line afterwards, inside ``send({"type": "http.response.start"})``. The endpoint
leaves the id in the request state (``request.state.request_id``); this
middleware binds it around that one ``send`` call, so the access line of a
refresh carries the same ``request_id`` as every other line about it.
"""

from __future__ import annotations

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
