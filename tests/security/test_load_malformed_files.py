"""`assessment-refresh load FILE` with odd files (issue 4, "bad input").

tests/integration/test_loader.py covers a wrong value at each JSON path; this
module feeds the real command line the files nobody means to write: binary,
empty, deeply nested, compressed, UTF-16, a directory, a missing path, values
the database cannot store. Each must end with exit status 2, one clear
``error:`` line naming the file, ``nothing was imported``, no traceback, and no
row added or changed in any table.

The command is run once per file, two at a time, in a module fixture (a Python
start-up costs most of a second); the tests then read the results.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import TABLES
from tests.security.conftest import all_user_tables, row_counts, table_dump
from tests.worlds import load, question

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = "/work/venv/bin/python" if Path("/work/venv/bin/python").exists() else sys.executable
PY = ("mcq", "python", "medium")


def base_world() -> dict[str, Any]:
    return {
        "companies": [{"id": 7, "name": "Acme", "api_keys": ["acme-load-key"]}],
        "questions": [question(101, PY), question(102, PY)],
        "assessments": [{"oid": 11, "company_id": 7, "name": "A", "sections": [{"name": "S", "qids": [101]}]}],
    }


def world_with(**company: Any) -> str:
    """A valid file but for one company field (id 900: a new company)."""
    return json.dumps({"companies": [{"id": 900, "name": "New Co", "api_keys": ["new-co-key"], **company}]})


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BYTES: dict[str, bytes] = {
    "binary": bytes(random.Random(4).randrange(256) for _ in range(4096)),
    "gzip": gzip.compress(json.dumps(base_world()).encode()),
    "utf16-json": json.dumps({"companies": [{"id": 900, "name": "New Co", "api_keys": []}]}).encode("utf-16"),
    "nul-bytes": b"\x00" * 64,
}
TEXTS: dict[str, str] = {
    "not-json": "this is not JSON\n",
    "empty": "",
    "whitespace-only": " \n\t\n",
    "yaml": "companies:\n  - id: 900\n    name: New Co\n",
    "json-number": "42",
    "json-null": "null",
    "json-string": '"companies"',
    "trailing-garbage": json.dumps({"companies": []}) + " and more",
    "api-keys-a-string": world_with(api_keys="abc"),
    "company-name-an-object": world_with(name={"en": "New Co"}),
    "company-id-nan": world_with(id=float("nan")),
    "company-id-infinity": world_with(id=float("inf")),
    "questions-a-string": json.dumps({"questions": "all of them"}),
    "assessments-null": json.dumps({"assessments": None}),
    "content-a-string": json.dumps({"questions": [{**question(900, PY), "content": "text"}]}),
    "qids-an-object": json.dumps({"assessments": [{"oid": 900, "company_id": 7, "name": "X",
                                                   "sections": [{"name": "S", "qids": {"0": 101}}]}]}),
    # Nesting that the JSON reader itself refuses (Python's recursion limit).
    "deeply-nested-array": nested(100_000),
    "deeply-nested-in-a-field": '{"companies": [{"id": 900, "name": ' + nested(100_000) + ', "api_keys": []}]}',
    # Values that parse but the database cannot hold.
    "5000-digit-integer": world_with().replace('"id": 900', '"id": ' + "9" * 5000),
    "nul-in-a-name": world_with(name="New\u0000Co"),
    "lone-surrogate-in-a-name": world_with(name="New \ud800 Co"),
    "nul-in-question-content": json.dumps({"questions": [{**question(900, PY), "content": {"text": "a\u0000b"}}]}),
}
SPECIAL = ["directory", "missing-file"]

CASES = [*BYTES, *TEXTS, *SPECIAL]


@dataclass(frozen=True)
class Outcome:
    path: Path
    returncode: int
    stdout: str
    stderr: str


def run_load(database_url: str, path: Path) -> Outcome:
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run([VENV_PYTHON, "-m", "assessment_refresh.cli", "load", str(path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return Outcome(path, done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def outcomes(session_engine: Engine, database_url: str, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[dict[str, Outcome], dict[str, list[str]], dict[str, list[str]], dict[str, int], dict[str, int]]:
    """Every file loaded by the real command, against a database holding a base world."""
    with session_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    load(session_engine, base_world())
    directory = tmp_path_factory.mktemp("odd-files")
    paths: dict[str, Path] = {}
    for name, raw in BYTES.items():
        paths[name] = directory / f"{name}.json"
        paths[name].write_bytes(raw)
    for name, content in TEXTS.items():
        paths[name] = directory / f"{name}.json"
        paths[name].write_text(content, encoding="utf-8", errors="surrogatepass")
    paths["directory"] = directory / "a-directory.json"
    paths["directory"].mkdir()
    paths["missing-file"] = directory / "no-such-file.json"

    before, counts_before = table_dump(session_engine, tuple(all_user_tables(session_engine))), row_counts(session_engine)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(paths, pool.map(lambda p: run_load(database_url, p), paths.values()), strict=True))
    after, counts_after = table_dump(session_engine, tuple(all_user_tables(session_engine))), row_counts(session_engine)
    return results, before, after, counts_before, counts_after


@pytest.mark.parametrize("case", CASES)
def test_an_odd_file_is_refused_with_a_clear_error_and_imports_nothing(outcomes: Any, case: str) -> None:
    results, before, after, counts_before, counts_after = outcomes
    outcome = results[case]
    # Nothing imported: no table has a row more or a row changed (checked across all runs).
    assert counts_after == counts_before
    assert after == before
    assert "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert outcome.returncode == 2, (outcome.returncode, outcome.stderr[-2000:])
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, outcome.stderr
    assert errors[0].startswith(f"error: {outcome.path}: "), errors[0]
    assert len(errors[0]) < 600, "one readable line"
    assert "nothing was imported" in outcome.stderr
    assert not outcome.stdout.startswith("loaded ")


def test_the_directory_and_the_missing_file_say_why(outcomes: Any) -> None:
    results = outcomes[0]
    assert "cannot read: Is a directory" in results["directory"].stderr
    assert "cannot read: No such file or directory" in results["missing-file"].stderr
    for case in ("binary", "gzip", "utf16-json", "nul-bytes", "empty", "not-json"):
        assert "not valid UTF-8 JSON" in results[case].stderr, (case, results[case].stderr)
