"""The unit of work a handler runs in: one transaction, its inbox rows, the
messages to publish once it has committed, and what to do after the commit.

Handlers never open transactions or publish themselves. They write through
``uow.conn``, ask the inbox which messages were seen before (``stored``),
record their results (``record``), and queue replies and events; the bus
commits, then publishes what the unit of work holds (``outcome``), and only
then is the offset stored. A crash anywhere before that re-runs the handler,
which finds its inbox rows and re-sends the stored result instead of doing the
work twice.

Replay is a policy of the unit of work (``REPLAY``), handed in once: no
stored-result shortcut, recorded results overwritten, no replies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType

from opentelemetry import context as trace_context
from opentelemetry import trace
from sqlalchemy import Connection, Engine

from consumer.outgoing import Outgoing
from consumer.retry import TransientError
from shared import inbox
from shared.inbox import StoredResult


@dataclass(frozen=True)
class InboxPolicy:
    stored_results: bool  # a message seen before gets its stored result instead of a second run
    overwrite: bool  # a result recorded again replaces the stored one (else: a duplicate in flight)
    replies: bool  # replies reach callers (a replay's callers are long gone)


LIVE = InboxPolicy(stored_results=True, overwrite=False, replies=True)
REPLAY = InboxPolicy(stored_results=False, overwrite=True, replies=False)


class DuplicateInFlight(TransientError):
    """Another consumer recorded the same message id first; retrying finds its result."""


@dataclass
class Outcome:
    """What a committed unit of work leaves to do: publish, then mark published."""

    outgoing: list[Outgoing] = field(default_factory=list)
    # Inbox rows whose events are delivered once ``outgoing`` is.
    published_ids: list[str] = field(default_factory=list)
    dead_lettered: int = 0


class UnitOfWork(ABC):
    def __init__(self, policy: InboxPolicy = LIVE) -> None:
        self.policy = policy
        self.outcome = Outcome()
        self._after_commit: list[Callable[[], None]] = []
        self._committed = False

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if not self._committed:
            self._rollback()
        self._close()

    def commit(self) -> None:
        self._commit()
        self._committed = True
        for hook in self._after_commit:
            hook()

    # -- what happens after the commit --------------------------------------

    def publish(self, *messages: Outgoing) -> None:
        self.outcome.outgoing.extend(_in_current_trace(m) for m in messages)

    def reply(self, message: Outgoing) -> None:
        if self.policy.replies:
            self.outcome.outgoing.append(_in_current_trace(message))

    def mark_published_after_delivery(self, message_id: str) -> None:
        self.outcome.published_ids.append(message_id)

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once committed (metrics: a rolled-back refresh counts nothing)."""
        self._after_commit.append(hook)

    # -- the inbox, under the policy -----------------------------------------

    def stored(self, message_ids: list[str]) -> dict[str, StoredResult]:
        return self._find(message_ids) if self.policy.stored_results else {}

    def record(self, kind: str, results: dict[str, StoredResult], owners: dict[str, int | None] | None = None) -> None:
        if not self._record(kind, results, owners or {}, self.policy.overwrite):
            raise DuplicateInFlight(f"one of {len(results)} {kind} message(s)")

    def mark_published(self, message_ids: list[str]) -> None:
        """The bookkeeping after delivery, in a unit of work of its own."""
        self._mark_published(message_ids)

    # -- the storage ---------------------------------------------------------

    @property
    @abstractmethod
    def conn(self) -> Connection: ...

    @abstractmethod
    def _find(self, message_ids: list[str]) -> dict[str, StoredResult]: ...

    @abstractmethod
    def _record(self, kind: str, results: dict[str, StoredResult], owners: dict[str, int | None], overwrite: bool) -> bool: ...

    @abstractmethod
    def _mark_published(self, message_ids: list[str]) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...


def _in_current_trace(message: Outgoing) -> Outgoing:
    """Note the handling's span on the message: it is sent in that trace
    (consumer/message_spans.py). Nothing to note without a span (tracing off
    and no trace context in the record handled)."""
    if message.trace_parent is not None or not trace.get_current_span().get_span_context().is_valid:
        return message
    return replace(message, trace_parent=trace_context.get_current())


class SqlUnitOfWork(UnitOfWork):
    """On PostgreSQL. The transaction begins on first use, so a unit of work
    that never touches the database (a dead-lettering) needs no connection."""

    def __init__(self, engine: Engine, policy: InboxPolicy = LIVE) -> None:
        super().__init__(policy)
        self._engine = engine
        self._conn: Connection | None = None

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
            self._conn.begin()
        return self._conn

    def _find(self, message_ids: list[str]) -> dict[str, StoredResult]:
        return inbox.find_many(self.conn, message_ids)

    def _record(self, kind: str, results: dict[str, StoredResult], owners: dict[str, int | None], overwrite: bool) -> bool:
        return inbox.record_many(self.conn, kind, results, owners, overwrite=overwrite)

    def _mark_published(self, message_ids: list[str]) -> None:
        inbox.mark_published(self.conn, message_ids)

    def _commit(self) -> None:
        if self._conn is not None:
            self._conn.commit()

    def _rollback(self) -> None:
        if self._conn is not None:
            self._conn.rollback()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
