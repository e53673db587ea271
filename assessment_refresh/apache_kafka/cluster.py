"""A local Apache Kafka: one combined broker+controller, or three, on loopback.

KRaft mode with a static quorum (``controller.quorum.voters``), so every node
is formatted the same way with one cluster id and no ``--standalone``. The JVMs
are what Kafka's own scripts run (``kafka.tools.StorageTool format``, then
``kafka.Kafka server.properties``), on the classpath of jars.py. A cluster is
ready when the admin API lists all its brokers; it stops with SIGTERM (Kafka's
clean shutdown hook) and leaves no JVM behind, even when the Python process
that started it dies (each JVM gets SIGTERM when its parent goes, PR_SET_PDEATHSIG).

Settings are test-sized (DEV_SETTINGS below): small internal topics, group
joins with no initial delay, and group timeouts of seconds where Kafka's
defaults are tens of seconds, so that a killed consumer's partitions move on
in a test's time. Three nodes give replication factor 3 and
``min.insync.replicas=2``: one node may die and every write still succeeds.
"""

from __future__ import annotations

import base64
import ctypes
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from assessment_refresh.apache_kafka.jars import LOG4J_CONFIG, broker_classpath, java_command, kafka_version
from assessment_refresh.local_servers import port_outside_ephemeral_range

# Broker settings for a dev machine and the tests; each overrides a Kafka
# default sized for a production cluster.
DEV_SETTINGS: dict[str, str] = {
    "offsets.topic.num.partitions": "3",  # default 50: 50 partitions to load before the first group works
    "group.initial.rebalance.delay.ms": "0",  # classic groups: default 3 s wait before the first assignment
    # KIP-848 (consumer protocol) group timing lives on the broker: a killed
    # member's partitions wait group.consumer.session.timeout.ms (default 45 s).
    "group.consumer.min.session.timeout.ms": "3000",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    "group.consumer.heartbeat.interval.ms": "500",
    # Classic groups: allow the clients' 3-6 s session timeouts (default minimum 6 s).
    "group.min.session.timeout.ms": "1000",
    # A topic comes from our start-up (or an operator), never from a producer
    # that names a missing one: a deleted topic stays deleted.
    "auto.create.topics.enable": "false",
    "num.partitions": "3",
    "log.segment.bytes": str(64 * 1024 * 1024),  # a dev broker needs no 1 GiB segments
    "share.coordinator.state.topic.num.partitions": "1",
}

JVM_OPTIONS = [
    # Kafka's scripts use 1 GiB; a dev broker (and three of them on 2 cores) needs far less.
    "-Xms256M", "-Xmx768M",
    "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent process ends."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: stop() still runs
    os.setsid()  # its own session: a Ctrl-C in a terminal reaches the launcher, which stops it in order


@dataclass(frozen=True)
class SecureListener:
    """A SASL_SSL listener with SCRAM-SHA-512 next to the PLAINTEXT one (which
    stays the inter-broker listener; CONTROLLER stays as it is), on a port of
    its own. ``cert_file`` is the broker's PEM certificate chain, ``key_file``
    its unencrypted PKCS#8 PEM key (``BEGIN PRIVATE KEY``: Kafka's PEM key
    store reads no other form). ``scram_users`` (name -> password) are written
    into the metadata log when the storage is formatted. With ``authorizer``
    Kafka's StandardAuthorizer decides by ACL; ``super_users`` (e.g.
    ``["User:admin"]``) may do anything, as may User:ANONYMOUS, the principal
    of the PLAINTEXT and CONTROLLER listeners (the nodes themselves)."""

    cert_file: Path
    key_file: Path
    scram_users: dict[str, str] = field(default_factory=dict)
    super_users: tuple[str, ...] = ()
    authorizer: bool = False

    def server_properties(self, node: KafkaNode) -> dict[str, str]:
        keystore = node.directory / "keystore.pem"
        keystore.write_text(self.key_file.read_text() + self.cert_file.read_text())
        keystore.chmod(0o600)
        settings = {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.location": str(keystore),
        }
        if self.authorizer:
            settings["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            settings["super.users"] = ";".join(["User:ANONYMOUS", *self.super_users])
        return settings

    def format_arguments(self) -> list[str]:
        """StorageTool's ``--add-scram`` for every user. Its parser splits on
        ``,`` and ``]`` whatever the quoting (tried on 4.1.1), so those and
        ``"`` are refused in names and passwords here, before the JVM is."""
        for name, password in self.scram_users.items():
            if any(c in name + password for c in ',]"'):
                raise ValueError(f"SCRAM user {name!r}: names and passwords cannot hold ',', ']' or '\"'")
        return [arg for name, password in self.scram_users.items()
                for arg in ("--add-scram", f'SCRAM-SHA-512=[name={name},password="{password}"]')]


def new_cluster_id() -> str:
    """Kafka's form: URL-safe base64 of 16 random bytes, without padding."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    directory: Path
    secure_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure_address(self) -> str:
        assert self.secure_port is not None, "this cluster has no secure listener"
        return f"127.0.0.1:{self.secure_port}"

    @property
    def log_file(self) -> Path:
        return self.directory / "broker.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.running else None

    def starts_logged(self) -> int:
        """How often this node logged Kafka's start-up line (KafkaBroker.STARTED_MESSAGE)."""
        return self.log_file.read_text(errors="replace").count("Kafka Server started") if self.log_file.exists() else 0

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""


class ApacheKafka:
    """``ApacheKafka()`` is one node; ``ApacheKafka(nodes=3)`` a replicated cluster.

    Used as a context manager, or with start() / stop(); kill(node_id) and
    restart(node_id) stop and start one node (its log kept) for fault tests.

    ``reuse_storage=True`` keeps what an earlier start left in ``base_dir``
    (topics, committed offsets, groups): start() formats only the nodes whose
    storage is not formatted yet, with the stored cluster id. The ports may
    differ from the earlier start's (the static quorum's voter addresses come
    from the configuration, not from the log). Without it start() formats
    every node, which fails on storage formatted before."""

    def __init__(
        self,
        nodes: int = 1,
        *,
        base_dir: Path | None = None,
        port: int | None = None,
        extra_settings: dict[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
        reuse_storage: bool = False,
        secure: SecureListener | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.version = kafka_version()
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="ar-kafka-"))
        self._owns_dir = base_dir is None
        self.extra_settings = extra_settings or {}
        self.reuse_storage = reuse_storage
        self.secure = secure
        self.progress = progress or (lambda _line: None)
        self.nodes = [
            KafkaNode(
                node_id=i + 1,
                port=(port if port and nodes == 1 else port_outside_ephemeral_range()),
                controller_port=port_outside_ephemeral_range(),
                directory=self.base_dir / f"node-{i + 1}",
                secure_port=port_outside_ephemeral_range() if secure else None,
            )
            for i in range(nodes)
        ]
        self._classpath: str | None = None
        self.start_seconds: float | None = None  # launch to ready, for whoever measures it

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def secure_bootstrap_servers(self) -> str:
        """The SASL_SSL listeners' addresses (with ``secure`` only)."""
        return ",".join(node.secure_address for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    # -- configuration -----------------------------------------------------

    def _server_properties(self, node: KafkaNode) -> str:
        replicas = min(3, len(self.nodes))
        min_isr = 2 if replicas == 3 else 1
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.directory / "data"),
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min_isr),
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            **DEV_SETTINGS,
        }
        if self.secure is not None:
            settings["listeners"] += f",SASL_SSL://127.0.0.1:{node.secure_port}"
            settings["advertised.listeners"] += f",SASL_SSL://127.0.0.1:{node.secure_port}"
            settings["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL"
            settings.update(self.secure.server_properties(node))
        settings.update(self.extra_settings)
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    # -- life cycle --------------------------------------------------------

    def start(self, timeout: float = 90.0) -> ApacheKafka:
        started = time.monotonic()
        self._classpath = broker_classpath(self.progress)
        stored = {node.node_id: self._stored_cluster_id(node) for node in self.nodes} if self.reuse_storage else {}
        cluster_ids = {cluster_id for cluster_id in stored.values() if cluster_id}
        if len(cluster_ids) > 1:
            raise RuntimeError(f"the nodes under {self.base_dir} were formatted for different clusters: {sorted(cluster_ids)}")
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            (node.directory / "server.properties").write_text(self._server_properties(node))
        unformatted = [node for node in self.nodes if not stored.get(node.node_id)]
        if unformatted:
            self._format(cluster_ids.pop() if cluster_ids else new_cluster_id(), unformatted)
        for node in self.nodes:  # together: a quorum of three needs two voters up to elect
            self._launch(node)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _java(self, main_class: str, *args: str, heap: list[str]) -> list[str]:
        assert self._classpath is not None
        return [java_command(), *heap, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", self._classpath, main_class, *args]

    @staticmethod
    def _stored_cluster_id(node: KafkaNode) -> str | None:
        """The cluster id a node's storage was formatted with; None when it is not formatted."""
        meta = node.directory / "data" / "meta.properties"  # written by StorageTool format
        if not meta.exists():
            return None
        for line in meta.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "cluster.id" and value.strip():
                return value.strip()
        return None

    def _format(self, cluster_id: str, nodes: list[KafkaNode]) -> None:
        """Format the nodes' storage with one cluster id (in parallel: a JVM each)."""
        formats = [
            (node, subprocess.Popen(
                # "--cluster-id=ID": an id starting with "-" (1 in 64) would read as a flag.
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                           "-c", str(node.directory / "server.properties"),
                           *(self.secure.format_arguments() if self.secure else []), heap=["-Xmx256M"]),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            ))
            for node in nodes
        ]
        for node, process in formats:
            output, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                raise RuntimeError(f"formatting Kafka node {node.node_id} failed:\n{output.decode(errors='replace')}")

    def _launch(self, node: KafkaNode) -> None:
        node._log = open(node.log_file, "ab")  # noqa: SIM115 - closed when the node stops
        command = self._java("kafka.Kafka", str(node.directory / "server.properties"),
                             heap=[*JVM_OPTIONS, f"-Dkafka.logs.dir={node.directory}"])
        node.process = subprocess.Popen(
            command, stdout=node._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )

    def wait_ready(self, timeout: float = 90.0, brokers: int | None = None) -> None:
        """Until the admin API lists ``brokers`` brokers (default: every running node)."""
        from confluent_kafka.admin import AdminClient

        want = brokers if brokers is not None else sum(1 for n in self.nodes if n.running)
        live = ",".join(n.address for n in self.nodes if n.running)
        admin = AdminClient({"bootstrap.servers": live, "log_level": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None and node in self._expected_up:
                    raise RuntimeError(f"Kafka node {node.node_id} exited with {node.process.returncode}:\n{node.log_tail()}")
            try:
                if len(admin.list_topics(timeout=1).brokers) >= want:
                    return
            except Exception:  # noqa: BLE001 - not answering yet
                pass
            time.sleep(0.2)
        tails = "\n".join(f"--- node {n.node_id} ---\n{n.log_tail()}" for n in self.nodes)
        raise TimeoutError(f"Apache Kafka was not ready after {timeout} s:\n{tails}")

    @property
    def _expected_up(self) -> list[KafkaNode]:
        return [n for n in self.nodes if n.process is not None]

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no clean shutdown, its log stays on disk."""
        self._stop_node(self.node(node_id), signal.SIGKILL)

    def stop_node(self, node_id: int) -> None:
        """A clean shutdown of one node (SIGTERM), its log kept."""
        self._stop_node(self.node(node_id), signal.SIGTERM)

    def restart(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a stopped or killed node again on its ports, with its log;
        returns when it says it started and the cluster lists it again."""
        node = self.node(node_id)
        if node.running:
            self._stop_node(node, signal.SIGTERM)
        starts_before = node.starts_logged()
        self._launch(node)
        deadline = time.monotonic() + timeout
        while node.starts_logged() <= starts_before:
            if not node.running:
                raise RuntimeError(f"Kafka node {node.node_id} exited on restart:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka node {node.node_id} did not start again in {timeout} s:\n{node.log_tail()}")
            time.sleep(0.1)
        self.wait_ready(max(1.0, deadline - time.monotonic()))

    def _stop_node(self, node: KafkaNode, sig: int, timeout: float = 30.0) -> None:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(sig)
            try:
                node.process.wait(timeout)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if node._log is not None:
            node._log.close()
            node._log = None

    def stop(self) -> None:
        # Every node at once: a node shutting down cleanly waits for the quorum,
        # which the others would leave if they went first.
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self._stop_node(node, signal.SIGTERM)

    def remove(self) -> None:
        """Stop, and delete the data directory when this object made it."""
        self.stop()
        if self._owns_dir:
            import shutil

            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.remove()

    def describe(self) -> str:
        return f"Apache Kafka {self.version} ({len(self.nodes)} node{'s' if len(self.nodes) > 1 else ''}) on {self.bootstrap_servers}"
