"""The wire contract (docs/design.md#topics-and-messages): JSON round trips and rejection of bad messages."""

from __future__ import annotations

import json

import pytest

from shared.messages import (
    QUESTION_DELETED,
    QUESTION_UPSERTED,
    SCHEMA_VERSION,
    MessageError,
    QuestionEvent,
    RefreshReply,
    RefreshRequested,
)

QUESTION = {"qid": 101, "company_id": None, "type": "mcq", "skill": "python",
            "difficulty": "medium", "content": {"text": "Café ✓?", "options": ["a", "b"]},
            "deleted": False}

ROUND_TRIPS = [
    pytest.param(RefreshRequested("req-1", 7, [1, 2, 3], "2026-11-28T10:00:00Z"), id="request-with-ids"),
    pytest.param(RefreshRequested("req-2", 7, None, "2026-11-28T10:00:00Z"), id="request-all"),
    pytest.param(RefreshRequested("req-3", 7, [10**30, -1]), id="request-huge-negative-ids"),
    pytest.param(RefreshReply("req-1", 200, {"message": "Successfully refreshed 0 assessments",
                                             "company_id": 7, "assessments_updated": 0,
                                             "details": []}), id="reply-200"),
    pytest.param(RefreshReply("req-1", 403, {"error": "Assessment IDs do not belong to company "
                                                      "or do not exist: [4, 9]"}), id="reply-403"),
    pytest.param(QuestionEvent("ev-1", QUESTION_DELETED, "2026-11-28T10:00:00Z", qid=150),
                 id="question-deleted"),
    pytest.param(QuestionEvent("ev-2", QUESTION_UPSERTED, "2026-11-28T10:00:00Z", question=QUESTION),
                 id="question-upserted"),
]


@pytest.mark.parametrize("message", ROUND_TRIPS)
def test_round_trip(message):
    value = message.to_json()
    assert isinstance(value, bytes)
    payload = json.loads(value.decode("utf-8"))
    assert payload["schema_version"] == SCHEMA_VERSION
    assert type(message).from_json(value) == message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(QuestionEvent("ev-1", QUESTION_DELETED, "t", qid=150),
                     {"schema_version": 1, "event_id": "ev-1", "type": "question.deleted",
                      "occurred_at": "t", "qid": 150}, id="deleted-event-as-documented"),
        pytest.param(QuestionEvent("ev-2", QUESTION_UPSERTED, "t", question={"qid": 5}),
                     {"schema_version": 1, "event_id": "ev-2", "type": "question.upserted",
                      "occurred_at": "t", "question": {"qid": 5}}, id="upserted-event-as-documented"),
        pytest.param(RefreshRequested("r", 7, None, "t"),
                     {"schema_version": 1, "request_id": "r", "company_id": 7,
                      "assessment_ids": None, "requested_at": "t"}, id="request-payload"),
        pytest.param(RefreshReply("r", 504, {"error": "x"}),
                     {"schema_version": 1, "request_id": "r", "status": 504, "body": {"error": "x"}},
                     id="reply-payload"),
    ],
)
def test_wire_payload(message, expected):
    assert json.loads(message.to_json()) == expected


def test_request_gets_a_timestamp_by_default():
    assert RefreshRequested("r", 1, None).requested_at.endswith("Z")


def test_non_ascii_is_utf8_on_the_wire():
    value = QuestionEvent("e", QUESTION_UPSERTED, "t", question=QUESTION).to_json()
    assert "Café ✓?".encode() in value


GOOD = {
    RefreshRequested: {"schema_version": 1, "request_id": "r", "company_id": 7, "assessment_ids": [1]},
    RefreshReply: {"schema_version": 1, "request_id": "r", "status": 200, "body": {}},
    QuestionEvent: {"schema_version": 1, "event_id": "e", "type": "question.deleted", "qid": 1,
                    "occurred_at": "2026-11-28T10:00:00Z"},
}


@pytest.mark.parametrize("cls", list(GOOD), ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="no-value"),
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"schema_version": 1,', id="truncated"),
        pytest.param(b'{"schema_version": 1, "x": "\xff"}', id="invalid-utf8"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"text"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b'{"request_id": "r"}', id="no-schema-version"),
        pytest.param(b'{"schema_version": 2}', id="schema-version-2"),
        pytest.param(b'{"schema_version": "1"}', id="schema-version-string"),
        pytest.param(b'{"schema_version": null}', id="schema-version-null"),
    ],
)
def test_undecodable_values_rejected(cls, value):
    with pytest.raises(MessageError):
        cls.from_json(value)


@pytest.mark.parametrize("cls", list(GOOD), ids=lambda c: c.__name__)
def test_good_baseline_decodes(cls):
    cls.from_json(json.dumps(GOOD[cls]).encode())


@pytest.mark.parametrize("cls", list(GOOD), ids=lambda c: c.__name__)
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_only_utf8_is_the_contract(cls, encoding):
    """json.loads(bytes) would take these; docs/design.md#topics-and-messages says UTF-8."""
    with pytest.raises(MessageError, match="not UTF-8 JSON"):
        cls.from_json(json.dumps(GOOD[cls]).encode(encoding))


def _extend(good, raw_field: bytes) -> bytes:
    """The good payload with one more field whose raw JSON text is ``raw_field``."""
    return json.dumps(good)[:-1].encode() + b', "pad": ' + raw_field + b"}"



@pytest.mark.parametrize("cls", list(GOOD), ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda good: json.dumps({**good, "schema_version": True}).encode(),
                     id="schema-version-true"),
        pytest.param(lambda good: _extend(good, b"9" * 5000), id="int-over-python-digit-limit"),
        pytest.param(lambda good: _extend(good, b"[" * 100_000 + b"]" * 100_000), id="absurd-nesting"),
    ],
)
def test_edge_values_rejected_as_message_error(cls, build):
    with pytest.raises(MessageError):
        cls.from_json(build(GOOD[cls]))


def _mutate(cls, **changes):
    payload = {**GOOD[cls], **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("cls", "changes"),
    [
        pytest.param(RefreshRequested, {"request_id": ...}, id="request-missing-request-id"),
        pytest.param(RefreshRequested, {"request_id": ""}, id="request-empty-request-id"),
        pytest.param(RefreshRequested, {"request_id": 5}, id="request-int-request-id"),
        pytest.param(RefreshRequested, {"company_id": ...}, id="request-missing-company"),
        pytest.param(RefreshRequested, {"company_id": "7"}, id="request-string-company"),
        pytest.param(RefreshRequested, {"company_id": True}, id="request-bool-company"),
        pytest.param(RefreshRequested, {"company_id": 7.0}, id="request-float-company"),
        pytest.param(RefreshRequested, {"assessment_ids": 1}, id="request-ids-not-list"),
        pytest.param(RefreshRequested, {"assessment_ids": [1, True]}, id="request-ids-bool"),
        pytest.param(RefreshRequested, {"assessment_ids": ["1"]}, id="request-ids-string"),
        pytest.param(RefreshRequested, {"assessment_ids": [None]}, id="request-ids-null-item"),
        pytest.param(RefreshReply, {"request_id": ...}, id="reply-missing-request-id"),
        pytest.param(RefreshReply, {"request_id": None}, id="reply-null-request-id"),
        pytest.param(RefreshReply, {"status": ...}, id="reply-missing-status"),
        pytest.param(RefreshReply, {"status": "200"}, id="reply-string-status"),
        pytest.param(RefreshReply, {"status": False}, id="reply-bool-status"),
        pytest.param(RefreshReply, {"body": ...}, id="reply-missing-body"),
        pytest.param(RefreshReply, {"body": []}, id="reply-list-body"),
        pytest.param(RefreshReply, {"body": "ok"}, id="reply-string-body"),
        pytest.param(QuestionEvent, {"event_id": ...}, id="event-missing-event-id"),
        pytest.param(QuestionEvent, {"event_id": ""}, id="event-empty-event-id"),
        pytest.param(QuestionEvent, {"type": ...}, id="event-missing-type"),
        pytest.param(QuestionEvent, {"type": "question.archived"}, id="event-unknown-type"),
        pytest.param(QuestionEvent, {"type": "QUESTION.DELETED"}, id="event-type-wrong-case"),
        pytest.param(QuestionEvent, {"qid": ...}, id="deleted-missing-qid"),
        pytest.param(QuestionEvent, {"qid": "150"}, id="deleted-string-qid"),
        pytest.param(QuestionEvent, {"qid": True}, id="deleted-bool-qid"),
        pytest.param(QuestionEvent, {"type": "question.upserted"}, id="upserted-missing-question"),
        pytest.param(QuestionEvent, {"type": "question.upserted", "question": [1]},
                     id="upserted-list-question"),
    ],
)
def test_invalid_fields_rejected(cls, changes):
    with pytest.raises(MessageError):
        cls.from_json(_mutate(cls, **changes))


@pytest.mark.parametrize("occurred_at", [None, "t", "2026-11-28T10:00:00", 5], ids=["missing", "text", "no-zone", "number"])
def test_event_time_must_be_an_iso_timestamp_with_zone(occurred_at):
    with pytest.raises(MessageError, match="occurred_at"):
        QuestionEvent.from_json(_mutate(QuestionEvent, occurred_at=occurred_at))


def test_unknown_event_type_names_the_type():
    with pytest.raises(MessageError, match="question.archived"):
        QuestionEvent.from_json(_mutate(QuestionEvent, type="question.archived"))


def test_message_error_is_a_value_error():
    assert issubclass(MessageError, ValueError)


def test_a_question_event_is_keyed_by_its_qid_whatever_its_type() -> None:
    """The key the AsyncAPI document names. assessment_refresh.publish keyed an
    upsert b"None" (found by tests/e2e/test_asyncapi.py): every upsert on one partition."""
    deleted = QuestionEvent("e-1", QUESTION_DELETED, "2026-11-28T10:00:00Z", qid=150)
    upserted = QuestionEvent("e-2", QUESTION_UPSERTED, "2026-11-28T10:00:00Z", question={"qid": 233})
    assert (deleted.key(), upserted.key()) == (b"150", b"233")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(b'{"schema_version": 1, "company_id": 7, "assesment_ids": [11]}',
                     'Unknown field(s): ["assesment_ids"]', id="misspelled-ids"),
        pytest.param(b'{"schema_version": 1, "company_id": 7, "assessment_ids": [1], "assessment_ids": null}',
                     'Duplicate field(s): ["assessment_ids"]', id="repeated-ids"),
        pytest.param(b'{"schema_version": 1, "company_id": 8, "company_id": 7}',
                     'Duplicate field(s): ["company_id"]', id="repeated-company"),
        pytest.param(b'{"schema_version": 1, "company_id": 7, "reply_to": "t", "correlation_id": "c"}',
                     'Unknown field(s): ["correlation_id", "reply_to"]', id="header-names-are-not-body-fields"),
    ],
)
def test_a_request_with_unexpected_fields_is_refused_naming_them(value, message):
    from shared.messages import UnexpectedFields

    with pytest.raises(UnexpectedFields) as exc:
        RefreshRequested.from_json(value, correlation_id="c-1")
    assert str(exc.value) == message
    assert isinstance(exc.value, MessageError)  # a bad message: dead-lettered at once


def test_every_field_a_request_may_name_decodes():
    value = (b'{"schema_version": 1, "request_id": "r", "company_id": 7, "assessment_ids": [1],'
             b' "requested_at": "2026-11-28T10:00:00Z"}')
    assert RefreshRequested.from_json(value) == RefreshRequested("r", 7, [1], "2026-11-28T10:00:00Z")
