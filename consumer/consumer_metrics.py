"""Prometheus metrics of a consumer process (served by consumer.health_server)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

MESSAGES = Counter(
    "assessment_refresh_consumer_messages_total",
    "Records handled, by source topic and outcome (ok, dead_lettered)",
    ["topic", "outcome"],
)
RETRIES = Counter(
    "assessment_refresh_consumer_retries_total",
    "Attempts retried, by source topic and reason: transient (database or broker unreachable; retried "
    "until it works) or error (anything else; retried up to 3 attempts, then dead-lettered). A retried "
    "record still counts once in messages_total, with its final outcome.",
    ["topic", "reason"],
)
DEAD_LETTERED = Counter("assessment_refresh_consumer_dlq_total", "Records sent to a dead-letter topic", ["topic"])
PROCESSING = Histogram(
    "assessment_refresh_consumer_processing_seconds",
    "Time to handle one record (records handled as a run share the run's time)",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ASSESSMENTS_REFRESHED = Counter(
    "assessment_refresh_assessments_refreshed_total", "Assessments refreshed, by trigger", ["trigger"]
)
QUESTIONS_REFRESHED = Counter("assessment_refresh_questions_refreshed_total", "Slots given fresh bank data")
QUESTIONS_REPLACED = Counter("assessment_refresh_questions_replaced_total", "Deleted questions replaced")
REPLACEMENT_FAILURES = Counter(
    "assessment_refresh_replacement_failures_total", "Deleted questions left in place: no valid alternative"
)
JOBS = Counter(
    "assessment_refresh_jobs_total",
    "Refresh jobs (refreshes split into chunks), by kind (request, question.deleted) and event "
    "(started, completed): started minus completed is the jobs in progress",
    ["kind", "event"],
)
CHUNKS = Counter(
    "assessment_refresh_chunks_total",
    "Chunks of refresh jobs, by kind and event (planned, done): planned minus done, summed over the "
    "consumers, is the work still queued",
    ["kind", "event"],
)
# Every (kind, event) exported from the start, at 0: rate() and "planned
# minus done" work before the first job, and the dashboard finds the series.
for _kind in ("request", "question.deleted"):
    for _event in ("started", "completed"):
        JOBS.labels(_kind, _event)
    for _event in ("planned", "done"):
        CHUNKS.labels(_kind, _event)

REPLIES_UNDELIVERABLE = Counter(
    "assessment_refresh_consumer_replies_undeliverable_total",
    "Replies given up for their caller alone, by reason: own_topic (reply_to names a topic of the service), "
    "unknown_topic, not_authorized, too_large, not_delivered (no delivery within its timeout). The refresh "
    "is committed and its result readable at the request's Location.",
    ["reason"],
)
for _reason in ("own_topic", "unknown_topic", "not_authorized", "too_large", "not_delivered"):
    REPLIES_UNDELIVERABLE.labels(_reason)

LAG = Gauge(
    "assessment_refresh_consumer_lag",
    "Records behind the end of each assigned partition, from librdkafka statistics. On the local Tansu "
    "broker end offsets are reported low (docs/design.md#test-infrastructure), so this reads low there.",
    ["topic", "partition"],
)


def count_refreshes(trigger: str, reports: Iterable[dict[str, Any]]) -> None:
    """Count committed refreshes from their report details (one per assessment)."""
    reports = list(reports)
    ASSESSMENTS_REFRESHED.labels(trigger).inc(len(reports))
    QUESTIONS_REFRESHED.inc(sum(r["questions_refreshed"] for r in reports))
    QUESTIONS_REPLACED.inc(sum(r["deleted_questions_replaced"] for r in reports))
    REPLACEMENT_FAILURES.inc(sum(r["deleted_questions_not_replaced"] for r in reports))


def record_statistics(stats_json: str) -> None:
    """librdkafka's statistics callback: consumer lag per assigned partition."""
    try:
        stats = json.loads(stats_json)
    except ValueError:
        return
    lags = {}
    for topic, topic_stats in stats.get("topics", {}).items():
        for partition, p in topic_stats.get("partitions", {}).items():
            if partition == "-1" or p.get("fetch_state") in (None, "none", "stopped"):
                continue
            lag = p.get("consumer_lag_stored", p.get("consumer_lag", -1))
            if lag is not None and lag >= 0:
                lags[topic, partition] = lag
    # Each report covers every partition this member reads: partitions it lost
    # in a rebalance drop out instead of showing their last lag for ever.
    LAG.clear()
    for (topic, partition), lag in lags.items():
        LAG.labels(topic, partition).set(lag)
