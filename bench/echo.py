"""The bare Kafka request/reply floor: what the transport costs with no HTTP,
no database and no service code, between two processes on the same broker
with the service's librdkafka settings (shared/kafka.py).

`python -m bench.echo` (settings from the environment) answers every record of
REQUEST_TOPIC on its `reply_to` topic with the same value, keyed and headed
like the consumer's replies. `EchoClient` plays the API: a producer with the
publisher's overrides, and a reply reader assigned at the end of the reply
topic, like producer_api/replies.py.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from bench.client import Run
from shared.kafka import consumer_config, ensure_topics, producer_config
from shared.messages import CONTENT_TYPE_JSON, HEADER_CONTENT_TYPE, HEADER_CORRELATION_ID, HEADER_REPLY_TO, header
from shared.settings import Settings


def serve(settings: Settings) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ensure_topics(settings, [settings.request_topic, settings.reply_topic])
    # A group member like the live consumer (subscribe, same session timeout).
    consumer = Consumer(consumer_config(settings, settings.consumer_group, **{"auto.offset.reset": "earliest"}))
    consumer.subscribe([settings.request_topic])
    producer = Producer(producer_config(settings, **{"message.timeout.ms": 10000}))
    try:
        while not stop.is_set():
            msg = consumer.poll(0.5)
            producer.poll(0)
            if msg is None or msg.error() is not None:
                continue
            cid = header(msg.headers(), HEADER_CORRELATION_ID) or ""
            producer.produce(
                header(msg.headers(), HEADER_REPLY_TO) or settings.reply_topic, msg.value(), cid.encode(),
                headers=[(HEADER_CORRELATION_ID, cid.encode()), (HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.encode())],
            )
    finally:
        producer.flush(5)
        consumer.close()


class EchoClient:
    def __init__(self, settings: Settings, payload: bytes) -> None:
        self.settings, self.payload = settings, payload
        ensure_topics(settings, [settings.request_topic, settings.reply_topic])
        timeout_ms = int(settings.broker_timeout_s * 1000)
        self.producer = Producer(producer_config(settings, **{"message.timeout.ms": timeout_ms, "linger.ms": 0}))
        self.consumer = Consumer(consumer_config(
            settings, f"{settings.consumer_group}-echo-{uuid.uuid4()}",
            **{"enable.auto.commit": False, "auto.offset.reset": "latest"}))
        self.consumer.assign(self._ends(settings.reply_topic))

    def _ends(self, topic: str, timeout: float = 30.0) -> list[TopicPartition]:
        """The reply topic's partitions at their ends. Apache Kafka elects the
        leaders of a topic just created a moment later (NOT_LEADER until
        then), as the API's reply reader also waits for (producer_api/replies.py)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
                if meta.error is not None:
                    raise KafkaException(meta.error)
                return [TopicPartition(topic, p, self.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10)[1]) for p in sorted(meta.partitions)]
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self.producer.flush(5)
        self.consumer.close()

    def run(self, n: int, in_flight: int, timeout: float = 30.0) -> Run:
        """Keep `in_flight` requests outstanding until `n` replies came back, on
        one thread: the cheapest Python can drive librdkafka."""
        run, tag = Run(), uuid.uuid4().hex[:8]
        sent: dict[str, float] = {}
        issued, progress = 0, time.monotonic()
        started = time.perf_counter()
        while len(run.latencies) < n:
            while issued < n and len(sent) < in_flight:
                cid = f"{tag}-{issued}"
                sent[cid] = time.perf_counter()
                # Keyed by one "company", as the API keys requests.
                self.producer.produce(self.settings.request_topic, self.payload, b"1", headers=[
                    (HEADER_CORRELATION_ID, cid.encode()), (HEADER_REPLY_TO, self.settings.reply_topic.encode()),
                    (HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.encode())])
                issued += 1
            self.producer.poll(0)
            first = self.consumer.poll(0.2)
            batch = [first] if first is not None else []
            if first is not None and in_flight > 1:
                batch += self.consumer.consume(num_messages=in_flight, timeout=0)
            now = time.perf_counter()
            for msg in batch:
                if msg.error() is not None:
                    continue
                t0 = sent.pop(header(msg.headers(), HEADER_CORRELATION_ID) or "", None)
                if t0 is not None:  # else an old reply Tansu re-delivered at the start
                    run.latencies.append(now - t0)
                    progress = time.monotonic()
            if time.monotonic() - progress > timeout:
                raise TimeoutError(f"echo: no reply for {timeout} s ({len(run.latencies)}/{n} done)")
        run.elapsed = time.perf_counter() - started
        return run


if __name__ == "__main__":
    serve(Settings.from_env())
