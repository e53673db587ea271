"""The Starlette app: POST /assessments/refresh-assessments, answered over Kafka."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from producer_api import async_requests, async_results, query
from producer_api.access_log import AccessLogIds, scrub_access_log
from producer_api.api_metrics import (
    BROKER_UNAVAILABLE,
    REPLY_TIMEOUTS,
    REQUESTS_PUBLISHED,
    MetricsMiddleware,
    metrics,
)
from producer_api.delivery import BrokerUnavailable, DeliveryUnconfirmed
from producer_api.dispatch import publish_request
from producer_api.errors import EXCEPTION_HANDLERS, error
from producer_api.history import HISTORY_PATH, assessment_history
from producer_api.http_tracing import tracing_middleware
from producer_api.openapi import docs_routes
from producer_api.replies import await_reply
from producer_api.security_headers import SecurityHeaders
from producer_api.services import Services, lifespan
from producer_api.validation import BadRequest, parse_assessment_ids
from shared.db import ping
from shared.log_setup import bind
from shared.messages import STATUS_PATH, MessageError, RefreshReply, RefreshRequested, new_id, status_location
from shared.settings import Settings
from shared.tracing import setup_tracing
from shared.version import __version__

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


CLIENT_CLOSED_REQUEST = 499


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def client_went_away(request: Request) -> Response:
    """The client closed the connection before its body was all there: its
    business, not a server error. One INFO line, and 499 (nginx's "client
    closed request") for the metrics; nobody is left to read the answer."""
    log.info("client closed the connection before sending its whole body (%s bytes declared): nothing done",
             request.headers.get("content-length", "no length"))
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def refresh_assessments(request: Request) -> Response:
    """Refresh assessments; wait for the result, or with ``Prefer: respond-async`` answer 202.

    The YAML below is this operation in GET /openapi.json (producer_api/openapi.py).
    ---
    summary: Refresh the company's assessments against the current question bank
    operationId: refreshAssessments
    parameters:
      - name: Prefer
        in: header
        required: false
        description: >-
          `respond-async` (RFC 7240): answer 202 at once, with the request id and
          a `Location` to poll, instead of waiting for the result.
        schema: {type: string}
        example: respond-async
      - name: dry_run
        in: query
        required: false
        description: >-
          `true`: a preview. The answer is the report this refresh would give now
          (`"dry_run": true`, each assessment `would_update` or `unchanged`), and
          nothing is changed. Answered synchronously (`Prefer: respond-async` is
          not applied). Anything but `true` or `false` is a 400.
        schema: {type: boolean, default: false}
    requestBody:
      required: false
      content:
        application/json:
          schema: {$ref: "#/components/schemas/RefreshRequest"}
    responses:
      "200": {$ref: "#/components/responses/RefreshResult"}
      "202":
        description: >-
          Async mode: accepted and published; poll `Location`.
          `Preference-Applied: respond-async` confirms the mode.
        headers:
          Location:
            description: "`/assessments/refresh-requests/{request_id}`"
            required: true
            schema: {type: string}
          Preference-Applied:
            required: true
            schema: {type: string, enum: [respond-async]}
          X-Request-Id: {$ref: "#/components/headers/X-Request-Id"}
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Pending"}
      "400": {$ref: "#/components/responses/BadRequest"}
      "401": {$ref: "#/components/responses/Unauthorized"}
      "403": {$ref: "#/components/responses/NotOwned"}
      "413": {$ref: "#/components/responses/TooLarge"}
      "429": {$ref: "#/components/responses/TooManyRequests"}
      "500": {$ref: "#/components/responses/RefreshFailed"}
      "502": {$ref: "#/components/responses/BadReply"}
      "503": {$ref: "#/components/responses/Unavailable"}
      "504": {$ref: "#/components/responses/Timeout"}
    """
    services: Services = request.state.services
    settings = services.settings
    # The key first: a caller without a valid one never gets its body read.
    company_id = await services.gate.company(request)
    try:
        body = await read_body(request, settings.max_body_bytes)
    except BodyTooLarge:
        return error(413, f"Request body exceeds {settings.max_body_bytes} bytes")
    except ClientDisconnect:
        return client_went_away(request)
    try:
        ids = parse_assessment_ids(body, settings.max_assessment_ids)
        dry_run = query.flag(request.query_params, "dry_run")
    except BadRequest as exc:
        return error(400, str(exc))
    command = RefreshRequested(new_id(), company_id, ids, dry_run=dry_run)
    # Every line logged for this request from here on carries its id, as the
    # consumer's lines for it do: one grep follows it end to end.
    request.state.request_id = command.request_id  # for uvicorn's access line (AccessLogIds)
    with bind(request_id=command.request_id, company_id=company_id):
        if async_requests.wants_async(request) and not dry_run:  # a preview has no result to poll
            log.info("refresh request accepted (async) for %s", "all assessments" if ids is None else f"{len(ids)} id(s)")
            return await async_requests.accept(services, command)
        log.info("refresh request for %s", "all assessments" if ids is None else f"{len(ids)} id(s)")
        response = await call_consumer(services, command)
        log.info("refresh request answered %d", response.status_code)
        return response


async def call_consumer(services: Services, command: RefreshRequested) -> JSONResponse:
    """Publish the request and await its reply on this process's reply reader."""
    settings, waiter = services.settings, services.waiter
    request_id = command.request_id
    if not waiter.ready.is_set():
        return error(503, "Message broker unavailable: reply channel not ready", request_id=request_id)
    reply_future = waiter.expect(request_id)  # before publishing: no reply can be missed
    try:
        await publish_request(settings, services.publisher, command)
        REQUESTS_PUBLISHED.labels("sync").inc()
        received = await await_reply(reply_future, settings.reply_topic, request_id, settings.reply_timeout_s)
    except BrokerUnavailable as exc:
        BROKER_UNAVAILABLE.inc()
        log.warning("request %s not written: %s", request_id, exc)
        return error(503, "Message broker unavailable: the request was not sent", request_id=request_id)
    except DeliveryUnconfirmed as exc:
        # Perhaps written (a leader election outlasting BROKER_TIMEOUT_S): then
        # it is processed once, under this request_id, and its result is at
        # the Location; never a 503, which would say it was not.
        REPLY_TIMEOUTS.inc()
        log.warning("request %s: delivery not confirmed: %s", request_id, exc)
        return await timed_out(services, command, delivery_confirmed=False)
    except TimeoutError:
        REPLY_TIMEOUTS.inc()
        log.warning("request %s: no reply within %.0f s", request_id, settings.reply_timeout_s)
        return await timed_out(services, command)
    finally:
        waiter.forget(request_id)
    try:
        reply = RefreshReply.from_json(received.value)
    except MessageError as exc:
        return error(502, f"Malformed reply from the consumer: {exc}", request_id=request_id)
    body = reply.body
    if reply.result_location is not None:
        # A report too large for the reply topic: the consumer stored it, and said so.
        read = async_results.stored_preview if command.dry_run else async_results.stored_result
        stored = await run_in_threadpool(read, services.engine, request_id, command.company_id)
        if stored is None or stored.body is None:
            return error(502, "The consumer's stored result could not be read", request_id=request_id)
        body = stored.body
    return JSONResponse(body, status_code=reply.status, headers={"X-Request-Id": request_id})


async def timed_out(services: Services, command: RefreshRequested, *, delivery_confirmed: bool = True) -> JSONResponse:
    """504, with where the result will be: the request is recorded as the
    async mode records its requests, so that polling the Location answers 202
    while it runs and the full report when it is done. A request whose
    delivery was not confirmed is recorded as such: if no result comes within
    a bound, the Location says the service never received it
    (async_results.unconfirmed_bound_s)."""
    request_id = command.request_id
    if command.dry_run:
        # A preview is stored nowhere: nothing to poll, and sending it again is harmless.
        return error(504, "Timed out waiting for the preview; nothing was changed", request_id=request_id)
    location = status_location(request_id)
    try:
        await run_in_threadpool(async_results.record_accepted, services.engine, request_id, command.company_id,
                                delivery_confirmed)
    except SQLAlchemyError:
        log.exception("cannot record timed-out request %s for polling", request_id)
    message = ("Timed out waiting for the refresh result" if delivery_confirmed
               else "Timed out waiting for the broker to confirm the request: it may have been written")
    return error(504, message, headers={"Location": location}, request_id=request_id, location=location)


async def healthz(_request: Request) -> JSONResponse:
    """The process is up (a liveness probe); it checks nothing else, and names the version running.

    ---
    summary: Liveness, and the version of the service
    operationId: healthz
    security: []
    responses:
      "200":
        description: The process is up. `GET /readyz` says whether it can serve refreshes.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Health"}
    """
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> JSONResponse:
    """Ready when the reply reader is positioned, the broker and the database answer."""
    services: Services = request.state.services
    checks = {
        "reply_consumer_assigned": services.waiter.ready.is_set(),
        "reply_topic": not services.waiter.topic_missing,
        "broker": await run_in_threadpool(services.publisher.broker_reachable),
    }
    try:
        await run_in_threadpool(ping, services.engine)
        checks["database"] = True
    except SQLAlchemyError:
        checks["database"] = False
    return JSONResponse({"ready": all(checks.values()), **checks}, status_code=200 if all(checks.values()) else 503)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    setup_tracing("assessment-refresh-api")  # OTEL_* variables; nothing without an exporter
    scrub_access_log()
    return Starlette(
        routes=[
            Route("/assessments/refresh-assessments", refresh_assessments, methods=["POST"]),
            Route(STATUS_PATH, async_requests.refresh_request_status, methods=["GET"]),
            Route(HISTORY_PATH, assessment_history, methods=["GET"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            # With API_METRICS_PORT the lifespan serves /metrics there instead.
            *([] if settings.api_metrics_port else [Route("/metrics", metrics)]),
            *docs_routes(settings),
        ],
        middleware=[Middleware(SecurityHeaders), *tracing_middleware(), Middleware(MetricsMiddleware),
                    Middleware(AccessLogIds)],
        lifespan=lifespan(settings),
        exception_handlers=EXCEPTION_HANDLERS,
    )
