"""The OpenAPI 3 document (GET /openapi.json), a Swagger UI page (GET /docs),
and the Kafka side's AsyncAPI document (GET /asyncapi.json, shared/asyncapi.py).

Paths and methods come from the route table through Starlette's
SchemaGenerator, so a route cannot be documented under a path or method it
does not serve. Each operation is the YAML after ``---`` in its endpoint's
docstring, next to the code it describes; the schemas, responses and security
schemes those operations refer to are below.

OpenAPI 3.0.3 rather than 3.1: the Swagger UI that swagger-ui-bundle ships
(4.x) renders 3.0 documents only.

Swagger UI's assets come from the swagger-ui-bundle package and are served by
this app under /docs/assets: the page works without reaching any CDN.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from shared import asyncapi
from shared.message_schemas import ID, RESULT_SCHEMAS, closed_object
from shared.settings import Settings
from shared.version import __version__

DOCS_PATH = "/docs"
DOCS_ASSETS_PATH = "/docs/assets"
SCHEMA_PATH = "/openapi.json"
ASYNCAPI_PATH = "/asyncapi.json"


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


def _error_response(description: str, schema_name: str = "Error", **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _json(schema_name), **extra}


REQUEST_ID = {"type": "string", "format": "uuid", "description": "The refresh request's id (a UUID)."}

SCHEMAS: dict[str, Any] = {
    "RefreshRequest": {
        "type": "object",
        "description": "An empty body, `{}`, or `assessment_ids` missing, null or `[]` refresh every "
        "assessment of the company that owns the API key. Any other field, or a field given twice, is a "
        "400 that names it (`Unknown field(s): [\"assesment_ids\"]`, `Duplicate field(s): "
        "[\"assessment_ids\"]`): a misspelled field never means \"all\".",
        "additionalProperties": False,
        "properties": {
            "assessment_ids": {
                "type": "array",
                "nullable": True,
                "items": ID,
                "description": "Assessment ids (64-bit integers; booleans, floats and strings are refused). "
                "Duplicates are refreshed once. At most MAX_ASSESSMENT_IDS ids (1000 by default).",
            }
        },
        "example": {"assessment_ids": [11, 12]},
    },
    # A reply's body is the answer: the consumer's result schemas, written once (shared/message_schemas.py).
    **RESULT_SCHEMAS,
    "Pending": closed_object(
        ["request_id", "status"],
        {"request_id": REQUEST_ID, "status": {"type": "string", "enum": ["pending"]}},
    ),
    "ErrorMaybeWithRequestId": closed_object(
        ["error"],
        {"error": {"type": "string"}, "request_id": REQUEST_ID},
        description="`request_id` is present when the request got an id before failing.",
    ),
    "ErrorWithRequestId": closed_object(["error", "request_id"], {"error": {"type": "string"}, "request_id": REQUEST_ID}),
    "TimedOut": closed_object(
        ["error", "request_id", "location"],
        {"error": {"type": "string"}, "request_id": REQUEST_ID,
         "location": {"type": "string", "description": "Where to poll for the result (as the `Location` header)."}},
    ),
    "HistoryTrigger": closed_object(
        ["type"],
        {
            "type": {"type": "string", "enum": ["request", "question.deleted"]},
            "request_id": {"type": "string", "description": "The refresh request's id (`type: request`)."},
            "event_id": {"type": "string", "description": "The bank's event id (`type: question.deleted`)."},
            "qid": {**ID, "description": "The deleted question (`type: question.deleted`)."},
            "replay": {"type": "boolean", "enum": [True], "description": "Present when a replay made the change."},
        },
        description="What caused the change, as the `assessment.refreshed` events say it.",
    ),
    "HistoryChange": closed_object(
        ["section_idx", "question_idx", "old_qid", "new_qid", "old_version", "new_version", "kind", "trigger",
         "changed_at"],
        {
            "section_idx": {"type": "integer", "minimum": 0, "description": "0-based section position."},
            "question_idx": {"type": "integer", "minimum": 0, "description": "0-based position in the section."},
            "old_qid": ID,
            "new_qid": ID,
            "old_version": {"type": "integer", "description": "The bank version the slot's snapshot had."},
            "new_version": {"type": "integer", "description": "The bank version it got."},
            "kind": {"type": "string", "enum": ["refreshed", "replaced"],
                     "description": "`refreshed`: the same question's newer version; `replaced`: a deleted "
                     "question swapped for an alternative."},
            "trigger": {"$ref": "#/components/schemas/HistoryTrigger"},
            "changed_at": {"type": "string", "format": "date-time"},
        },
    ),
    "History": closed_object(
        ["oid", "changes", "next_cursor"],
        {
            "oid": ID,
            "changes": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryChange"},
                        "description": "Newest first."},
            "next_cursor": {"type": "string", "nullable": True,
                            "description": "Pass as `cursor` for the next page; null on the last page."},
        },
    ),
    "TimedOutMaybePreview": {"oneOf": [{"$ref": "#/components/schemas/TimedOut"},
                                       {"$ref": "#/components/schemas/ErrorWithRequestId"}]},
    "Health": closed_object(
        ["status", "version"],
        {
            "status": {"type": "string", "enum": ["ok"]},
            "version": {
                "type": "string",
                "description": "The version of the service answering (pyproject.toml's, as installed); "
                "the same as this document's `info.version`.",
                "example": __version__,
            },
        },
    ),
}

RESPONSES: dict[str, Any] = {
    "RefreshResult": {
        "description": "Refreshed. `X-Request-Id` carries the request id.",
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        "content": _json("RefreshResult"),
    },
    "Pending": {
        "description": "Accepted (async mode) or still pending: poll `Location` for the result.",
        "headers": {
            "Location": {
                "description": "`/assessments/refresh-requests/{request_id}`",
                "required": True,
                "schema": {"type": "string"},
            },
            "X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"},
        },
        "content": _json("Pending"),
    },
    "BadRequest": _error_response(
        "The body is not a JSON object, names a field other than `assessment_ids` or a field twice, "
        "`assessment_ids` is not a list, or not a list of integers; or `dry_run` is neither `true` nor `false`."
    ),
    "Unauthorized": _error_response("Missing or unknown API key: `{\"error\": \"Invalid or missing API key\"}`."),
    "NotOwned": _error_response(
        "Ids that do not exist or belong to another company, sorted and without duplicates; "
        "nothing was refreshed."
    ),
    "TooLarge": _error_response("The request body exceeds MAX_BODY_BYTES."),
    "TooManyRequests": _error_response(
        "Over this API key's rate limit.",
        headers={
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    ),
    "RefreshFailed": _error_response(
        "The refresh failed and changed nothing (`Error refreshing assessment data: <message>`), "
        "or an unexpected server error."
    ),
    "BadReply": _error_response("The consumer's reply could not be read.", "ErrorWithRequestId"),
    "Unavailable": _error_response(
        "Certainly not done: the message broker (no connection to any broker, or it refused the request) "
        "or the database is unreachable; answered within seconds. Sending the request again is safe.",
        "ErrorMaybeWithRequestId"
    ),
    "Timeout": _error_response(
        "Outcome not known yet: no reply within REPLY_TIMEOUT_S, or the broker did not confirm the request "
        "within BROKER_TIMEOUT_S (it may have been written). Poll `Location` "
        "(`GET /assessments/refresh-requests/{request_id}`): 202 while pending, the full report when done "
        "(a large refresh when its last chunk commits); 404 if a request whose delivery was not confirmed "
        "brought no result within BROKER_TIMEOUT_S + REPLY_TIMEOUT_S of the 504. A preview (`dry_run=true`) "
        "has no `Location`: it changed nothing and is stored nowhere; send it again.",
        "TimedOutMaybePreview",
        headers={
            "Location": {
                "description": "`/assessments/refresh-requests/{request_id}`; always there but for a preview.",
                "required": False,
                "schema": {"type": "string"},
            },
        },
    ),
    "BadQuery": _error_response("A query parameter is malformed (`limit`, `since` or `cursor`)."),
    "UnknownAssessment": _error_response(
        "No such assessment for this API key's company (unknown and another company's look the same)."
    ),
    "UnknownRequest": _error_response(
        "No refresh request with this id for this API key's company, or (with `request_id`) one answered "
        "504 whose delivery the broker never confirmed and that brought no result in time: send it again.",
        "ErrorMaybeWithRequestId",
    ),
}

BASE_SCHEMA: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "assessment-refresh",
        # The service's own version (shared/version.py), so a client sees which release it talks to.
        "version": __version__,
        "description": "Keeps hiring assessments in line with a changing question bank. "
        "Refreshes run in a consumer behind Kafka; this API waits for their reply, or, with "
        "`Prefer: respond-async`, answers 202 at once and lets the caller poll the result.",
    },
    "security": [{"apiKey": []}, {"xApiKey": []}],
    "components": {
        "securitySchemes": {
            "apiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "apiKey",
                "description": "The company's API key. The header `X-API-Key` is accepted too.",
            },
            "xApiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "The same API key under the conventional header name.",
            },
        },
        "headers": {
            "X-Request-Id": {"description": "The refresh request's id.", "schema": {"type": "string"}},
        },
        "schemas": SCHEMAS,
        "responses": RESPONSES,
    },
}

schema_generator = SchemaGenerator(BASE_SCHEMA)


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    return schema_generator.get_schema(routes=routes)


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document(request.app.routes))


_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>assessment-refresh API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{assets}/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{schema}",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    }});
  </script>
</body>
</html>
"""


async def docs_page(request: Request) -> HTMLResponse:
    # root_path: the links stay right when a proxy serves the app under a prefix.
    root = request.scope.get("root_path", "")
    page = _DOCS_PAGE.format(assets=html.escape(root + DOCS_ASSETS_PATH), schema=html.escape(root + SCHEMA_PATH))
    return HTMLResponse(page)


def asyncapi_json(settings: Settings) -> Callable[[Request], Awaitable[Response]]:
    """GET /asyncapi.json: the Kafka side's document (shared/asyncapi.py) for
    this process's topics and group, built once (it depends on nothing else)."""
    body = json.dumps(asyncapi.document(settings), ensure_ascii=False).encode()

    async def endpoint(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    return endpoint


def docs_routes(settings: Settings) -> list[BaseRoute]:
    """/openapi.json, /asyncapi.json, /docs and its assets; none of them is
    part of the OpenAPI document, and, like it, none needs an API key."""
    return [
        Route(SCHEMA_PATH, openapi_json, methods=["GET"], include_in_schema=False),
        Route(ASYNCAPI_PATH, asyncapi_json(settings), methods=["GET"], include_in_schema=False),
        Route(DOCS_PATH, docs_page, methods=["GET"], include_in_schema=False),
        Mount(DOCS_ASSETS_PATH, app=StaticFiles(directory=Path(str(swagger_ui_path))), name="docs-assets"),
    ]
