"""Whether the request producer has a broker connection: the fast 503.

A request is only certainly not written when it is never handed to the
producer, so the API decides "broker unreachable" before producing, from
what librdkafka reports: ``_ALL_BROKERS_DOWN`` (its error callback, within
milliseconds of the last connection dropping or being refused) puts the link
down, and a broker connection seen up in its statistics (once a second, in
order with the errors) puts it up again. While down, a request is answered 503 at once; while up, it is
produced and waits for its delivery, so a cluster that still has live
brokers (a leader election) is waited for, a dead one is not.

Before any connection is up (start-up), a request waits a little for the
first one instead of being produced into a void: a broker that refuses is
known down at once, one that never answers is 503 after ``FIRST_CONNECTION_S``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

# The librdkafka broker states in which a connection is established
# (STATISTICS.md); UPDATE and REAUTH are moments of an established one.
UP_STATES = frozenset({"UP", "UPDATE", "REAUTH"})
# How long a request waits for the producer's first connection: librdkafka
# reports it in its next statistics (measured: up 1-1.5 s after creation).
FIRST_CONNECTION_S = 5.0


class BrokerLink:
    """Thread-safe: librdkafka's callbacks write it on the poll thread, requests read it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ever_up = False
        self._down = False

    def saw_up(self) -> None:
        with self._lock:
            self._ever_up, self._down = True, False

    def saw_all_down(self) -> None:
        with self._lock:
            self._down = True

    def saw_statistics(self, stats_json: str) -> None:
        if any_broker_up(stats_json):
            self.saw_up()

    async def usable(self, first_connection_s: float = FIRST_CONNECTION_S) -> bool:
        """False if the link is down, after waiting for a first connection at start-up."""
        deadline = time.monotonic() + first_connection_s
        while True:
            with self._lock:
                if self._down:
                    return False
                if self._ever_up:
                    return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)


def any_broker_up(stats_json: str) -> bool:
    """librdkafka's statistics name at least one broker connection that is up."""
    try:
        brokers = json.loads(stats_json).get("brokers", {})
    except (ValueError, AttributeError):
        return False
    return any(isinstance(b, dict) and b.get("state") in UP_STATES for b in brokers.values())
