"""The consumer group: refresh requests, question events, idempotency, DLQ, replay."""
