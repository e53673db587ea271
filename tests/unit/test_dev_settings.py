"""The running dev's settings file: what it holds, and when another command takes it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assessment_refresh import dev_settings
from assessment_refresh.dev_settings import DevSettings, exports, parse, render, use_running_dev

SETTINGS = {"DATABASE_URL": "postgresql://postgres:@/postgres?host=/tmp/my dir/pgdata",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "BROKER_PROFILE": "tansu",
            "REQUEST_TOPIC": "assessment.refresh.requests"}


def written(tmp_path: Path, pid: int) -> DevSettings:
    path = tmp_path / ".dev" / "settings.env"
    path.parent.mkdir(exist_ok=True)
    dev = DevSettings(path, pid, SETTINGS, "http://127.0.0.1:8000", "http://127.0.0.1:9400")
    dev_settings.write(dev)
    return dev


def test_the_file_reads_back_as_written_and_is_a_shell_file(tmp_path: Path) -> None:
    dev = written(tmp_path, 4242)
    assert parse(dev.path, dev.path.read_text()) == dev
    assert dev.path.stat().st_mode & 0o777 == 0o600
    # `set -a; . .dev/settings.env` gives a shell the same values (quoting included).
    shown = subprocess.run(["bash", "-c", 'set -a; . .dev/settings.env; printf "%s|%s" "$DATABASE_URL" "$DEV_PID"'],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert shown == f"{SETTINGS['DATABASE_URL']}|4242"
    assert exports(dev) == ("export DATABASE_URL='postgresql://postgres:@/postgres?host=/tmp/my dir/pgdata' "
                            "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 BROKER_PROFILE=tansu")


def test_a_line_that_is_not_name_equals_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="settings.env:2: not NAME=value"):
        parse(tmp_path / "settings.env", "DEV_PID=1\nrm -rf /\n")
    with pytest.raises(ValueError, match="no DEV_PID"):
        parse(tmp_path / "settings.env", render(DevSettings(tmp_path, 1, {})).replace("DEV_PID=1\n", ""))


@pytest.fixture
def a_dev() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose command line is a dev's."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "assessment-refresh", "dev"])
    # Until the child has exec'd, /proc shows the forking parent's command line
    # (seen in CI: "the dev that wrote it is not running").
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + 10
    while cmdline.exists() and b"assessment-refresh" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield process
    process.kill()
    process.wait()


def test_a_running_dev_gives_its_settings_when_none_is_set(tmp_path: Path, a_dev: subprocess.Popen[bytes]) -> None:
    written(tmp_path, a_dev.pid)
    environ: dict[str, str] = {"PATH": "/bin"}
    assert use_running_dev(environ, tmp_path) == "using the running dev's settings from .dev/settings.env"
    assert environ == {"PATH": "/bin", **SETTINGS}


@pytest.mark.parametrize("own", ["KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL_FILE"])
def test_a_setting_of_ones_own_keeps_the_whole_file_out(
    own: str, tmp_path: Path, a_dev: subprocess.Popen[bytes]
) -> None:
    written(tmp_path, a_dev.pid)
    environ = {own: "mine"}
    assert use_running_dev(environ, tmp_path) is None
    assert environ == {own: "mine"}


def test_a_dead_or_foreign_pid_is_not_a_running_dev(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    written(tmp_path, int(done.stdout))
    environ: dict[str, str] = {}
    assert use_running_dev(environ, tmp_path) == (
        f"note: ignoring .dev/settings.env: the dev that wrote it (pid {int(done.stdout)}) is not running")
    assert environ == {}
    sleeper = subprocess.Popen(["sleep", "30"])  # alive, but not a dev (a reused pid)
    try:
        assert not dev_settings.is_running(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_dev_data_dir_names_a_dev_elsewhere(tmp_path: Path, a_dev: subprocess.Popen[bytes]) -> None:
    dev = written(tmp_path, a_dev.pid)
    environ = {"DEV_DATA_DIR": str(dev.path.parent)}
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    assert use_running_dev(environ, elsewhere) == f"using the running dev's settings from {dev.path}"


def test_only_the_writer_removes_the_file(tmp_path: Path) -> None:
    dev = written(tmp_path, 4242)
    dev_settings.remove(dev.path, 4343)
    assert dev.path.exists()
    dev_settings.remove(dev.path, 4242)
    assert not dev.path.exists()
