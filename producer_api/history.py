"""GET /assessments/{oid}/history: what refreshes changed in one assessment, newest first."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from producer_api import query
from producer_api.errors import error
from producer_api.services import Services
from producer_api.validation import INT64_MAX, BadRequest
from shared import history

log = logging.getLogger(__name__)

HISTORY_PATH = "/assessments/{oid:int}/history"


async def assessment_history(request: Request) -> JSONResponse:
    """One assessment's changes, newest first, a page at a time.

    The YAML below is this operation in GET /openapi.json (producer_api/openapi.py).
    ---
    summary: What refreshes changed in an assessment, and why
    operationId: getAssessmentHistory
    parameters:
      - name: oid
        in: path
        required: true
        description: The assessment's id.
        schema: {type: integer, format: int64, minimum: 0}
      - name: cursor
        in: query
        required: false
        description: The `next_cursor` of the previous page (opaque).
        schema: {type: string}
      - name: limit
        in: query
        required: false
        description: Changes per page, 1 to 500.
        schema: {type: integer, minimum: 1, maximum: 500, default: 50}
      - name: since
        in: query
        required: false
        description: Only changes made at or after this time (ISO 8601 with a time zone).
        schema: {type: string, format: date-time}
        example: "2026-12-08T00:00:00Z"
    responses:
      "200":
        description: The changes, newest first; `next_cursor` is null on the last page.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/History"}
      "400": {$ref: "#/components/responses/BadQuery"}
      "401": {$ref: "#/components/responses/Unauthorized"}
      "404": {$ref: "#/components/responses/UnknownAssessment"}
      "429": {$ref: "#/components/responses/TooManyRequests"}
      "503": {$ref: "#/components/responses/Unavailable"}
    """
    services: Services = request.state.services
    company_id = await services.gate.company(request)
    oid: int = request.path_params["oid"]
    try:
        limit = query.bounded_int(request.query_params, "limit", history.DEFAULT_PAGE, 1, history.MAX_PAGE)
        since = query.timestamp(request.query_params, "since")
    except BadRequest as exc:
        return error(400, str(exc))
    try:
        # The cursor is checked after the assessment: any string is a cursor to
        # the schema, and an unknown assessment is a 404 whatever its cursor.
        page = await run_in_threadpool(_read, services.engine, company_id, oid, limit, since,
                                       request.query_params.get("cursor") or None)
    except history.BadCursor as exc:
        return error(400, str(exc))
    except SQLAlchemyError:
        log.exception("cannot read the history of assessment %d", oid)
        return error(503, "Database unavailable, try again later")
    if page is None:
        # Unknown and another company's look the same: ids cannot be probed.
        return error(404, f"Unknown assessment: {oid}")
    return JSONResponse({"oid": oid, "changes": page.changes, "next_cursor": page.next_cursor})


def _read(engine: Engine, company_id: int, oid: int, limit: int, since: datetime | None,
          cursor: str | None) -> history.Page | None:
    if oid > INT64_MAX:
        return None
    with engine.connect() as conn:
        if not history.owned_by(conn, oid, company_id):
            return None
        after = history.Cursor.decode(cursor) if cursor is not None else None
        return history.page(conn, oid, limit=limit, since=since, after=after)
