"""Work handled in-process instead of through the work topic.

A replay (consumer.replay) and the in-process handlers (tests, the
benchmark's floor) have no work lanes running beside them: the chunks a job
queues for the work topic are handled right here, each in a unit of work of
its own, as a work lane would, so that they finish what they start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.outgoing import Outgoing
from consumer.ports import Record
from consumer.unit_of_work import Outcome


@dataclass(frozen=True)
class LocalRecord:
    """An Outgoing message as the bus reads a consumed record (no partition, no offset)."""

    message: Outgoing

    def topic(self) -> str:
        return self.message.topic

    def partition(self) -> int:
        return -1

    def offset(self) -> int:
        return -1

    def key(self) -> bytes | None:
        return self.message.key

    def value(self) -> bytes:
        return self.message.value

    def headers(self) -> Any:
        return list(self.message.headers)

    def error(self) -> None:
        return None


def handle_work_here(
    work_topic: str, outcomes: Sequence[Outcome], handle: Callable[[Sequence[Record]], list[Outcome]]
) -> list[Outcome]:
    """``outcomes`` with every message for ``work_topic`` handled by ``handle``
    (the bus) instead of published; the chunks' own outcomes are appended."""
    done: list[Outcome] = []
    pending = list(outcomes)
    while pending:
        outcome = pending.pop(0)
        work = [m for m in outcome.outgoing if m.topic == work_topic]
        outcome.outgoing = [m for m in outcome.outgoing if m.topic != work_topic]
        done.append(outcome)
        for message in work:  # one chunk a unit of work, in order
            pending.extend(handle([LocalRecord(message)]))
    return done
