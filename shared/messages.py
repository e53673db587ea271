"""The wire contract: message payloads, header names and their JSON encoding.

Every value is UTF-8 JSON with a ``schema_version``. Header names follow
FastStream (``correlation_id``, ``reply_to``, ``content-type``) so that other
tools can talk to this service.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter

from shared import strict_fields
from shared.questions import DocumentError, QuestionData, parse_question

SCHEMA_VERSION = 1

HEADER_CORRELATION_ID = "correlation_id"
HEADER_REPLY_TO = "reply_to"
HEADER_CONTENT_TYPE = "content-type"
CONTENT_TYPE_JSON = "application/json"
# W3C trace context (as OpenTelemetry's default propagator writes it): every
# message we produce carries the span that sent it, and a consumer's span
# continues the trace of the message it handles (shared/tracing.py).
HEADER_TRACEPARENT = "traceparent"
HEADER_TRACESTATE = "tracestate"

# Where the API serves a refresh request's stored result (async mode, a 504's
# Location, and a reply too large for the reply topic).
STATUS_PATH = "/assessments/refresh-requests/{request_id}"


def status_location(request_id: str) -> str:
    return STATUS_PATH.format(request_id=request_id)


# Headers as confluent-kafka takes them (we always send bytes values).
Headers = list[tuple[str, str | bytes | None]]


class MessageError(ValueError):
    """A message that cannot be decoded or does not follow the contract."""


class UnexpectedFields(MessageError):
    """A request naming a field it may not, or a field twice: the caller's
    mistake, answered 400 as the same body is over REST."""


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def decode_object(value: bytes | None) -> dict[str, Any]:
    """Parse a message value into a JSON object of a schema version we know.

    The object remembers keys it was given twice (``strict_fields.field_problem``)."""
    if value is None:
        raise MessageError("message has no value")
    try:
        # Decoded as UTF-8 first: json.loads(bytes) would also accept UTF-16
        # and UTF-32, which the contract (docs/design.md#topics-and-messages) does not.
        payload = strict_fields.loads(value.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, absurd numbers or nesting
        raise MessageError(f"value is not UTF-8 JSON: {str(exc)[:200]}") from exc
    if not isinstance(payload, dict):
        raise MessageError("value is not a JSON object")
    version = payload.get("schema_version")
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise MessageError(f"unsupported schema_version {payload.get('schema_version')!r}")
    return payload


# What confluent-kafka hands back as a record's headers.
ReceivedHeaders = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None


def header_pairs(headers: ReceivedHeaders) -> Headers:
    return list(headers.items()) if isinstance(headers, dict) else list(headers or ())


def header(headers: ReceivedHeaders, name: str) -> str | None:
    for key, value in header_pairs(headers):
        if key == name and value is not None:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class _HeaderGetter(Getter[ReceivedHeaders]):
    def get(self, carrier: ReceivedHeaders, key: str) -> list[str] | None:
        values = [v if isinstance(v, str) else v.decode("utf-8", "replace")
                  for k, v in header_pairs(carrier) if k == key and v is not None]
        return values or None

    def keys(self, carrier: ReceivedHeaders) -> list[str]:
        return [k for k, _ in header_pairs(carrier)]


class _HeaderSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        # Replaces: a record re-sent (a dead-letter copy) carries its new sender's context once.
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode()))


def with_trace_context(headers: Headers, context: Context | None = None) -> Headers:
    """``headers`` with the current (or ``context``'s) span as the trace
    context; unchanged when there is no valid span (tracing off, no parent)."""
    carrier = list(headers)
    propagate.inject(carrier, context, setter=_HeaderSetter())
    return carrier


def trace_context_of(headers: ReceivedHeaders) -> Context:
    """The trace context a record's headers carry (an empty one if none or malformed)."""
    return propagate.extract(headers, getter=_HeaderGetter())


def record_headers(correlation_id: str | None = None, reply_to: str | None = None) -> Headers:
    """The headers of every JSON record the service writes: whose request or
    event it belongs to (none for a question event or a work chunk), where
    its answer goes (requests only), and its content type (docs/design.md#topics-and-messages)."""
    headers: Headers = [] if correlation_id is None else [(HEADER_CORRELATION_ID, correlation_id.encode())]
    if reply_to is not None:
        headers.append((HEADER_REPLY_TO, reply_to.encode()))
    headers.append((HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.encode()))
    return headers


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(payload: dict[str, Any], name: str, check: Any, what: str) -> Any:
    value = payload.get(name)
    if not check(value):
        raise MessageError(f"{name} must be {what}")
    return value


@dataclass(frozen=True)
class RefreshRequested:
    """Command: refresh these assessments of a company (None: all of them).

    On the wire (section 4) the request's identity is its ``correlation_id``
    header and its answer goes to its ``reply_to`` header, whatever client sent
    it; the body's ``request_id`` is optional, and the header wins when both
    are there. Our API sends the same id in both (older consumers read the body)."""

    request_id: str
    company_id: int
    assessment_ids: list[int] | None
    requested_at: str = field(default_factory=utc_now_iso)
    reply_to: str | None = None  # from the header: not part of the body
    # A preview: answer what the refresh would do now, and change nothing
    # (consumer/preview.py). On the wire only when true.
    dry_run: bool = False

    # The body's fields; any other, or one given twice, is refused (UnexpectedFields),
    # as over REST: a misspelled "assessment_ids" must never mean "all".
    FIELDS = frozenset({"schema_version", "request_id", "company_id", "assessment_ids", "requested_at", "dry_run"})

    def to_json(self) -> bytes:
        payload: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "request_id": self.request_id,
            "company_id": self.company_id,
            "assessment_ids": self.assessment_ids,
            "requested_at": self.requested_at,
        }
        if self.dry_run:
            payload["dry_run"] = True
        return encode(payload)

    @classmethod
    def from_json(
        cls, value: bytes | None, *, correlation_id: str | None = None, reply_to: str | None = None
    ) -> RefreshRequested:
        payload = decode_object(value)
        problem = strict_fields.field_problem(payload, cls.FIELDS)
        if problem is not None:
            raise UnexpectedFields(problem)
        ids = payload.get("assessment_ids")
        if ids is not None and not (isinstance(ids, list) and all(_is_int(i) for i in ids)):
            raise MessageError("assessment_ids must be null or a list of integers")
        body_id = payload.get("request_id")
        if body_id is not None and not (isinstance(body_id, str) and body_id):
            raise MessageError("request_id must be a string")
        dry_run = payload.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise MessageError("dry_run must be a boolean")
        request_id = correlation_id or body_id
        if not request_id:
            raise MessageError("request_id must be a string (or the record must carry a correlation_id header)")
        return cls(
            request_id=request_id,
            company_id=_require(payload, "company_id", _is_int, "an integer"),
            assessment_ids=ids,
            requested_at=str(payload.get("requested_at", "")),
            reply_to=reply_to,
            dry_run=dry_run,
        )

    @classmethod
    def from_record(cls, value: bytes | None, headers: ReceivedHeaders) -> RefreshRequested:
        """The command a request record carries: its body and its headers."""
        return cls.from_json(value, correlation_id=correlation_id_of(headers), reply_to=header(headers, HEADER_REPLY_TO))


# Ids are UUIDs from our API, and whatever other clients choose; an id is an
# inbox key (PostgreSQL text), so it must be text and of a sane length.
MAX_CORRELATION_ID_CHARS = 255


def correlation_id_of(headers: ReceivedHeaders) -> str | None:
    """The ``correlation_id`` header, checked; None when there is none."""
    raw = next((v for k, v in header_pairs(headers) if k == HEADER_CORRELATION_ID and v is not None), None)
    if raw is None:
        return None
    try:
        value = raw if isinstance(raw, str) else raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError("the correlation_id header is not UTF-8 text") from exc
    if not value:
        return None  # an empty header names nothing: the body's request_id, if any, is the identity
    if len(value) > MAX_CORRELATION_ID_CHARS or "\x00" in value:
        raise MessageError(f"the correlation_id header must be 1 to {MAX_CORRELATION_ID_CHARS} characters, without NUL")
    return value


@dataclass(frozen=True)
class RefreshReply:
    """The answer to a RefreshRequested: an HTTP status and body for the caller."""

    request_id: str
    status: int
    body: dict[str, Any]
    # Set when the body was too large for the reply topic: ``body`` is then its
    # summary (no ``details``), and the full result is stored where this says
    # (the async result path of the API; our API reads it from the database).
    result_location: str | None = None

    def to_json(self) -> bytes:
        payload = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        if self.result_location is None:
            del payload["result_location"]
        return encode(payload)

    @classmethod
    def from_json(cls, value: bytes | None) -> RefreshReply:
        payload = decode_object(value)
        return cls(
            request_id=_require(payload, "request_id", lambda v: isinstance(v, str), "a string"),
            status=_require(payload, "status", _is_int, "an integer"),
            body=_require(payload, "body", lambda v: isinstance(v, dict), "an object"),
            result_location=_require(payload, "result_location", lambda v: v is None or isinstance(v, str),
                                     "a string"),
        )


QUESTION_DELETED = "question.deleted"
QUESTION_UPSERTED = "question.upserted"


def _is_timestamp(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def parse_timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


@dataclass(frozen=True)
class QuestionEvent:
    """Upstream bank event: ``question.deleted`` (qid) or ``question.upserted`` (question)."""

    event_id: str
    type: str
    occurred_at: str
    qid: int | None = None
    question: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        payload: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id,
            "type": self.type,
            "occurred_at": self.occurred_at,
        }
        if self.type == QUESTION_DELETED:
            payload["qid"] = self.qid
        else:
            payload["question"] = self.question
        return encode(payload)

    def key(self) -> bytes:
        """The record key: the question's qid, decimal, so that one question's
        events stay in order on one partition."""
        qid = self.qid if self.type == QUESTION_DELETED else (self.question or {}).get("qid")
        return str(qid).encode()

    @classmethod
    def from_json(cls, value: bytes | None) -> QuestionEvent:
        payload = decode_object(value)
        event_id = _require(payload, "event_id", lambda v: isinstance(v, str) and v, "a string")
        kind = payload.get("type")
        if kind not in (QUESTION_DELETED, QUESTION_UPSERTED):
            raise MessageError(f"unknown event type {kind!r}")
        occurred_at = _require(payload, "occurred_at", _is_timestamp, "an ISO 8601 timestamp with a time zone")
        if kind == QUESTION_DELETED:
            return cls(event_id, kind, occurred_at, qid=_require(payload, "qid", _is_int, "an integer"))
        question = _require(payload, "question", lambda v: isinstance(v, dict), "an object")
        return cls(event_id, kind, occurred_at, question=question)


@dataclass(frozen=True)
class QuestionDeleted:
    """Event: the bank deleted a question."""

    event_id: str
    qid: int
    occurred_at: datetime


@dataclass(frozen=True)
class QuestionUpserted:
    """Event: the bank wrote a question (new, changed or unchanged), checked as an import would be."""

    event_id: str
    occurred_at: datetime
    question: QuestionData


def decode_question_event(value: bytes | None) -> QuestionDeleted | QuestionUpserted:
    """A question event, typed: a bad question is a bad message like any other."""
    event = QuestionEvent.from_json(value)
    occurred_at = parse_timestamp(event.occurred_at)
    if event.type == QUESTION_DELETED:
        assert event.qid is not None  # from_json requires it
        return QuestionDeleted(event.event_id, event.qid, occurred_at)
    try:
        question = parse_question(event.question, f"event {event.event_id}")
    except DocumentError as exc:
        raise MessageError(str(exc)) from exc
    return QuestionUpserted(event.event_id, occurred_at, question)


ASSESSMENT_REFRESHED = "assessment.refreshed"
TRIGGER_REQUEST = "request"


def request_trigger(request_id: str) -> dict[str, Any]:
    """What caused a refresh event: a refresh request (REST or any client)."""
    return {"type": TRIGGER_REQUEST, "request_id": request_id}


def deletion_trigger(event_id: str, qid: int) -> dict[str, Any]:
    """What caused a refresh event: the bank's ``question.deleted`` event."""
    return {"type": QUESTION_DELETED, "event_id": event_id, "qid": qid}


def refresh_event(
    *, oid: int, company_id: int, trigger: dict[str, Any], detail: dict[str, Any],
    event_id: str | None = None, occurred_at: str | None = None,
) -> dict[str, Any]:
    """An ``assessment.refresh.events`` payload: one changed assessment (a
    fresh event id and the current time unless given)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id or new_id(),
        "type": ASSESSMENT_REFRESHED,
        "oid": oid,
        "company_id": company_id,
        "trigger": trigger,
        "occurred_at": occurred_at or utc_now_iso(),
        "detail": detail,
    }


REFRESH_CHUNK = "refresh.chunk"


@dataclass(frozen=True)
class RefreshChunk:
    """Command (internal, on the work topic): refresh chunk ``idx`` of job
    ``job_id``. The chunk's assessments are in the database (refresh_job_chunks),
    so the record stays small and a re-sent chunk names the same work."""

    job_id: str
    idx: int

    @property
    def message_id(self) -> str:
        """The chunk's idempotency key: derived from the message that started the job."""
        return f"{self.job_id}/chunk/{self.idx}"

    @property
    def key(self) -> bytes:
        # Keyed by chunk, not by job: the chunks of one job hash to every
        # partition, so every member of the work group shares the job.
        return self.message_id.encode()

    def to_json(self) -> bytes:
        return encode({"schema_version": SCHEMA_VERSION, "type": REFRESH_CHUNK, "job_id": self.job_id, "chunk": self.idx})

    @classmethod
    def from_json(cls, value: bytes | None) -> RefreshChunk:
        payload = decode_object(value)
        if payload.get("type") != REFRESH_CHUNK:
            raise MessageError(f"unknown work type {payload.get('type')!r}")
        return cls(
            job_id=_require(payload, "job_id", lambda v: isinstance(v, str) and v, "a string"),
            idx=_require(payload, "chunk", lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
        )


REFRESH_COMPLETED = "refresh.completed"


def refresh_completed_event(
    *, trigger: dict[str, Any], totals: dict[str, int], event_id: str | None = None, occurred_at: str | None = None,
) -> dict[str, Any]:
    """An ``assessment.refresh.events`` payload: a deletion's whole fan-out is
    done (published once, after the last chunk's ``assessment.refreshed`` events)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id or new_id(),
        "type": REFRESH_COMPLETED,
        "trigger": trigger,
        "occurred_at": occurred_at or utc_now_iso(),
        **totals,
    }
