"""Request body rules of POST /assessments/refresh-assessments (docs/design.md#rest-contract)."""

from __future__ import annotations

import json

import pytest

from producer_api.validation import BadRequest, parse_assessment_ids

MAX_IDS = 1000
NOT_OBJECT = "Request body must be a JSON object"
NOT_LIST = "assessment_ids must be a list"
NOT_INTS = "assessment_ids must be a list of integers"


def parse(body: bytes | str, max_ids: int = MAX_IDS):
    return parse_assessment_ids(body.encode() if isinstance(body, str) else body, max_ids)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty-body"),
        pytest.param(b" \t\r\n {} \r\n", id="object-in-json-whitespace"),
        pytest.param("{}", id="empty-object"),
        pytest.param('{"assessment_ids": null}', id="null-ids"),
        pytest.param('{"assessment_ids": []}', id="empty-list"),
    ],
)
def test_means_every_assessment(body):
    assert parse(body) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1, id="integer"),
        pytest.param("1,2", id="string"),
        pytest.param({"1": 2}, id="object"),
        pytest.param(True, id="boolean"),
        pytest.param(1.5, id="float"),
    ],
)
def test_ids_not_a_list(value):
    with pytest.raises(BadRequest) as exc:
        parse(json.dumps({"assessment_ids": value}))
    assert str(exc.value) == NOT_LIST


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param("[1, true]", id="boolean-true"),
        pytest.param("[false]", id="boolean-false"),
        pytest.param("[1.0]", id="integral-float"),
        pytest.param("[2.5]", id="float"),
        pytest.param('["3"]', id="numeric-string"),
        pytest.param("[1, null]", id="null-item"),
        pytest.param("[[1]]", id="nested-list"),
        pytest.param('[{"id": 1}]', id="object-item"),
        pytest.param("[NaN]", id="nan"),
        pytest.param("[1e400]", id="float-overflow-infinity"),
    ],
)
def test_ids_not_all_integers(ids):
    with pytest.raises(BadRequest) as exc:
        parse('{"assessment_ids": %s}' % ids)
    assert str(exc.value) == NOT_INTS


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("[1, 2, 3]", id="json-array"),
        pytest.param('[{"assessment_ids": [1]}]', id="object-inside-array"),
        pytest.param('"hello"', id="json-string"),
        pytest.param("42", id="json-number"),
        pytest.param("null", id="json-null"),
        pytest.param("true", id="json-boolean"),
        pytest.param('{"assessment_ids": [1,', id="truncated-json"),
        pytest.param("assessment_ids=1", id="form-encoded"),
        pytest.param("{'assessment_ids': [1]}", id="single-quoted"),
        pytest.param(b'{"assessment_ids": [1], "n": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b"\x00\x01\x02", id="binary"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="absurd-nesting"),
        # Only an empty body means {} (docs/design.md#rest-contract), not whitespace alone.
        pytest.param(b"  \n\t ", id="whitespace-body"),
        pytest.param(b"\r\n", id="crlf-body"),
        # Python's bytes.strip() counts these as whitespace; JSON does not (RFC 8259 section 2).
        pytest.param(b"\x0b", id="vertical-tab-only"),
        pytest.param(b"\x0c", id="form-feed-only"),
        pytest.param(b" \x0b\x0c\n", id="json-and-non-json-whitespace"),
        pytest.param(b"\x0b{}", id="vertical-tab-before-object"),
        pytest.param(b"{}\x0c", id="form-feed-after-object"),
        pytest.param(b"\x1c\x1d\x1e\x1f", id="str-isspace-separators"),
        pytest.param("\u00a0\u2003".encode(), id="unicode-spaces"),
        pytest.param(b"\xef\xbb\xbf", id="utf8-bom-only"),
    ],
)
def test_body_not_a_json_object(body):
    with pytest.raises(BadRequest) as exc:
        parse(body)
    assert str(exc.value) == NOT_OBJECT


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param('{"assessment_ids": [1, 2, 3]}', [1, 2, 3], id="plain"),
        pytest.param('{"assessment_ids": [3, 1, 3, 2, 1]}', [3, 1, 2], id="duplicates-first-seen-order"),
        pytest.param('{"assessment_ids": [5, 5, 5]}', [5], id="all-duplicates"),
        pytest.param('{"assessment_ids": [-4, 0]}', [-4, 0], id="negative-and-zero"),
        pytest.param('{"assessment_ids": [%d, %d]}' % (2**63 - 1, -(2**63)), [2**63 - 1, -(2**63)], id="int64-bounds"),
        pytest.param("\ufeff{}".encode("utf-8"), None, id="utf8-bom-empty-object"),
        pytest.param('{"assessment_ids": [7]}'.encode("utf-16"), [7], id="utf16-json-object"),
    ],
)
def test_accepted_ids(body, expected):
    assert parse(body) == expected


@pytest.mark.parametrize(
    "digits",
    [str(2**63), str(-(2**63) - 1), str(10**30), "9" * 5000],
    ids=["int64-max-plus-one", "int64-min-minus-one", "huge", "over-python-digit-limit"],
)
def test_ids_beyond_64_bits_are_rejected_clearly(digits):
    with pytest.raises(BadRequest, match="^assessment_ids must be 64-bit integers$"):
        parse('{"assessment_ids": [1, %s]}' % digits)


@pytest.mark.parametrize(
    ("count", "ok"),
    [
        pytest.param(3, True, id="under-limit"),
        pytest.param(5, True, id="exactly-limit"),
        pytest.param(6, False, id="one-over-limit"),
        pytest.param(500, False, id="far-over-limit"),
    ],
)
def test_max_ids(count, ok):
    body = json.dumps({"assessment_ids": list(range(1, count + 1))})
    if ok:
        assert parse(body, max_ids=5) == list(range(1, count + 1))
    else:
        with pytest.raises(BadRequest) as exc:
            parse(body, max_ids=5)
        assert "5" in str(exc.value)


def test_bad_request_is_a_value_error():
    assert issubclass(BadRequest, ValueError)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param('{"assesment_ids": [11]}', 'Unknown field(s): ["assesment_ids"]', id="misspelled"),
        pytest.param('{"other": [1, 2]}', 'Unknown field(s): ["other"]', id="ids-missing-other-field"),
        pytest.param('{"assessment_ids": [2], "x": {"y": 1}, "dry_run": true}', 'Unknown field(s): ["dry_run", "x"]',
                     id="unknown-beside-ids-sorted"),
        pytest.param('{"Assessment_IDs": [2]}', 'Unknown field(s): ["Assessment_IDs"]', id="names-are-case-sensitive"),
        pytest.param('{"assessment_ids": [1], "assessment_ids": []}', 'Duplicate field(s): ["assessment_ids"]',
                     id="repeated-last-would-win"),
        pytest.param('{"assessment_ids": null, "assessment_ids": null}', 'Duplicate field(s): ["assessment_ids"]',
                     id="repeated-same-value"),
        pytest.param('{"a": 1, "a": 2}', 'Unknown field(s): ["a"]', id="unknown-named-before-duplicate"),
        pytest.param('{"assessment_ids": "x", "y": 1}', 'Unknown field(s): ["y"]', id="names-before-types"),
        pytest.param(r'{"\u00e9\u0000": 1}', r'Unknown field(s): ["\u00e9\u0000"]', id="odd-name-escaped"),
    ],
)
def test_unknown_or_repeated_fields_are_refused(body, message):
    with pytest.raises(BadRequest) as exc:
        parse(body)
    assert str(exc.value) == message


def test_a_repeated_key_inside_a_value_is_not_a_top_level_duplicate():
    with pytest.raises(BadRequest) as exc:
        parse('{"assessment_ids": [{"a": 1, "a": 2}]}')
    assert str(exc.value) == NOT_INTS


def test_an_error_naming_many_fields_stays_short():
    body = json.dumps({f"field-{n:03d}-" + "x" * 500: n for n in range(300)})
    with pytest.raises(BadRequest) as exc:
        parse(body)
    message = str(exc.value)
    assert message.startswith('Unknown field(s): ["field-000-') and message.endswith(" and 280 more")
    assert len(message) < 3000
