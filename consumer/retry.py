"""One retry policy for all the consumer retries: a record, a run of records,
a publish, and the bookkeeping after it.

``classify`` sorts a failure into one of three kinds, here and nowhere else:

- transient: the database or the broker is unreachable, a lock conflict, a
  duplicate in flight. Waiting fixes it, so it is retried with growing, capped
  backoff for as long as it takes and never dead-lettered: moving on would
  throw records away over an outage that ends by itself.
- retryable: anything else (a bug, data the database refuses). Retried a
  bounded number of times, counted across interleaved transient failures
  (which therefore cannot keep a failing record alive forever), then given up.
- poison: the message itself breaks the contract. No attempt can fix it: given
  up at once.

``retry`` applies it. What giving up means belongs to the caller: a record is
dead-lettered by its handler, a run is handled one by one instead, and
bookkeeping is logged and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from consumer.consumer_metrics import RETRIES
from consumer.refresh_store import ConcurrentBankChange
from shared.messages import MessageError
from shared.safe_errors import public_message

log = logging.getLogger(__name__)

T = TypeVar("T")


class Failure(Enum):
    TRANSIENT = "transient"  # the values are the retries metric's reasons
    RETRYABLE = "error"
    POISON = "poison"


class TransientError(Exception):
    """Base of the consumer's own failures that waiting fixes."""


class GaveUp(Exception):
    """The policy stopped retrying; ``error`` is the last failure."""

    def __init__(self, error: Exception, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {public_message(error)}")
        self.error = error
        self.attempts = attempts


class Stopping(Exception):
    """Raised out of a back-off wait when the consumer is asked to stop."""


_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, ConcurrentBankChange, TransientError)


def classify(error: Exception) -> Failure:
    if isinstance(error, MessageError):
        return Failure.POISON
    if isinstance(error, _TRANSIENT):
        return Failure.TRANSIENT
    return Failure.RETRYABLE


@dataclass(frozen=True)
class RetryPolicy:
    max_errors: int = 3  # retryable failures before giving up; transient ones do not count
    first_delay_s: float = 0.1
    max_delay_s: float = 5.0

    def delay(self, failures: int) -> float:
        """The wait after the n-th failed attempt of any kind: doubling, capped."""
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1)))

    def gives_up(self, failure: Failure, errors: int) -> bool:
        return failure is Failure.POISON or (failure is Failure.RETRYABLE and errors >= self.max_errors)


# The consumer's policy: three errors, then give up; waits from 0.1 s up to 5 s.
POLICY = RetryPolicy()


def retry(
    action: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    *,
    what: str,
    topic: str | None = None,
) -> T:
    """``action()``, retried under ``policy``; raises GaveUp when the policy
    stops. ``sleep`` waits (and raises Stopping on a stop request); ``what``
    names the work in log lines; ``topic`` labels the retries metric."""
    failures = errors = 0
    while True:
        try:
            return action()
        except (GaveUp, Stopping):
            raise
        except Exception as exc:  # noqa: BLE001 - classify() decides what each failure means
            failures += 1
            failure = classify(exc)
            if failure is Failure.RETRYABLE:
                errors += 1
            if policy.gives_up(failure, errors):
                raise GaveUp(exc, failures) from exc
            delay = policy.delay(failures)
            if failure is Failure.TRANSIENT:
                log.warning("transient failure on %s, retrying in %.2f s: %s", what, delay, public_message(exc))
            else:
                log.error("failure on %s (attempt %d, error %d of %d), retrying in %.2f s", what, failures, errors,
                          policy.max_errors, delay, exc_info=exc)
            if topic is not None:
                RETRIES.labels(topic, failure.value).inc()
            sleep(delay)
