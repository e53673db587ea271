from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.conftest import unique_settings
from tests.processes import ServiceProcess, start_api, start_consumer


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def service_settings(database_url: str, bootstrap_servers: str) -> Settings:
    return unique_settings(database_url, bootstrap_servers)


@pytest.fixture(scope="module")
def service(service_settings: Settings, log_dir: Path) -> Iterator[ServiceProcess]:
    """One consumer process and one API process (uvicorn), for the module."""
    consumer = start_consumer(service_settings, log_dir)
    api = start_api(service_settings, log_dir)
    try:
        yield api
    finally:
        api.stop()
        consumer.stop()


# dev listens on fixed ports (Kafka's, the consumer's metrics, the README's
# API port): two xdist workers must never run two devs at once.
DEV_PORTS_LOCK = Path(tempfile.gettempdir()) / "assessment-refresh-dev-ports.lock"


@pytest.fixture
def dev_ports_lock() -> Iterator[None]:
    """Held while a test that starts dev runs (a file lock: the workers are processes)."""
    with open(DEV_PORTS_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
