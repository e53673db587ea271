"""Measure group rebalance pauses on the local Apache Kafka: `python -m tests.faults.rebalance_pauses`.

A steady stream (200 records/s over 6 partitions) is read by a group of two
member processes; then a third joins, one leaves (close(): LeaveGroup), and
one is SIGKILLed (its partitions wait for the session timeout). For each
change the figure is the worst end-to-end delay of a record produced in the
5 s after it (produce -> consumed by some member), beside the steady-state
worst delay. Run for both group protocols: KIP-848 "consumer" (broker-side,
incremental, range assignor) and "classic" (client-side, eager by default in
librdkafka), with the broker's dev-sized timeouts (6 s consumer-protocol
session, heartbeat 500 ms) and a 6 s classic session timeout.

A measurement, not a test: it prints one line per protocol and change.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import time
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from assessment_refresh.apache_kafka import ApacheKafka

TOPIC = "pauses"
RATE = 200  # records per second
WINDOW_S = 5.0


def member(bootstrap: str, group: str, protocol: str, out: Any) -> None:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": protocol,
                              "auto.offset.reset": "latest", "fetch.wait.max.ms": 100}
    if protocol == "classic":
        config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 1500})
    else:
        config["group.remote.assignor"] = "range"
    consumer = Consumer(config)
    consumer.subscribe([TOPIC])
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    while not stop["now"]:
        msg = consumer.poll(0.1)
        if msg is not None and msg.error() is None:
            out.put((float(msg.value() or b"0"), time.time()))
    consumer.close()


def worst_delay(delays: list[tuple[float, float]], since: float, until: float) -> float:
    window = [seen - sent for sent, seen in delays if since <= sent < until]
    return max(window) if window else float("nan")


def measure(kafka: ApacheKafka, protocol: str) -> dict[str, float]:
    group = f"pauses-{protocol}-{time.time_ns()}"
    out: Any = mp.get_context("fork").Queue()
    members = [mp.get_context("fork").Process(target=member, args=(kafka.bootstrap_servers, group, protocol, out))
               for _ in range(3)]
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 1})
    delays: list[tuple[float, float]] = []
    marks: dict[str, float] = {}

    def run_for(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            producer.produce(TOPIC, str(time.time()).encode())
            producer.poll(0)
            while not out.empty():
                delays.append(out.get())
            time.sleep(1 / RATE)

    members[0].start()
    members[1].start()
    run_for(12)  # both joined and settled
    marks["steady"] = time.time() - WINDOW_S
    members[2].start()
    marks["join"] = time.time()
    run_for(10)
    members[0].terminate()  # SIGTERM: close(), LeaveGroup
    marks["leave"] = time.time()
    run_for(10)
    members[1].kill()  # SIGKILL: no LeaveGroup; the session timeout decides
    marks["kill"] = time.time()
    run_for(14)
    producer.flush(5)
    time.sleep(1)
    while not out.empty():
        delays.append(out.get())
    for m in members:
        if m.is_alive():
            m.kill()
        m.join()
    return {name: worst_delay(delays, at, at + WINDOW_S) for name, at in marks.items()}


def main() -> int:
    with ApacheKafka() as kafka:
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
        admin.create_topics([NewTopic(TOPIC, 6)])[TOPIC].result()
        print(f"{kafka.describe()}: worst record delay (s) in the {WINDOW_S:.0f} s after each change")
        for protocol in ("consumer", "classic"):
            figures = measure(kafka, protocol)
            print(f"REBALANCE protocol={protocol} " + " ".join(f"{k}={v:.2f}" for k, v in figures.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
