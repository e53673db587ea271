"""The local Kafka's jar cache (assessment_refresh/apache_kafka/jars.py): a
cache resolved from another pom is resolved again, by adding to it; one with
this pom's marker is used as it is. Maven is a stand-in script here that
records its call and writes one jar."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from assessment_refresh.apache_kafka import jars

FAKE_MVN = """#!/bin/sh
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
done
mkdir -p "$out" && touch "$out/kafka-tools-new.jar"
echo called >> "$(dirname "$0")/calls"
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN)
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ASSESSMENT_REFRESH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def calls(cache: Path) -> int:
    recorded = cache.parent / "bin" / "calls"
    return len(recorded.read_text().splitlines()) if recorded.exists() else 0


def test_a_cache_of_an_older_pom_is_added_to_not_emptied(cache: Path) -> None:
    libs = cache / f"kafka-{jars.kafka_version()}" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-old.jar").touch()
    (libs.parent / "resolved").write_text("kafka resolved\n")  # the marker before it named the pom
    assert jars.broker_classpath() == f"{libs}/*"
    assert calls(cache) == 1
    assert (libs / "kafka_2.13-old.jar").exists(), "a broker running from the cache may still need its jars"
    assert (libs / "kafka-tools-new.jar").exists()
    assert jars.complete_marker().exists()


def test_a_cache_with_this_poms_marker_is_used_as_it_is(cache: Path) -> None:
    marker = jars.complete_marker()
    marker.parent.mkdir(parents=True)
    marker.write_text("resolved\n")
    jars.broker_classpath()
    assert calls(cache) == 0


def test_an_interrupted_first_copy_is_started_over(cache: Path) -> None:
    libs = cache / f"kafka-{jars.kafka_version()}" / "libs"
    libs.mkdir(parents=True)
    (libs / "half-copied.jar").touch()  # no marker of any kind: an interrupted first resolve
    jars.broker_classpath()
    assert not (libs / "half-copied.jar").exists()
    assert (libs / "kafka-tools-new.jar").exists() and jars.complete_marker().exists()


def test_the_marker_names_the_poms_content(cache: Path) -> None:
    assert jars.complete_marker().name.startswith("resolved-")
    assert jars.complete_marker(cache / "elsewhere").parent.parent == cache / "elsewhere"
