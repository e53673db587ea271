"""The broker jars of the local Apache Kafka: resolved once by Maven, then reused.

``pom.xml`` beside this file names one Kafka version (its ``kafka.version``)
and the log4j SLF4J binding the distribution adds. The first start runs
``mvn dependency:copy-dependencies`` on it into a cache directory outside any
working tree; every later start finds the jars there and needs neither Maven
nor the network. Several processes starting at once resolve it only once (a
file lock), and a half-finished copy is never taken for a whole one (a marker
file written last, named after the pom's content: a changed pom resolves anew).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

POM = Path(__file__).with_name("pom.xml")
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


class MissingTool(RuntimeError):
    """Java or Maven is not installed: the local Apache Kafka cannot run here."""


def kafka_version() -> str:
    """The pinned broker version (the pom's kafka.version)."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if found is None:
        raise RuntimeError(f"{POM} names no kafka.version")
    return found.group(1).strip()


def cache_root() -> Path:
    """ASSESSMENT_REFRESH_CACHE, else $XDG_CACHE_HOME/assessment-refresh, else ~/.cache/assessment-refresh."""
    explicit = os.environ.get("ASSESSMENT_REFRESH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "assessment-refresh"


def java_command() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise MissingTool("the local Apache Kafka needs Java 17 or newer: `java` is not on PATH and JAVA_HOME is not set")
    return found


def missing_tools() -> list[str]:
    """What the local Apache Kafka needs and this machine lacks (empty: it can run)."""
    missing = []
    try:
        java_command()
    except MissingTool:
        missing.append("java")
    if shutil.which("mvn") is None and not complete_marker().exists():
        missing.append("mvn")  # only the first start needs Maven
    return missing


def _lib_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / f"kafka-{kafka_version()}" / "libs"


def complete_marker(root: Path | None = None) -> Path:
    """Written last by a whole copy; named by the pom's digest, so that a cache
    resolved from an older pom (before kafka-tools joined it, say) is resolved
    again rather than taken as complete."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return _lib_dir(root).parent / f"resolved-{digest}"


def broker_classpath(log: object = None) -> str:
    """The classpath of the pinned broker, resolving its jars on first use."""
    libs, marker = _lib_dir(), complete_marker()
    if not marker.exists():
        libs.parent.mkdir(parents=True, exist_ok=True)
        with open(libs.parent / "resolve.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be resolving right now
            if not marker.exists():
                _resolve(libs, log)
                marker.write_text(f"kafka {kafka_version()} resolved {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    return f"{libs}/*"


def _resolve(libs: Path, log: object) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingTool("the first start of the local Apache Kafka resolves its jars with Maven: `mvn` is not on PATH")
    if libs.exists() and not any(libs.parent.glob("resolved*")):
        shutil.rmtree(libs)  # a copy interrupted before its first marker
    # A cache complete for an older pom is added to, never emptied: a broker
    # started from it may be running and still loading classes from its jars
    # (copy-dependencies leaves jars already there alone).
    if callable(log):
        log(f"resolving Apache Kafka {kafka_version()} jars with Maven into {libs} (first start only)")
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"Maven could not resolve the Apache Kafka {kafka_version()} jars:\n{tail}")
