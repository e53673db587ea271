"""The AsyncAPI 3.0 document of the Kafka interface (docs/design.md#topics-and-messages).

Built from the code, not written beside it: topic names, partitions and the
group id from Settings, payload schemas from shared/message_schemas.py, header
names from shared/messages.py and shared/dlq.py, examples written by the
message classes (shared/message_examples.py). The API serves it at
GET /asyncapi.json for its own settings; docs/asyncapi.json is the copy for the
default settings, written by

    python -m shared.asyncapi > docs/asyncapi.json

and tests/unit/test_asyncapi.py fails when that copy is not what this module
generates.

Roles (the tags of the operations): `producer_api` sends refresh requests
and reads their replies, `consumer` (the consumer group) answers them, applies
the bank's events and writes the refresh events and the dead letters, and
`question_bank`, upstream, writes the question events.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from shared.dlq import dlq_topic
from shared.message_examples import examples
from shared.message_schemas import HEADER_SCHEMAS, KEY_SCHEMAS, PAYLOAD_SCHEMAS, RESULT_SCHEMAS, ref
from shared.messages import CONTENT_TYPE_JSON, HEADER_CORRELATION_ID, HEADER_REPLY_TO
from shared.settings import Settings
from shared.version import __version__

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING = "0.5.0"

ROLES = {
    "producer_api": "The REST API (producer_api): publishes refresh requests and waits for their replies.",
    "consumer": "The consumer group (consumer): answers refresh requests, applies question events, publishes "
                "refresh events and dead letters.",
    "question_bank": "The question bank, upstream: publishes question events.",
}


def _pointer(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(parts)}


def _tags(role: str) -> list[dict[str, str]]:
    return [_pointer("components", "tags", role)]


def _message(name: str, title: str, summary: str, shape: str, *, payload: dict[str, Any],
             content_type: str = CONTENT_TYPE_JSON, correlated: bool = True) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": content_type,
        "headers": HEADER_SCHEMAS[shape],
        "payload": payload,
        "bindings": {"kafka": {"key": KEY_SCHEMAS[shape], "bindingVersion": KAFKA_BINDING}},
    }
    if correlated:
        message["correlationId"] = _pointer("components", "correlationIds", "correlationId")
    return message


def _messages() -> dict[str, Any]:
    dead_letter_payload = {
        "description": "The original record's value, byte for byte: it may not be JSON at all (that may be why it "
        "is here). Empty when `dlq.value.dropped.bytes` is set.",
    }
    return {
        "refreshRequested": _message("RefreshRequested", "Refresh requested", "Refresh a company's assessments.",
                                     "RefreshRequested", payload=ref("RefreshRequested")),
        "refreshReply": _message("RefreshReply", "Refresh reply", "The result of a refresh request.",
                                 "RefreshReply", payload=ref("RefreshReply")),
        "questionDeleted": _message("QuestionDeleted", "Question deleted", "The bank deleted a question.",
                                    "QuestionEvent", payload=ref("QuestionDeleted"), correlated=False),
        "questionUpserted": _message("QuestionUpserted", "Question upserted", "The bank wrote a question.",
                                     "QuestionEvent", payload=ref("QuestionUpserted"), correlated=False),
        "assessmentRefreshed": _message("AssessmentRefreshed", "Assessment refreshed",
                                        "A refresh changed an assessment.", "AssessmentRefreshed",
                                        payload=ref("AssessmentRefreshed")),
        "refreshCompleted": _message("RefreshCompleted", "Refresh completed",
                                     "A deletion's fan-out is done.", "RefreshCompleted",
                                     payload=ref("RefreshCompleted")),
        "refreshChunk": _message("RefreshChunk", "Refresh chunk", "Refresh one chunk of a large refresh.",
                                 "RefreshChunk", payload=ref("RefreshChunk"), correlated=False),
        "deadLetteredRequest": _message("DeadLetteredRequest", "Dead-lettered refresh request",
                                        "A refresh request the consumer could not decode or gave up on.",
                                        "DeadLetter", payload=dead_letter_payload,
                                        content_type="application/octet-stream", correlated=False),
        "deadLetteredQuestionEvent": _message("DeadLetteredQuestionEvent", "Dead-lettered question event",
                                              "A question event the consumer could not decode or gave up on.",
                                              "DeadLetter", payload=dead_letter_payload,
                                              content_type="application/octet-stream", correlated=False),
        "deadLetteredChunk": _message("DeadLetteredChunk", "Dead-lettered refresh chunk",
                                      "A chunk the work lane could not decode or gave up on.",
                                      "DeadLetter", payload=dead_letter_payload,
                                      content_type="application/octet-stream", correlated=False),
    }


def _channel(address: str | None, title: str, description: str, messages: list[str],
             partitions: int | None) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": address,
        "title": title,
        "description": description,
        "messages": {name: _pointer("components", "messages", name) for name in messages},
    }
    if partitions is not None:
        channel["bindings"] = {"kafka": {"partitions": partitions, "bindingVersion": KAFKA_BINDING}}
    return channel


def _channels(settings: Settings) -> dict[str, Any]:
    created = f" Created with TOPIC_PARTITIONS ({settings.topic_partitions}) partitions when missing."
    return {
        "refreshRequests": _channel(
            settings.request_topic, "Refresh requests",
            "Keyed by company id. Only the API's principal may write here: the `company_id` in a request is "
            "trusted." + created, ["refreshRequested"], settings.topic_partitions),
        "refreshReplies": _channel(
            settings.reply_topic, "Refresh replies (the API's)",
            "Keyed by request id. Every API replica reads every partition (assign(), no group) and keeps the "
            "replies it waits for; replies for unknown or expired ids are dropped." + created,
            ["refreshReply"], settings.topic_partitions),
        "replyTo": _channel(
            None, "Refresh replies (the caller's)",
            f"Whatever topic a request's `{HEADER_REPLY_TO}` header names, so that any client (FastStream, "
            f"Spring, a script) gets its answer; {settings.reply_topic} when the header is missing or not a "
            "topic name. The caller creates it: the service never does, gives a reply one delivery attempt "
            "of about 1.5 s, and gives it up (the result stays at the request's Location) when the topic is "
            "missing, not writable or refuses the record; a reply_to naming one of the service's own topics "
            "is refused.", ["refreshReply"], None),
        "questionEvents": _channel(
            settings.question_events_topic, "Question events",
            "The question bank's events, keyed by qid." + created,
            ["questionDeleted", "questionUpserted"], settings.topic_partitions),
        "refreshEvents": _channel(
            settings.refresh_events_topic, "Refresh events",
            "One event per assessment a refresh changed, whatever caused it (a request or a deletion), keyed "
            "by oid, and one summary per deletion once its whole fan-out is done, keyed by qid; for downstream "
            "readers (audit, notifications)." + created,
            ["assessmentRefreshed", "refreshCompleted"], settings.topic_partitions),
        "refreshWork": _channel(
            settings.work_topic, "Refresh work (internal)",
            f"A refresh of more than REFRESH_CHUNK_SIZE ({settings.refresh_chunk_size}) assessments, from a request "
            f"or a deletion, becomes a job of chunks here, read by each consumer's work lane (group "
            f"{settings.work_group}), so that no small request waits behind a large one." + created,
            ["refreshChunk"], settings.topic_partitions),
        "refreshRequestsDlq": _channel(
            dlq_topic(settings.request_topic), "Dead-lettered refresh requests",
            "Requests that could not be decoded or kept failing, with the error in headers; the partition "
            "moves on. `assessment-refresh replay` re-reads it after a fix." + created,
            ["deadLetteredRequest"], settings.topic_partitions),
        "questionEventsDlq": _channel(
            dlq_topic(settings.question_events_topic), "Dead-lettered question events",
            "Question events that could not be decoded or kept failing, with the error in headers. "
            "`assessment-refresh replay` re-reads it after a fix." + created,
            ["deadLetteredQuestionEvent"], settings.topic_partitions),
        "refreshWorkDlq": _channel(
            dlq_topic(settings.work_topic), "Dead-lettered refresh chunks",
            "Chunks that could not be decoded or kept failing, with the error in headers. "
            "`assessment-refresh replay` re-reads it after a fix." + created,
            ["deadLetteredChunk"], settings.topic_partitions),
    }


def _operation(action: str, channel: str, role: str, summary: str, messages: list[str],
               **extra: Any) -> dict[str, Any]:
    return {
        "action": action,
        "channel": _pointer("channels", channel),
        "summary": summary,
        "messages": [_pointer("channels", channel, "messages", name) for name in messages],
        "tags": _tags(role),
        **extra,
    }


def _operations(settings: Settings) -> dict[str, Any]:
    group, work_group = ({"kafka": {"groupId": {"type": "string", "enum": [name]}, "bindingVersion": KAFKA_BINDING}}
                         for name in (settings.consumer_group, settings.work_group))
    return {
        "requestRefresh": _operation(
            "send", "refreshRequests", "producer_api", "Publish a refresh request and wait for its reply.",
            ["refreshRequested"],
            description=f"`{HEADER_CORRELATION_ID}` is a new UUID, `{HEADER_REPLY_TO}` the API's reply topic. "
            "The API starts waiting before it publishes, so no reply can be missed; none in REPLY_TIMEOUT_S "
            "is a 504.",
            reply={"channel": _pointer("channels", "refreshReplies"),
                   "messages": [_pointer("channels", "refreshReplies", "messages", "refreshReply")]},
        ),
        "answerRefreshRequest": _operation(
            "receive", "refreshRequests", "consumer", "Refresh and answer the caller.", ["refreshRequested"],
            description="At least once, idempotent by `correlation_id`: a redelivered request gets its stored "
            "reply again and refreshes nothing. Each changed assessment also goes to the refresh events.",
            reply={"address": {"location": f"$message.header#/{HEADER_REPLY_TO}",
                               "description": f"The request's `{HEADER_REPLY_TO}` header."},
                   "channel": _pointer("channels", "replyTo"),
                   "messages": [_pointer("channels", "replyTo", "messages", "refreshReply")]},
            bindings=group,
        ),
        "publishQuestionEvent": _operation(
            "send", "questionEvents", "question_bank", "Announce a deleted or written question.",
            ["questionDeleted", "questionUpserted"],
        ),
        "applyQuestionEvent": _operation(
            "receive", "questionEvents", "consumer",
            "Apply a question event: a deletion refreshes every assessment using the question.",
            ["questionDeleted", "questionUpserted"],
            description="Idempotent by `event_id`: a redelivered event does nothing new.",
            bindings=group,
        ),
        "publishRefreshEvent": _operation(
            "send", "refreshEvents", "consumer",
            "Announce an assessment a refresh changed, and a deletion's completed fan-out.",
            ["assessmentRefreshed", "refreshCompleted"],
        ),
        "queueRefreshChunk": _operation(
            "send", "refreshWork", "consumer", "Split a large refresh into chunks for the work lanes.",
            ["refreshChunk"],
            description="In the transaction that plans the job; a redelivered request or event re-sends the "
            "chunks not done yet.",
        ),
        "refreshChunk": _operation(
            "receive", "refreshWork", "consumer",
            "Refresh one chunk in a transaction of its own; the last one answers the request or announces the "
            "fan-out's completion.", ["refreshChunk"],
            description="Idempotent by `<job_id>/chunk/<chunk>`: a chunk received twice is refreshed once.",
            bindings=work_group,
        ),
        "deadLetterRequest": _operation(
            "send", "refreshRequestsDlq", "consumer",
            "Set aside a refresh request that cannot be decoded or keeps failing (its caller, if known, "
            "gets a 500 reply).", ["deadLetteredRequest"],
        ),
        "deadLetterQuestionEvent": _operation(
            "send", "questionEventsDlq", "consumer",
            "Set aside a question event that cannot be decoded or keeps failing.", ["deadLetteredQuestionEvent"],
        ),
        "deadLetterChunk": _operation(
            "send", "refreshWorkDlq", "consumer",
            "Set aside a chunk that cannot be decoded or keeps failing.", ["deadLetteredChunk"],
        ),
    }


def document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI document for these settings' topics and group."""
    messages = _messages()
    for name, shown in examples(settings).items():
        messages[name]["examples"] = shown
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "assessment-refresh",
            "version": __version__,
            "description": "Keeps hiring assessments in line with a changing question bank. Every value is UTF-8 "
            "JSON with a `schema_version`; headers follow FastStream's names (`correlation_id`, `reply_to`, "
            "`content-type`). The REST side is GET /openapi.json.",
            "tags": [_pointer("components", "tags", role) for role in ROLES],
        },
        "defaultContentType": CONTENT_TYPE_JSON,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The deployment's Kafka cluster: KAFKA_BOOTSTRAP_SERVERS, and any librdkafka "
                "property (TLS, SASL) from KAFKA_* variables.",
                "variables": {"bootstrap": {"default": Settings.kafka_bootstrap_servers}},
            }
        },
        "channels": _channels(settings),
        "operations": _operations(settings),
        "components": {
            "schemas": {**RESULT_SCHEMAS, **PAYLOAD_SCHEMAS},
            "messages": messages,
            "correlationIds": {
                "correlationId": {
                    "description": "The request's id: a reply carries its request's, a refresh event the id of "
                    "what caused it.",
                    "location": f"$message.header#/{HEADER_CORRELATION_ID}",
                }
            },
            "tags": {role: {"name": role, "description": text} for role, text in ROLES.items()},
        },
    }


def render(settings: Settings) -> str:
    """The document as docs/asyncapi.json holds it."""
    return json.dumps(document(settings), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    # The default settings' document, whatever this shell's environment says: the committed copy.
    sys.stdout.write(render(Settings()))
