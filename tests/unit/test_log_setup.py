"""Structured log lines and the ids bound to them (shared.log_setup)."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from shared.log_setup import JsonFormatter, TextFormatter, bind


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("consumer.worker", logging.INFO, __file__, 1, message, args, None)


def test_a_json_line_carries_the_bound_ids_and_only_inside_bind() -> None:
    with bind(request_id="r-1", company_id=7, event_id=None):
        inside = json.loads(JsonFormatter().format(record("handled %d", 200)))
    outside = json.loads(JsonFormatter().format(record("idle")))
    assert inside["request_id"] == "r-1" and inside["company_id"] == 7 and "event_id" not in inside
    assert inside["message"] == "handled 200" and inside["level"] == "INFO" and inside["logger"] == "consumer.worker"
    assert "request_id" not in outside


def test_a_json_line_names_the_span_it_was_logged_in() -> None:
    with TracerProvider().get_tracer("test").start_as_current_span("process") as span:  # a local provider
        inside = json.loads(JsonFormatter().format(record("x")))
    outside = json.loads(JsonFormatter().format(record("x")))
    context = span.get_span_context()
    assert (inside["trace_id"], inside["span_id"]) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert "trace_id" not in outside


def test_nested_binds_add_up_and_unwind() -> None:
    with bind(request_id="r-1"), bind(topic="t"):
        both = json.loads(JsonFormatter().format(record("x")))
    assert (both["request_id"], both["topic"]) == ("r-1", "t")


def test_an_exception_is_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_text_lines_append_the_bound_ids() -> None:
    with bind(correlation_id="c-9"):
        assert TextFormatter().format(record("hello")).endswith("hello correlation_id=c-9")
