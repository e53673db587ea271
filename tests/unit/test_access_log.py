"""The access line never shows a key-like query parameter's value (producer_api/access_log.py)."""

from __future__ import annotations

import logging

import pytest

from producer_api.access_log import ScrubQuery, scrub_query


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/a?apiKey=s3cret&page=2", "/a?apiKey=***&page=2"),
        ("/a?API_KEY=s3cret", "/a?API_KEY=***"),
        ("/a?x-api-key=s3cret", "/a?x-api-key=***"),
        ("/a?api%5Fkey=s3cret", "/a?api%5Fkey=***"),
        ("/a?key=1&token=2&access_token=3&client_secret=4&password=5&auth=6&sig=7",
         "/a?key=***&token=***&access_token=***&client_secret=***&password=***&auth=***&sig=***"),
        ("/a?page=2&sort=oid", "/a?page=2&sort=oid"),
        ("/a?apiKey", "/a?apiKey"),  # no value: nothing to hide
        ("/a", "/a"),
    ],
)
def test_key_like_values_are_masked(path: str, shown: str) -> None:
    assert scrub_query(path) == shown


def test_the_filter_rewrites_uvicorns_access_line() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "POST", "/x?apiKey=s3cret", "1.1", 401), None)
    assert ScrubQuery().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "POST /x?apiKey=*** HTTP/1.1" 401'
