"""Logged exceptions name code, not SQL, values or content (DEBUG included)."""

from __future__ import annotations

import json
import logging

from sqlalchemy.exc import IntegrityError

from shared.log_setup import JsonFormatter, TextFormatter
from shared.safe_errors import public_message

SQL = "INSERT INTO questions (qid, content) VALUES (%(qid)s, %(content)s)"


class DriverError(Exception):
    pass


def failing_refresh() -> None:
    try:
        raise DriverError('duplicate key value violates unique constraint "questions_pkey"\n'
                          "DETAIL:  Key (qid)=(4242) already exists.")
    except DriverError as driver:
        raise IntegrityError(SQL, {"qid": 4242, "content": "secret question text"}, driver) from driver


def logged(formatter: logging.Formatter) -> str:
    try:
        failing_refresh()
    except IntegrityError:
        record = logging.LogRecord("consumer", logging.ERROR, __file__, 1, "refresh failed", None, None)
        import sys

        record.exc_info = sys.exc_info()
        return formatter.format(record)
    raise AssertionError("no exception")


def test_a_logged_statement_error_names_frames_and_the_first_line_only() -> None:
    for text in (json.loads(logged(JsonFormatter()))["exc"], logged(TextFormatter())):
        assert "INSERT INTO" not in text and "secret question text" not in text and "4242" not in text
        assert 'DriverError: duplicate key value violates unique constraint "questions_pkey"' in text
        assert "in failing_refresh" in text and "test_safe_errors.py" in text  # the frames are there


def test_public_message_is_type_and_first_line() -> None:
    try:
        failing_refresh()
    except IntegrityError as exc:
        assert public_message(exc) == 'DriverError: duplicate key value violates unique constraint "questions_pkey"'
