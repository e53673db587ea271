"""The settings file of a running `assessment-refresh dev`: how every other command finds it.

While it runs, dev writes ``<data dir>/settings.env`` (``./.dev`` by default,
``DEV_DATA_DIR`` or ``--data-dir`` otherwise): where its PostgreSQL and broker
are, its broker profile and topics, its API's URL and its own pid. Any other
command started in that working directory (``replay``, ``load``, ``publish``,
``api``, ...) takes those settings when the dev is still running (its pid is
alive) and none of them is set in the environment, and says so on stderr. A
setting of one's own wins over the whole file: half a dev and half something
else (dev's database, production's broker) is never what anyone means.

The file is also a shell file (``set -a; . .dev/settings.env; set +a``), and
dev removes it when it stops. Parsing and rendering are pure; reading the pid's
liveness and the file system is kept to the functions at the bottom.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "settings.env"
DEFAULT_DATA_DIR = ".dev"
DATA_DIR_VARIABLE = "DEV_DATA_DIR"

# Lines that describe the dev rather than configure a command.
PID = "DEV_PID"
API_URL = "DEV_API_URL"
CONSUMER_METRICS_URL = "DEV_CONSUMER_METRICS_URL"
_ABOUT_THE_DEV = (PID, API_URL, CONSUMER_METRICS_URL)

# What one's own tools need to reach the dev (dev's banner prints these as `export`).
EXPORTED = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "BROKER_PROFILE")


@dataclass(frozen=True)
class DevSettings:
    path: Path
    pid: int
    # Settings variables, as the environment would hold them.
    settings: Mapping[str, str]
    api_url: str = ""
    consumer_metrics_url: str = ""


def render(dev: DevSettings) -> str:
    about = {PID: str(dev.pid), API_URL: dev.api_url, CONSUMER_METRICS_URL: dev.consumer_metrics_url}
    lines = [
        f"# Written by `assessment-refresh dev` (pid {dev.pid}) while it runs; removed when it stops.",
        "# assessment-refresh commands run where this file is ./.dev/settings.env (or DEV_DATA_DIR names",
        "# its directory) use these settings while that pid lives and none of them is set otherwise.",
        "# For a shell of your own: set -a; . .dev/settings.env; set +a",
    ]
    lines += [f"{name}={shlex.quote(value)}" for name, value in about.items() if value]
    lines += [f"{name}={shlex.quote(value)}" for name, value in dev.settings.items()]
    return "\n".join(lines) + "\n"


def parse(path: Path, text: str) -> DevSettings:
    """The file's settings; a line that is not NAME=value is an error (ValueError)."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line)
        name, sep, value = words[0].partition("=") if len(words) == 1 else ("", "", "")
        if not sep or not name.isidentifier():
            raise ValueError(f"{path}:{number}: not NAME=value")
        values[name] = value
    pid = values.get(PID, "")
    if not pid.isdigit():
        raise ValueError(f"{path}: no {PID}")
    return DevSettings(
        path=path, pid=int(pid),
        settings={name: value for name, value in values.items() if name not in _ABOUT_THE_DEV},
        api_url=values.get(API_URL, ""), consumer_metrics_url=values.get(CONSUMER_METRICS_URL, ""),
    )


def exports(dev: DevSettings) -> str:
    """One `export` line for tools of one's own (psql, kcat, a script)."""
    return "export " + " ".join(f"{name}={shlex.quote(dev.settings[name])}" for name in EXPORTED if name in dev.settings)


def set_elsewhere(dev: DevSettings, environ: Mapping[str, str]) -> list[str]:
    """The file's settings that the environment sets itself (directly or as NAME_FILE)."""
    return sorted(name for name in dev.settings if name in environ or f"{name}_FILE" in environ)


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as libpq (psql, other drivers) takes it."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


# -- the file system and the process table ------------------------------------


def settings_path(environ: Mapping[str, str], cwd: Path) -> Path:
    return cwd / environ.get(DATA_DIR_VARIABLE, DEFAULT_DATA_DIR) / FILE_NAME


def write(dev: DevSettings) -> None:
    """Atomically, readable by its owner only (a DATABASE_URL may hold a password)."""
    partial = dev.path.with_name(dev.path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(render(dev))
    partial.replace(dev.path)


def remove(path: Path, pid: int) -> None:
    """Remove the file if it is still the one this pid wrote."""
    try:
        if read(path).pid == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def read(path: Path) -> DevSettings:
    return parse(path, path.read_text())


def is_running(pid: int) -> bool:
    """The pid lives and, where /proc says, is an assessment-refresh dev (not a
    process that was given the pid of a dev killed without cleaning up)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc here: the pid is all there is to go on
    return any(b"assessment" in word for word in cmdline) and b"dev" in cmdline


def use_running_dev(environ: MutableMapping[str, str], cwd: Path) -> str | None:
    """Put a running dev's settings into ``environ`` when it sets none of them;
    the one line to tell the user, or None when there is nothing to tell."""
    path = settings_path(environ, cwd)
    if not path.exists():
        return None
    shown = os.path.relpath(path, cwd) if path.is_relative_to(cwd) else str(path)
    try:
        dev = read(path)
    except (OSError, ValueError) as exc:
        return f"note: ignoring {shown}: {exc}"
    if set_elsewhere(dev, environ):
        return None  # configured on purpose: the file stays out of it, silently
    if not is_running(dev.pid):
        return f"note: ignoring {shown}: the dev that wrote it (pid {dev.pid}) is not running"
    environ.update(dev.settings)
    return f"using the running dev's settings from {shown}"
