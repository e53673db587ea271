"""The JSON import (docs/design.md#data-loading) against a real PostgreSQL.

Loading is an upsert by id; new assessments take snapshots of the bank at load
time; API keys are stored hashed; a bad file names the file, the JSON path and a
reason, and imports nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from assessment_refresh.loader import LoadError, LoadSummary, load_world, parse_world, read_world
from shared.apikeys import company_for_key
from tests.worlds import question

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = "/work/venv/bin/python" if Path("/work/venv/bin/python").exists() else sys.executable
PY = ("mcq", "python", "medium")


# -- helpers -------------------------------------------------------------------


def write(tmp_path: Path, document: Any, name: str = "world.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def load_file(engine: Engine, path: Path) -> LoadSummary:
    """What `assessment-refresh load FILE` does."""
    return load_world(engine, read_world(path), str(path))


def user_tables(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' "
                    "AND table_name <> 'alembic_version' ORDER BY table_name"
                )
            ).scalars()
        )


def dump(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table, as sorted JSON text: compares counts and contents."""
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for table in user_tables(engine):
            rows = conn.execute(text(f'SELECT to_jsonb(t)::text FROM "{table}" t')).scalars()
            out[table] = sorted(rows)
    return out


def counts(engine: Engine) -> dict[str, int]:
    return {table: len(rows) for table, rows in dump(engine).items()}


def question_row(engine: Engine, qid: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT qid, company_id, type, skill, difficulty, content, version, deleted, deleted_at, updated_at "
                "FROM questions WHERE qid = :q"
            ),
            {"q": qid},
        ).mappings().one()
    return dict(row)


def slot_rows(engine: Engine, oid: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT section_idx, question_idx, qid, snapshot, snapshot_version "
                "FROM assessment_slots WHERE oid = :o ORDER BY section_idx, question_idx"
            ),
            {"o": oid},
        ).mappings().all()
    return [dict(r) for r in rows]


def section_names(engine: Engine, oid: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT name FROM assessment_sections WHERE oid = :o ORDER BY section_idx"), {"o": oid}
            ).scalars()
        )


def section6_world() -> dict[str, Any]:
    """The docs/design.md#data-loading format, with two companies and a private question."""
    return {
        "companies": [
            {"id": 7, "name": "Acme", "api_keys": ["acme-secret-key"]},
            {"id": 8, "name": "Globex", "api_keys": ["globex-secret-key", "globex-second-key"]},
        ],
        "questions": [
            question(101, PY),
            question(102, PY),
            question(103, ("coding", "sql", "hard")),
            question(180, PY, company_id=8),
        ],
        "assessments": [
            {"oid": 11, "company_id": 7, "name": "Backend L2",
             "sections": [{"name": "Python", "qids": [101, 102]}, {"name": "SQL", "qids": [103]}]},
            {"oid": 21, "company_id": 8, "name": "Globex Python",
             "sections": [{"name": "Python", "qids": [180, 101]}]},
        ],
    }


# -- good files ----------------------------------------------------------------


def test_loads_the_section6_format(engine: Engine, tmp_path: Path) -> None:
    summary = load_file(engine, write(tmp_path, section6_world()))

    assert summary == LoadSummary(companies=2, api_keys=3, questions_changed=4, assessments_created=2, assessments_kept=0)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, name FROM companies ORDER BY id")).all() == [(7, "Acme"), (8, "Globex")]
        assert conn.execute(
            text("SELECT oid, company_id, name FROM assessments ORDER BY oid")
        ).all() == [(11, 7, "Backend L2"), (21, 8, "Globex Python")]
    q180 = question_row(engine, 180)
    assert (q180["company_id"], q180["type"], q180["skill"], q180["difficulty"]) == (8, "mcq", "python", "medium")
    assert q180["content"] == question(180)["content"]
    assert (q180["version"], q180["deleted"], q180["deleted_at"]) == (1, False, None)
    assert question_row(engine, 101)["company_id"] is None
    assert section_names(engine, 11) == ["Python", "SQL"]
    assert [(s["section_idx"], s["question_idx"], s["qid"]) for s in slot_rows(engine, 11)] == [
        (0, 0, 101), (0, 1, 102), (1, 0, 103)
    ]
    assert [s["qid"] for s in slot_rows(engine, 21)] == [180, 101]


def test_loading_the_same_file_twice_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, section6_world())
    load_file(engine, path)
    before = dump(engine)

    summary = load_file(engine, path)

    assert summary.questions_changed == 0
    assert summary.assessments_created == 0 and summary.assessments_kept == 2
    assert dump(engine) == before  # versions, updated_at, snapshots, keys: all as they were


def test_same_content_with_other_key_order_is_not_a_change(engine: Engine, tmp_path: Path) -> None:
    world = section6_world()
    load_file(engine, write(tmp_path, world))
    before = question_row(engine, 101)

    reordered = copy.deepcopy(world)
    content = reordered["questions"][0]["content"]
    reordered["questions"][0]["content"] = dict(reversed(list(content.items())))
    summary = load_file(engine, write(tmp_path, reordered, "reordered.json"))

    assert summary.questions_changed == 0
    assert question_row(engine, 101) == before


def test_changed_content_bumps_version_and_updates_the_other_fields(engine: Engine, tmp_path: Path) -> None:
    load_file(engine, write(tmp_path, section6_world()))
    before = question_row(engine, 101)

    changed = question(101, ("coding", "go", "hard"), company_id=7, text_="question 101, reworded")
    summary = load_file(engine, write(tmp_path, {"questions": [changed]}, "change.json"))

    assert summary.questions_changed == 1
    after = question_row(engine, 101)
    assert after["version"] == before["version"] + 1 == 2
    assert after["content"]["text"] == "question 101, reworded"
    assert (after["company_id"], after["type"], after["skill"], after["difficulty"]) == (7, "coding", "go", "hard")
    assert after["updated_at"] > before["updated_at"]
    # The untouched questions keep their version.
    assert question_row(engine, 102)["version"] == 1

    # A second content change is another version.
    changed["content"]["text"] = "question 101, third wording"
    load_file(engine, write(tmp_path, {"questions": [changed]}, "change2.json"))
    assert question_row(engine, 101)["version"] == 3


def test_deleted_true_deletes_and_stamps_deleted_at_once(engine: Engine, tmp_path: Path) -> None:
    load_file(engine, write(tmp_path, section6_world()))

    path = write(tmp_path, {"questions": [question(102, PY, deleted=True)]}, "delete.json")
    summary = load_file(engine, path)

    assert summary.questions_changed == 1
    row = question_row(engine, 102)
    assert row["deleted"] is True
    assert row["deleted_at"] is not None
    assert row["version"] == 1  # the content did not change
    # Deleting again keeps the first deletion time.
    assert load_file(engine, path).questions_changed == 0
    assert question_row(engine, 102)["deleted_at"] == row["deleted_at"]
    # A question that is deleted from the start exists, deleted.
    load_file(engine, write(tmp_path, {"questions": [question(190, PY, deleted=True)]}, "new-deleted.json"))
    new = question_row(engine, 190)
    assert new["deleted"] is True and new["deleted_at"] is not None


def test_new_assessment_snapshots_are_the_bank_at_load_time(engine: Engine, tmp_path: Path) -> None:
    # The bank already has 101 at version 1; this file rewords it (version 2) and
    # creates an assessment using it: the snapshot is the bank after the file.
    load_file(engine, write(tmp_path, section6_world()))
    world = {
        "questions": [question(101, PY, text_="reworded before assessment 12 exists")],
        "assessments": [{"oid": 12, "company_id": 7, "name": "New one",
                         "sections": [{"name": "A", "qids": [102, 101]}, {"name": "B", "qids": [103]}]}],
    }
    summary = load_file(engine, write(tmp_path, world, "new-assessment.json"))

    assert summary.assessments_created == 1
    with engine.connect() as conn:
        bank = {
            r.qid: (r.content, r.version)
            for r in conn.execute(text("SELECT qid, content, version FROM questions"))
        }
    slots = slot_rows(engine, 12)
    assert [s["qid"] for s in slots] == [102, 101, 103]
    for s in slots:
        assert (s["snapshot"], s["snapshot_version"]) == bank[s["qid"]]
    assert slots[1]["snapshot"]["text"] == "reworded before assessment 12 exists"
    assert slots[1]["snapshot_version"] == 2


def test_existing_assessment_keeps_its_snapshots_and_sections(engine: Engine, tmp_path: Path) -> None:
    load_file(engine, write(tmp_path, section6_world()))
    original_slots = slot_rows(engine, 11)
    original_sections = section_names(engine, 11)

    # The bank changes, and the file now describes assessment 11 differently.
    world = section6_world()
    world["questions"][0] = question(101, PY, text_="question 101, reworded")
    world["assessments"][0]["sections"] = [{"name": "Other", "qids": [103, 102]}]
    summary = load_file(engine, write(tmp_path, world, "again.json"))

    assert summary.assessments_created == 0 and summary.assessments_kept == 2
    assert question_row(engine, 101)["version"] == 2
    assert slot_rows(engine, 11) == original_slots
    assert slot_rows(engine, 11)[0]["snapshot"]["text"] == "question 101"  # still the old data
    assert section_names(engine, 11) == original_sections


def test_api_keys_are_stored_only_as_sha256_hashes(engine: Engine, tmp_path: Path) -> None:
    load_file(engine, write(tmp_path, section6_world()))
    plain = ["acme-secret-key", "globex-secret-key", "globex-second-key"]

    with engine.connect() as conn:
        rows = conn.execute(text("SELECT key_hash, company_id, to_jsonb(k)::text AS everything FROM api_keys k")).all()
        assert sorted((r.key_hash, r.company_id) for r in rows) == sorted(
            [(hashlib.sha256(k.encode()).hexdigest(), 7 if k.startswith("acme") else 8) for k in plain]
        )
        for r in rows:
            for key in plain:
                assert key not in r.everything
        assert company_for_key(conn, "acme-secret-key") == 7
        assert company_for_key(conn, "globex-second-key") == 8
        assert company_for_key(conn, "no-such-key") is None
        assert company_for_key(conn, hashlib.sha256(b"acme-secret-key").hexdigest()) is None
    # Nowhere else in the database either.
    everything = json.dumps(dump(engine))
    for key in plain:
        assert key not in everything


# -- bad files: an error with file, path and reason, and nothing imported --------


def _base() -> dict[str, Any]:
    """Already in the database before each bad file is tried."""
    return {
        "companies": [{"id": 7, "name": "Acme", "api_keys": ["acme-secret-key"]},
                      {"id": 8, "name": "Globex", "api_keys": []}],
        "questions": [question(101, PY), question(102, PY), question(180, PY, company_id=8)],
        "assessments": [{"oid": 11, "company_id": 7, "name": "Backend L2",
                         "sections": [{"name": "Python", "qids": [101]}]}],
    }


def _good() -> dict[str, Any]:
    """A valid file that changes things (new company, key, questions, assessments)."""
    return {
        "companies": [{"id": 9, "name": "Initech", "api_keys": ["initech-key"]}],
        "questions": [question(101, PY, text_="101 reworded"), question(103, PY), question(104, PY),
                      question(190, PY, company_id=9), question(102, PY, deleted=True)],
        "assessments": [
            {"oid": 31, "company_id": 9, "name": "Initech A",
             "sections": [{"name": "S0", "qids": [101]}, {"name": "S1", "qids": [103, 104, 190]}]},
            {"oid": 32, "company_id": 7, "name": "Acme B", "sections": [{"name": "S0", "qids": [103]}]},
        ],
    }


def _mutate(fn):
    def build() -> dict[str, Any]:
        doc = _good()
        fn(doc)
        return doc
    return build


def _set(doc: dict[str, Any], path: list[Any], value: Any) -> None:
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _delete(doc: dict[str, Any], path: list[Any]) -> None:
    target = doc
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]


BAD_FILES = {
    # not an object
    "top-level list": (lambda: [_good()], "$", "must be an object"),
    "top-level string": (lambda: "just text", "$", "must be an object"),
    "unknown top-level key": (_mutate(lambda d: d.update(questionz=[])), "$", "unknown keys ['questionz']"),
    # wrong types
    "companies not a list": (_mutate(lambda d: _set(d, ["companies"], {"id": 9})), "$.companies", "must be a list"),
    "company id is a string": (_mutate(lambda d: _set(d, ["companies", 0, "id"], "9")), "$.companies[0].id", "must be an integer"),
    "company id is a boolean": (_mutate(lambda d: _set(d, ["companies", 0, "id"], True)), "$.companies[0].id", "must be an integer"),
    "api key not a string": (_mutate(lambda d: _set(d, ["companies", 0, "api_keys"], ["ok-key", 5])), "$.companies[0].api_keys[1]", "must be a non-empty string"),
    "qid is a float": (_mutate(lambda d: _set(d, ["questions", 2, "qid"], 104.0)), "$.questions[2].qid", "must be an integer"),
    "qid out of bigint range": (_mutate(lambda d: _set(d, ["questions", 2, "qid"], 2**63)), "$.questions[2].qid", "out of range"),
    "deleted is a string": (_mutate(lambda d: _set(d, ["questions", 1, "deleted"], "yes")), "$.questions[1].deleted", "must be true or false"),
    "content is a list": (_mutate(lambda d: _set(d, ["questions", 3, "content"], ["x"])), "$.questions[3].content", "must be an object"),
    "section qid is a string": (_mutate(lambda d: _set(d, ["assessments", 0, "sections", 1, "qids", 2], "190")), "$.assessments[0].sections[1].qids[2]", "must be an integer"),
    "section qid is null": (_mutate(lambda d: _set(d, ["assessments", 1, "sections", 0, "qids", 0], None)), "$.assessments[1].sections[0].qids[0]", "must be an integer"),
    "sections not a list": (_mutate(lambda d: _set(d, ["assessments", 1, "sections"], {"name": "S0"})), "$.assessments[1].sections", "must be a list"),
    "empty name": (_mutate(lambda d: _set(d, ["assessments", 1, "name"], "  ")), "$.assessments[1].name", "must be a non-empty string"),
    # missing fields
    "question without type": (_mutate(lambda d: _delete(d, ["questions", 2, "type"])), "$.questions[2].type", "must be a non-empty string"),
    "question without content": (_mutate(lambda d: _delete(d, ["questions", 0, "content"])), "$.questions[0].content", "must be an object"),
    "company without name": (_mutate(lambda d: _delete(d, ["companies", 0, "name"])), "$.companies[0].name", "must be a non-empty string"),
    "assessment without company": (_mutate(lambda d: _delete(d, ["assessments", 1, "company_id"])), "$.assessments[1].company_id", "must be an integer"),
    "assessment without sections": (_mutate(lambda d: _delete(d, ["assessments", 0, "sections"])), "$.assessments[0].sections", "must be a list"),
    "section without qids": (_mutate(lambda d: _delete(d, ["assessments", 0, "sections", 1, "qids"])), "$.assessments[0].sections[1].qids", "must be a list"),
    # duplicate ids in the file
    "duplicate qid": (_mutate(lambda d: d["questions"].append(question(103, PY))), "$.questions[5].qid", "duplicate qid 103"),
    "duplicate company id": (_mutate(lambda d: d["companies"].append({"id": 9, "name": "Again"})), "$.companies[1].id", "duplicate id 9"),
    "duplicate oid": (_mutate(lambda d: _set(d, ["assessments", 1, "oid"], 31)), "$.assessments[1].oid", "duplicate oid 31"),
    # duplicate qid inside one assessment (across sections)
    "qid twice in an assessment": (_mutate(lambda d: d["assessments"][0]["sections"][1]["qids"].append(101)), "$.assessments[0].sections", "[101] appear more than once"),
    # references
    "unknown question": (_mutate(lambda d: _set(d, ["assessments", 0, "sections", 1, "qids", 2], 999)), "$.assessments[0].sections[1].qids[2]", "unknown question 999"),
    "unknown company of an assessment": (_mutate(lambda d: _set(d, ["assessments", 1, "company_id"], 99)), "$.assessments[1].company_id", "unknown company 99"),
    "unknown company of a question": (_mutate(lambda d: _set(d, ["questions", 3, "company_id"], 99)), "$.questions[3].company_id", "unknown company 99"),
    "question private to another company (in the database)": (
        _mutate(lambda d: _set(d, ["assessments", 1, "sections", 0, "qids"], [103, 180])),
        "$.assessments[1].sections[0].qids[1]", "question 180 is private to another company"),
    "question private to another company (in the file)": (
        _mutate(lambda d: _set(d, ["assessments", 1, "sections", 0, "qids"], [190])),
        "$.assessments[1].sections[0].qids[0]", "question 190 is private to another company"),
    # a valid first half followed by a bad item
    "valid questions then a bad question": (
        _mutate(lambda d: d["questions"].append({**question(105, PY), "difficulty": 3})), "$.questions[5].difficulty", "must be a non-empty string"),
    "valid first assessment then a bad reference": (
        _mutate(lambda d: _set(d, ["assessments", 1, "sections"], [{"name": "S0", "qids": [103]}, {"name": "S1", "qids": [104, 998]}])),
        "$.assessments[1].sections[1].qids[1]", "unknown question 998"),
}


def test_the_good_file_of_the_bad_file_cases_loads(engine: Engine, tmp_path: Path) -> None:
    """The bad files below are this file with one defect: without it, it loads."""
    load_file(engine, write(tmp_path, _base(), "base.json"))
    before = counts(engine)
    summary = load_file(engine, write(tmp_path, _good()))
    assert summary.assessments_created == 2
    after = counts(engine)
    assert after["companies"] == before["companies"] + 1
    assert after["questions"] == before["questions"] + 3
    assert after["assessments"] == before["assessments"] + 2
    assert question_row(engine, 102)["deleted"] is True


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_names_file_path_and_reason_and_imports_nothing(engine: Engine, tmp_path: Path, case: str) -> None:
    build, json_path, reason = BAD_FILES[case]
    load_file(engine, write(tmp_path, _base(), "base.json"))
    before = dump(engine)
    path = write(tmp_path, json.dumps(build()), "bad-world.json")

    with pytest.raises(LoadError) as caught:
        load_file(engine, path)

    message = str(caught.value)
    assert message.startswith(f"{path}: {json_path}: "), message
    assert reason in message
    assert dump(engine) == before


@pytest.mark.parametrize(
    "raw",
    ['{"companies": [', "", "\ufeff{}", "{'single': 'quotes'}", '{"a": NaN'],
    ids=["truncated", "empty", "bom", "python-literal", "truncated-nan"],
)
def test_file_that_is_not_json_names_the_file_and_imports_nothing(engine: Engine, tmp_path: Path, raw: str) -> None:
    load_file(engine, write(tmp_path, _base(), "base.json"))
    before = dump(engine)
    path = write(tmp_path, raw, "broken.json")

    with pytest.raises(LoadError) as caught:
        load_file(engine, path)

    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "not valid UTF-8 JSON" in message
    assert dump(engine) == before


def test_file_that_is_not_utf8_imports_nothing(engine: Engine, tmp_path: Path) -> None:
    load_file(engine, write(tmp_path, _base(), "base.json"))
    before = dump(engine)
    path = tmp_path / "latin1.json"
    path.write_bytes('{"companies": [{"id": 9, "name": "Caf\u00e9", "api_keys": []}]}'.encode("latin-1"))

    with pytest.raises(LoadError) as caught:
        load_file(engine, path)

    assert str(caught.value).startswith(f"{path}: ")
    assert dump(engine) == before


def test_missing_file_is_a_load_error_naming_it(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(LoadError) as caught:
        load_file(engine, path)
    assert str(caught.value).startswith(f"{path}: cannot read")
    assert all(n == 0 for n in counts(engine).values())


# -- the real command line -------------------------------------------------------


def _cli(database_url: str, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [VENV_PYTHON, "-m", "assessment_refresh.cli", "load", str(path), *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def test_cli_load_good_and_bad_file(engine: Engine, database_url: str, tmp_path: Path) -> None:
    good = write(tmp_path, section6_world(), "good.json")
    done = _cli(database_url, good)

    assert done.returncode == 0, done.stderr
    summary_lines = [line for line in done.stdout.splitlines() if line.startswith(f"loaded {good}:")]
    assert summary_lines == [
        f"loaded {good}: 2 companies, 3 API keys, 4 questions added or changed, "
        "2 assessments created, 0 kept as they were"
    ]
    loaded = dump(engine)
    assert len(loaded["assessments"]) == 2 and len(loaded["api_keys"]) == 3

    bad_doc = section6_world()
    bad_doc["assessments"][0]["sections"][1]["qids"] = [103, 104, 999]
    bad_doc["companies"].append({"id": 9, "name": "Initech", "api_keys": []})
    bad = write(tmp_path, bad_doc, "bad.json")
    done = _cli(database_url, bad)

    assert done.returncode == 2
    assert f"error: {bad}: $.assessments[0].sections[1].qids[1]: unknown question 104" in done.stderr
    assert "nothing was imported" in done.stderr
    assert dump(engine) == loaded


def test_cli_load_shows_progress_unless_quiet(engine: Engine, database_url: str, tmp_path: Path) -> None:
    good = write(tmp_path, section6_world(), "good.json")
    shown = _cli(database_url, good)
    assert shown.returncode == 0, shown.stderr
    # tqdm's last frame: all 6 records (4 questions + 2 assessments) written.
    assert f"loading {good}: 100%" in shown.stderr and "6/6" in shown.stderr, shown.stderr
    quiet = _cli(database_url, good, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert quiet.stdout.startswith(f"loaded {good}: ")


def test_a_world_larger_than_one_chunk_loads_whole(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import assessment_refresh.loader as loader_module

    monkeypatch.setattr(loader_module, "QUESTIONS_PER_CHUNK", 2)
    monkeypatch.setattr(loader_module, "ASSESSMENTS_PER_CHUNK", 1)
    seen: list[int] = []
    summary = load_world(engine, parse_world(section6_world()), "chunks", seen.append)
    assert seen == [2, 2, 1, 1]
    assert (summary.questions_changed, summary.assessments_created) == (4, 2)
