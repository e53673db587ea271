"""One version, pyproject.toml's: in --version, /healthz and the OpenAPI document."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from assessment_refresh.cli import build_parser
from producer_api.app import create_app
from shared import version as version_module
from shared.settings import Settings
from shared.version import UNKNOWN, __version__, read_version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
DECLARED = tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_the_version_is_pyprojects() -> None:
    assert __version__ == DECLARED


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"assessment-refresh {DECLARED}\n"


def test_healthz_and_the_openapi_document_name_it() -> None:
    client = TestClient(create_app(Settings()))  # no lifespan: neither needs the broker
    assert client.get("/healthz").json() == {"status": "ok", "version": DECLARED}
    assert client.get("/openapi.json").json()["info"]["version"] == DECLARED


def not_installed(_name: str) -> str:
    raise PackageNotFoundError(_name)


def test_a_source_tree_never_installed_reads_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(version_module, "version", not_installed)
    assert read_version(PYPROJECT) == DECLARED


def test_without_metadata_or_this_projects_pyproject_the_version_is_unknown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(version_module, "version", not_installed)
    assert read_version(tmp_path / "pyproject.toml") == UNKNOWN
    other = tmp_path / "other.toml"
    other.write_text('[project]\nname = "something-else"\nversion = "9.9"\n')
    assert read_version(other) == UNKNOWN
    broken = tmp_path / "broken.toml"
    broken.write_text("[project\n")
    assert read_version(broken) == UNKNOWN
