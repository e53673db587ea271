"""Retention: delete rows past their time in small batches, now and then.

Each service prunes the table it owns (the consumer its inbox, the API its
async-request read model), in batches of PRUNE_BATCH_SIZE rows, each one
short transaction that skips locked rows, so no prune holds a lock a refresh
waits for. The retention must stay longer than any redelivery or replay can
need (docs/operations.md#retention).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Pruner:
    def __init__(self, what: str, prune_batch: Callable[[], int], batch: int, interval_s: float) -> None:
        self.what = what
        self._prune_batch = prune_batch
        self._batch = batch
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"prune-{what}", daemon=True)

    def start(self) -> Pruner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def prune_now(self) -> int:
        """Batches until one comes back short; how many rows went in all."""
        total = 0
        while not self._stop.is_set():
            deleted = self._prune_batch()
            total += deleted
            if deleted < self._batch:
                break
        if total:
            log.info("pruned %d %s row(s) past retention", total, self.what)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.prune_now()
            except Exception as exc:  # noqa: BLE001 - a failed prune is retried next time; it never stops the service
                from shared.safe_errors import public_message

                log.warning("pruning %s failed, next try in %.0f s: %s", self.what, self._interval_s, public_message(exc))
