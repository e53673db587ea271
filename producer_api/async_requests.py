"""Async mode: ``Prefer: respond-async`` (RFC 7240) gets 202 at once; the result is polled.

POST /assessments/refresh-assessments with that preference records the request
in refresh_requests, publishes it and answers ``202 {"request_id", "status":
"pending"}`` with a ``Location``. GET on that location answers the stored
result with its own status (200, 403, 500), 202 while pending, and 404 for ids
that are unknown or belong to another company (the two look the same, so ids
of other companies cannot be probed).

Where results are kept and read from is producer_api/async_results.py; the
accepting API listens for the reply on the reply topic so that it can keep
the replies the consumer does not store (a dead-lettered request's 500).

A request whose delivery the broker did not confirm in time may have been
written: it is answered 504 with its Location, as a synchronous call is
(producer_api/delivery.py), and its Location says it was never received once
``async_results.unconfirmed_bound_s`` has passed without a result.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from producer_api import async_results
from producer_api.api_metrics import BROKER_UNAVAILABLE, REQUESTS_PUBLISHED
from producer_api.delivery import BrokerUnavailable, DeliveryUnconfirmed
from producer_api.dispatch import publish_request
from producer_api.errors import error
from producer_api.replies import Reply
from producer_api.services import Services
from shared.messages import MessageError, RefreshReply, RefreshRequested, status_location
from shared.settings import Settings

log = logging.getLogger(__name__)

RESPOND_ASYNC = "respond-async"
# How long the accepting API listens for a reply to keep (see the module doc).
# Bounded so that requests no consumer ever answers do not pile up in memory.
REPLY_WATCH_S = 3600.0
# Ids are UUIDs; anything much longer is not one of ours, and PostgreSQL text
# cannot hold NUL, so such ids are answered 404 without asking the database.
MAX_REQUEST_ID_CHARS = 128


def wants_async(request: Request) -> bool:
    """True if any ``Prefer`` header holds the ``respond-async`` preference.

    RFC 7240: preferences are comma-separated, tokens are case-insensitive and
    may carry a value or parameters (``respond-async; foo=1``), and a server
    ignores the preferences it does not know (``wait=10`` here).
    """
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            token = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if token == RESPOND_ASYNC:
                return True
    return False


def pending(request_id: str) -> JSONResponse:
    return JSONResponse(
        {"request_id": request_id, "status": "pending"},
        status_code=202,
        headers={"Location": status_location(request_id), "X-Request-Id": request_id},
    )


async def accept(services: Services, command: RefreshRequested) -> JSONResponse:
    """Record, publish, answer 202. A request that was certainly not published
    is not accepted: 503 and no record, so its id never reads as pending. One
    that perhaps was is 504 with its Location."""
    request_id, waiter = command.request_id, services.waiter
    try:
        await run_in_threadpool(async_results.record_accepted, services.engine, request_id, command.company_id)
    except SQLAlchemyError:
        log.exception("cannot record async request %s", request_id)
        return error(503, "Database unavailable, try again later")
    reply = waiter.expect(request_id)  # before publishing: no reply can be missed
    try:
        await publish_request(services.settings, services.publisher, command)
        REQUESTS_PUBLISHED.labels("async").inc()
    except BrokerUnavailable as exc:
        BROKER_UNAVAILABLE.inc()
        log.warning("async request %s not delivered: %s", request_id, exc)
        waiter.forget(request_id)
        await run_in_threadpool(_forget_accepted, services.engine, request_id)
        return error(503, "Message broker unavailable, request not sent", request_id=request_id)
    except DeliveryUnconfirmed as exc:
        log.warning("async request %s: delivery not confirmed: %s", request_id, exc)
        await run_in_threadpool(_mark_unconfirmed, services.engine, request_id)
        _keep_reply_when_it_comes(services.engine, waiter.loop, request_id, reply)
        waiter.loop.call_later(REPLY_WATCH_S, waiter.forget, request_id)
        location = status_location(request_id)
        return error(504, "Timed out waiting for the broker to confirm the request: it may have been written",
                     headers={"Location": location}, request_id=request_id, location=location)
    _keep_reply_when_it_comes(services.engine, waiter.loop, request_id, reply)
    waiter.loop.call_later(REPLY_WATCH_S, waiter.forget, request_id)
    response = pending(request_id)
    response.headers["Preference-Applied"] = RESPOND_ASYNC
    return response


async def refresh_request_status(request: Request) -> JSONResponse:
    """The result of a refresh accepted in async mode.

    Same API key and rate limit as the refresh itself; the stored result is
    answered with the status the refresh had.

    The YAML below is this operation in GET /openapi.json (producer_api/openapi.py).
    ---
    summary: The result of a refresh accepted in async mode
    operationId: getRefreshRequest
    parameters:
      - name: request_id
        in: path
        required: true
        description: The `request_id` of the 202 answer (the last segment of its `Location`).
        schema: {type: string}
    responses:
      "200": {$ref: "#/components/responses/RefreshResult"}
      "202": {$ref: "#/components/responses/Pending"}
      "401": {$ref: "#/components/responses/Unauthorized"}
      "403": {$ref: "#/components/responses/NotOwned"}
      "404": {$ref: "#/components/responses/UnknownRequest"}
      "429": {$ref: "#/components/responses/TooManyRequests"}
      "500": {$ref: "#/components/responses/RefreshFailed"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    services: Services = request.state.services
    company_id = await services.gate.company(request)
    request_id: str = request.path_params["request_id"]
    if len(request_id) > MAX_REQUEST_ID_CHARS or "\x00" in request_id:
        return unknown_request()
    try:
        found = await run_in_threadpool(async_results.find, services.engine, request_id, company_id,
                                        async_results.unconfirmed_bound_s(services.settings))
    except SQLAlchemyError:
        log.exception("cannot read async request %s", request_id)
        return error(503, "Database unavailable, try again later")
    if found is None:
        return unknown_request()
    if not found.received:
        return never_received(services.settings, request_id)
    if found.status is None:
        return pending(request_id)
    return JSONResponse(found.body, status_code=found.status, headers={"X-Request-Id": request_id})


def unknown_request() -> JSONResponse:
    return error(404, "Unknown refresh request id")


def never_received(settings: Settings, request_id: str) -> JSONResponse:
    """A 504 whose delivery was not confirmed, and no result since: the
    request was most likely never written; sending it again is safe (a
    refresh is idempotent: should the first arrive after all, the second
    reports no change)."""
    bound = async_results.unconfirmed_bound_s(settings)
    return error(404, f"Unknown refresh request id: the broker never confirmed it and no result came within "
                      f"{bound:.0f} s; send the refresh again", request_id=request_id)


# -- keeping the reply seen on the reply topic -------------------------------


def _keep_reply_when_it_comes(
    engine: Engine, loop: asyncio.AbstractEventLoop, request_id: str, reply: asyncio.Future[Reply]
) -> None:
    def store(done: asyncio.Future[Reply]) -> None:
        if not done.cancelled():
            # Nobody awaits this: _store_reply logs its own failures.
            loop.run_in_executor(None, _store_reply, engine, request_id, done.result().value)

    reply.add_done_callback(store)


def _store_reply(engine: Engine, request_id: str, value: bytes) -> None:
    try:
        async_results.keep_reply(engine, request_id, RefreshReply.from_json(value))
    except (MessageError, SQLAlchemyError) as exc:
        # The consumer's own record still answers GET for every reply but a
        # dead-lettered one's; that one then stays pending.
        log.warning("cannot keep the reply to async request %s: %s", request_id, exc)


def _mark_unconfirmed(engine: Engine, request_id: str) -> None:
    try:
        async_results.mark_unconfirmed(engine, request_id)
    except SQLAlchemyError as exc:
        # The row stays pending (as a confirmed one would): never a false "unknown".
        log.warning("cannot mark async request %s unconfirmed: %s", request_id, exc)


def _forget_accepted(engine: Engine, request_id: str) -> None:
    try:
        async_results.forget_accepted(engine, request_id)
    except SQLAlchemyError as exc:
        # The caller got 503 and never saw this id, so a leftover row misleads no one.
        log.warning("cannot delete unsent async request %s: %s", request_id, exc)
