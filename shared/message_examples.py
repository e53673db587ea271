"""An example of every message, as the service's own encoders write it.

The AsyncAPI document shows these; tests/unit/test_message_schemas.py checks
each against its schema, so an encoder that drifts from its schema fails there.
Fixed ids and times keep the committed docs/asyncapi.json stable.
"""

from __future__ import annotations

import json
from typing import Any

from shared.dlq import dlq_headers
from shared.messages import (
    QUESTION_DELETED,
    QUESTION_UPSERTED,
    Headers,
    QuestionEvent,
    RefreshChunk,
    RefreshReply,
    RefreshRequested,
    deletion_trigger,
    encode,
    record_headers,
    refresh_completed_event,
    refresh_event,
    request_trigger,
    status_location,
)
from shared.settings import Settings

REQUEST_ID = "1b4e28ba-2fa1-4d3b-9c5e-6a2f0c1d9e77"
EVENT_ID = "9b2f7c4e-5a1d-4c3b-8e6f-0d1c2b3a4f5e"
REFRESH_EVENT_ID = "3e8a1f6c-7b2d-4e9a-a5c4-1f0e9d8c7b6a"
AT = "2026-11-28T10:00:00Z"

DETAIL: dict[str, Any] = {
    "oid": 11, "name": "Backend L2", "total_questions": 20,
    "questions_refreshed": 3, "refreshed_qids": [101, 102, 140],
    "deleted_questions_replaced": 1, "replacements": [{"old_qid": 150, "new_qid": 233}],
    "deleted_questions_not_replaced": 1,
    "replacement_failures": [{"qid": 151, "section_idx": 1, "question_idx": 4,
                              "reason": "no active alternative with the same type, skill and difficulty"}],
    "status": "updated",
}
RESULT = {"message": "Successfully refreshed 1 assessment", "company_id": 7, "assessments_updated": 1,
          "details": [DETAIL]}
PREVIEW = {"message": "Dry run: would refresh 1 assessment; nothing changed", "company_id": 7,
           "assessments_updated": 1, "details": [{**DETAIL, "status": "would_update"}], "dry_run": True}
QUESTION = {"qid": 233, "company_id": None, "type": "coding", "skill": "rust", "difficulty": "hard",
            "content": {"text": "Implement an LRU cache", "score": 10, "time_limit_s": 1800}, "deleted": False}

Example = dict[str, Any]


def _example(name: str, summary: str, value: bytes, headers: Headers) -> Example:
    return {
        "name": name,
        "summary": summary,
        "headers": {k: v.decode() if isinstance(v, bytes) else v for k, v in headers},
        "payload": json.loads(value),
    }


def examples(settings: Settings) -> dict[str, list[Example]]:
    """The examples of each message of the document, by message name."""
    request = RefreshRequested(REQUEST_ID, 7, [11], requested_at=AT)
    deleted = QuestionEvent(EVENT_ID, QUESTION_DELETED, AT, qid=150)
    bank_headers = record_headers()
    summary = {name: value for name, value in RESULT.items() if name != "details"}
    totals = {"assessments": 3, "changed": 2, "questions_refreshed": 0, "deleted_questions_replaced": 2,
              "deleted_questions_not_replaced": 1, "chunks": 0}
    bad_event = b'{"schema_version":1,"event_id":"","type":"question.deleted","qid":150,"occurred_at":"' + AT.encode() + b'"}'
    return {
        "refreshRequested": [
            _example("assessments", "Refresh assessment 11 of company 7, as our API sends it", request.to_json(),
                     record_headers(REQUEST_ID, reply_to=settings.reply_topic)),
            _example("everything", "Refresh every assessment of company 7",
                     RefreshRequested(REQUEST_ID, 7, None, requested_at=AT).to_json(),
                     record_headers(REQUEST_ID, reply_to=settings.reply_topic)),
            _example("preview", "Preview the refresh of assessment 11 (dry run: nothing changes)",
                     RefreshRequested(REQUEST_ID, 7, [11], requested_at=AT, dry_run=True).to_json(),
                     record_headers(REQUEST_ID, reply_to=settings.reply_topic)),
        ],
        "refreshReply": [
            _example("refreshed", "The refresh of assessment 11", RefreshReply(REQUEST_ID, 200, RESULT).to_json(),
                     record_headers(REQUEST_ID)),
            _example("notOwned", "Ids that are not the company's: nothing was refreshed",
                     RefreshReply(REQUEST_ID, 403, {"error": "Assessment IDs do not belong to company or do not "
                                                             "exist: [4, 9]"}).to_json(),
                     record_headers(REQUEST_ID)),
            _example("claimCheck", "A result too large for the reply topic: its summary, and where the whole is",
                     RefreshReply(REQUEST_ID, 200, summary, result_location=status_location(REQUEST_ID)).to_json(),
                     record_headers(REQUEST_ID)),
            _example("preview", "The preview of assessment 11's refresh: what it would change",
                     RefreshReply(REQUEST_ID, 200, PREVIEW).to_json(), record_headers(REQUEST_ID)),
        ],
        "questionDeleted": [
            _example("deleted", "The bank deleted question 150", deleted.to_json(), bank_headers),
        ],
        "questionUpserted": [
            _example("upserted", "The bank wrote question 233",
                     QuestionEvent(EVENT_ID, QUESTION_UPSERTED, AT, question=QUESTION).to_json(), bank_headers),
        ],
        "assessmentRefreshed": [
            _example("byRequest", "Assessment 11 changed by a refresh request",
                     encode(refresh_event(oid=11, company_id=7, trigger=request_trigger(REQUEST_ID), detail=DETAIL,
                                              event_id=REFRESH_EVENT_ID, occurred_at=AT)),
                     record_headers(REQUEST_ID)),
            _example("byDeletion", "Assessment 11 changed because the bank deleted question 150",
                     encode(refresh_event(oid=11, company_id=7, trigger=deletion_trigger(EVENT_ID, 150),
                                              detail=DETAIL, event_id=REFRESH_EVENT_ID, occurred_at=AT)),
                     record_headers(EVENT_ID)),
        ],
        "refreshCompleted": [
            _example("fanOutDone", "Every assessment using question 150 is refreshed",
                     encode(refresh_completed_event(trigger=deletion_trigger(EVENT_ID, 150), totals=totals,
                                                    event_id=REFRESH_EVENT_ID, occurred_at=AT)),
                     record_headers(EVENT_ID)),
        ],
        "refreshChunk": [
            _example("chunk", "Chunk 0 of the job started by a deletion", RefreshChunk(EVENT_ID, 0).to_json(),
                     record_headers()),
        ],
        "deadLetteredRequest": [
            _example("badCompany", "A request whose company_id is not an integer",
                     b'{"schema_version":1,"company_id":"7","assessment_ids":[11]}',
                     dlq_headers(record_headers(REQUEST_ID, reply_to=settings.reply_topic),
                                 topic=settings.request_topic, partition="1", offset="1207",
                                 error_type="MessageError", reason="company_id must be an integer", attempts=1)),
        ],
        "deadLetteredQuestionEvent": [
            _example("emptyEventId", "A question event with an empty event_id",
                     bad_event, dlq_headers(bank_headers, topic=settings.question_events_topic, partition="4",
                                            offset="88", error_type="MessageError",
                                            reason="event_id must be a string", attempts=1)),
        ],
        "deadLetteredChunk": [
            _example("emptyJobId", "A chunk without a job id",
                     b'{"schema_version":1,"type":"refresh.chunk","job_id":"","chunk":0}',
                     dlq_headers(record_headers(), topic=settings.work_topic, partition="0", offset="12",
                                 error_type="MessageError", reason="job_id must be a string", attempts=1)),
        ],
    }
